#!/usr/bin/env bash
# Builds the real components the tests and the demo run on, once per machine, into a cache
# outside the clone (CI runs in a fresh clone on the same machine, so an in-repo cache would be
# rebuilt on every run). Each component lands in $PULLTRACE_CACHE/<name>-<version>/bin and is
# only rebuilt when that folder lacks its binaries.
#
# usage: hack/components.sh [all|matrix|containerd|crictl|registry|kube|kubectl|helm|krew|runc|cni|promtool|helm-docs|golangci-lint|containerd-VERSION]...
#        hack/components.sh path NAME   # prints the bin folder of NAME
set -euo pipefail

CACHE=${PULLTRACE_CACHE:-$HOME/.cache/pulltrace}
CONTAINERD_VERSION=v2.4.2
CRICTL_VERSION=v1.37.0
REGISTRY_VERSION=v3.1.2
KUBE_VERSION=v1.37.2
KUBE_STAGING_VERSION=v0.37.2
ETCD_VERSION=v3.7.0
HELM_VERSION=v3.22.0
KREW_VERSION=v0.4.3
RUNC_VERSION=v1.3.7
CNI_VERSION=v1.9.1
# Tools with their own module under hack/tools/<tool> (so their dependency sets do not fight
# each other or the product's go.mod); the version is the one that module requires.
TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/tools"
tool_version() { # tool_version TOOL MODULE
	awk -v m="$2" '$1 == m { print $2 } $1 == "require" && $2 == m { print $3 }' "$TOOLS/$1/go.mod"
}
PROMTOOL_VERSION=$(tool_version promtool github.com/prometheus/prometheus)
HELM_DOCS_VERSION=$(tool_version helm-docs github.com/norwoodj/helm-docs)
GOLANGCI_LINT_VERSION=$(tool_version golangci-lint github.com/golangci/golangci-lint/v2)
# The containerd versions of the agent's matrix besides CONTAINERD_VERSION: clusters run 2.0.x
# (no transfer-service pull in the CRI) and 2.2.x as well as 2.4.x.
MATRIX_CONTAINERD_VERSIONS="v2.0.14 v2.2.9"

# One set of build flags everywhere, so the Go build cache is shared between components.
export GOFLAGS="-trimpath -buildvcs=false"
export CGO_ENABLED=${CGO_ENABLED:-1}

dir_of() {
	case "$1" in
	containerd) echo "$CACHE/containerd-$CONTAINERD_VERSION" ;;
	containerd-v*) echo "$CACHE/$1" ;;
	runc) echo "$CACHE/runc-$RUNC_VERSION" ;;
	cni) echo "$CACHE/cni-$CNI_VERSION" ;;
	crictl) echo "$CACHE/crictl-$CRICTL_VERSION" ;;
	registry) echo "$CACHE/registry-$REGISTRY_VERSION" ;;
	kube) echo "$CACHE/kube-$KUBE_VERSION-etcd-$ETCD_VERSION" ;;
	kubectl) echo "$CACHE/kubectl-$KUBE_STAGING_VERSION" ;;
	helm) echo "$CACHE/helm-$HELM_VERSION" ;;
	krew) echo "$CACHE/krew-$KREW_VERSION" ;;
	promtool) echo "$CACHE/promtool-$PROMTOOL_VERSION" ;;
	helm-docs) echo "$CACHE/helm-docs-$HELM_DOCS_VERSION" ;;
	golangci-lint) echo "$CACHE/golangci-lint-$GOLANGCI_LINT_VERSION" ;;
	*) echo "unknown component $1" >&2; return 1 ;;
	esac
}

have() { # have NAME BIN...
	local d; d=$(dir_of "$1"); shift
	for b in "$@"; do [ -x "$d/bin/$b" ] || return 1; done
}

step() { # step NAME: prints a timed banner around a build
	local name=$1; shift
	local start=$SECONDS
	echo ">> building $name (cold builds take minutes on 2 cores)" >&2
	"$@"
	echo ">> $name built in $((SECONDS - start))s" >&2
}

build_gobin() { # build_gobin NAME PKG@VER...
	local d; d=$(dir_of "$1"); shift
	mkdir -p "$d/bin.tmp"
	GOBIN="$d/bin.tmp" go install "$@"
	rm -rf "$d/bin" && mv "$d/bin.tmp" "$d/bin"
}

containerd() {
	have containerd containerd ctr containerd-shim-runc-v2 && return 0
	step containerd build_gobin containerd \
		github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION \
		github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION \
		github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION
}

# Some containerd releases (v2.0.x) have exclude directives in go.mod, which `go install
# pkg@version` refuses; building inside the downloaded module keeps them in force, exactly as
# containerd's own release build does.
build_in_module() { # build_in_module NAME MODULE@VERSION PKG...
	local d; d=$(dir_of "$1"); local mod=$2; shift 2
	local src
	src=$(go mod download -json "$mod" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
	[ -n "$src" ] || { echo "cannot download $mod" >&2; return 1; }
	mkdir -p "$d/bin.tmp"
	local p
	for p in "$@"; do
		(cd "$src" && GOFLAGS="$GOFLAGS -mod=readonly" go build -o "$d/bin.tmp/$(basename "$p")" "$p")
	done
	rm -rf "$d/bin" && mv "$d/bin.tmp" "$d/bin"
}

containerd_version() { # containerd_version VERSION: another cell of the agent's matrix
	local v=$1
	have "containerd-$v" containerd ctr && return 0
	step "containerd $v" build_in_module "containerd-$v" github.com/containerd/containerd/v2@$v \
		./cmd/containerd ./cmd/ctr
}

# runc needs seccomp (libseccomp-dev): without it every pod sandbox fails to start.
runc() {
	have runc runc && return 0
	step runc build_gobin runc -tags seccomp github.com/opencontainers/runc@$RUNC_VERSION
}

cni() {
	have cni bridge host-local loopback && return 0
	step "cni plugins" build_gobin cni \
		github.com/containernetworking/plugins/plugins/main/bridge@$CNI_VERSION \
		github.com/containernetworking/plugins/plugins/ipam/host-local@$CNI_VERSION \
		github.com/containernetworking/plugins/plugins/main/loopback@$CNI_VERSION
}

crictl() {
	have crictl crictl && return 0
	step crictl build_gobin crictl sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION
}

registry() {
	have registry registry && return 0
	step registry build_gobin registry github.com/distribution/distribution/v3/cmd/registry@$REGISTRY_VERSION
}

krew() {
	have krew krew validate-krew-manifest && return 0
	step krew build_gobin krew sigs.k8s.io/krew/cmd/krew@$KREW_VERSION sigs.k8s.io/krew/cmd/validate-krew-manifest@$KREW_VERSION
}

helm() {
	have helm helm && return 0
	step helm build_gobin helm helm.sh/helm/v3/cmd/helm@$HELM_VERSION
}

build_tool() { # build_tool TOOL PKG: builds PKG in the tool's module hack/tools/TOOL
	local d; d=$(dir_of "$1")
	mkdir -p "$d/bin.tmp"
	(cd "$TOOLS/$1" && go build -ldflags "-s -w" -o "$d/bin.tmp/$(basename "$2")" "$2")
	rm -rf "$d/bin" && mv "$d/bin.tmp" "$d/bin"
}

# promtool runs the chart's alert unit tests (`promtool test rules`).
promtool() {
	have promtool promtool && return 0
	step "promtool $PROMTOOL_VERSION" build_tool promtool github.com/prometheus/prometheus/cmd/promtool
}

# helm-docs generates the chart README's values table.
helm_docs() {
	have helm-docs helm-docs && return 0
	step "helm-docs $HELM_DOCS_VERSION" build_tool helm-docs github.com/norwoodj/helm-docs/cmd/helm-docs
}

# golangci-lint is `make lint`'s linter set (.golangci.yml).
golangci_lint() {
	have golangci-lint golangci-lint && return 0
	step "golangci-lint $GOLANGCI_LINT_VERSION" build_tool golangci-lint github.com/golangci/golangci-lint/v2/cmd/golangci-lint
}

# kube-apiserver, etcd and kubectl come from k8s.io/kubernetes, whose go.mod replaces its staging
# modules with v0.0.0; a scratch module maps each of them to the published version.
kube_module() { # kube_module DIR
	local m=$1
	mkdir -p "$m"
	if [ ! -f "$m/go.mod" ]; then
		local gomod
		gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
		{
			echo "module example.local/pulltrace-kubebin"
			echo "go 1.26.0"
			echo "godebug default=go1.26"
			echo "require k8s.io/kubernetes $KUBE_VERSION"
			echo "replace ("
			grep -E '^\s*k8s\.io/[^ ]+ v0\.0\.0\s*$' "$gomod" | awk -v v="$KUBE_STAGING_VERSION" '{print "\t" $1 " => " $1 " " v}' | sort -u
			echo ")"
		} >"$m/go.mod"
	fi
}

kube_ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION \
 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 \
 -X k8s.io/component-base/version.gitTreeState=clean"

build_kube() {
	local d; d=$(dir_of kube)
	local m="$d/src"
	kube_module "$m"
	(
		cd "$m"
		go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION" "go.etcd.io/etcd/server/v3@$ETCD_VERSION" \
			"k8s.io/kubernetes/cmd/kubelet@$KUBE_VERSION" "k8s.io/kubernetes/cmd/kube-controller-manager@$KUBE_VERSION" \
			"k8s.io/kubernetes/cmd/kube-scheduler@$KUBE_VERSION"
		mkdir -p "$d/bin.tmp"
		local c
		for c in kube-apiserver kubelet kube-controller-manager kube-scheduler; do
			go build -ldflags "$kube_ldflags" -o "$d/bin.tmp/$c" "k8s.io/kubernetes/cmd/$c"
		done
		go build -ldflags "-s -w" -o "$d/bin.tmp/etcd" go.etcd.io/etcd/server/v3
	)
	rm -rf "$d/bin" && mv "$d/bin.tmp" "$d/bin"
}

kube() {
	have kube kube-apiserver etcd kubelet kube-controller-manager kube-scheduler && return 0
	step "etcd, kube-apiserver, kubelet, kube-controller-manager, kube-scheduler" build_kube
}

build_kubectl() {
	local d; d=$(dir_of kubectl)
	local m="$d/src"
	mkdir -p "$m"
	cat >"$m/main.go" <<'GO'
// Command kubectl is a stock kubectl for the tests: the machine's Debian kubectl is too old.
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
)

func main() {
	_ = cli.RunNoErrOutput(cmd.NewDefaultKubectlCommand())
}
GO
	(
		cd "$m"
		[ -f go.mod ] || go mod init example.local/pulltrace-kubectl >/dev/null 2>&1
		go get "k8s.io/kubectl@$KUBE_STAGING_VERSION" "k8s.io/component-base@$KUBE_STAGING_VERSION"
		go mod tidy
		mkdir -p "$d/bin.tmp"
		go build -ldflags "$kube_ldflags" -o "$d/bin.tmp/kubectl" .
	)
	rm -rf "$d/bin" && mv "$d/bin.tmp" "$d/bin"
}

kubectl() {
	have kubectl kubectl && return 0
	step kubectl build_kubectl
}

main() {
	if [ "${1:-}" = path ]; then
		echo "$(dir_of "$2")/bin"
		return 0
	fi
	local what=("$@")
	[ ${#what[@]} -eq 0 ] && what=(all)
	for w in "${what[@]}"; do
		case "$w" in
		all) containerd; runc; cni; crictl; registry; kube; kubectl; helm; krew; promtool; helm_docs; golangci_lint ;;
		matrix) for v in $MATRIX_CONTAINERD_VERSIONS; do containerd_version "$v"; done ;;
		containerd | crictl | registry | kube | kubectl | helm | krew | runc | cni | promtool) "$w" ;;
		helm-docs) helm_docs ;;
		golangci-lint) golangci_lint ;;
		containerd-v*) containerd_version "${w#containerd-}" ;;
		*) echo "usage: $0 [all|matrix|containerd|crictl|registry|kube|kubectl|helm|krew|runc|cni|promtool|helm-docs|golangci-lint|containerd-VERSION]... | path NAME" >&2; exit 2 ;;
		esac
	done
}

main "$@"
