#!/usr/bin/env bash
# Checks the krew distribution end to end, offline: builds this platform's archive with
# hack/dist.sh into a temp folder (with a manifest carrying its real sha256), validates the
# manifest with krew's validate-krew-manifest, installs the archive with krew into a fresh
# KREW_ROOT, and runs `kubectl pulltrace version` through a real kubectl. Exits non-zero on
# the first failure. Nothing outside the temp folder is written.
#
# usage: hack/krew-test.sh
set -euo pipefail

cd "$(dirname "$0")/.."

hack/components.sh kubectl krew >&2
krew_bin=$(hack/components.sh path krew)
kubectl_bin=$(hack/components.sh path kubectl)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

os=$(go env GOOS)
arch=$(go env GOARCH)
version=$(sed -n 's/^  version: //p' plugins/krew.yaml)
manifest="$work/pulltrace.yaml" # validate-krew-manifest wants the file named after the plugin
archive="$work/dist/kubectl-pulltrace_${version}_${os}_${arch}.tar.gz"

DIST="$work/dist" MANIFEST="$manifest" PLATFORMS="$os/$arch" hack/dist.sh "$version"

echo ">> validate-krew-manifest" >&2
"$krew_bin/validate-krew-manifest" -manifest "$manifest" -skip-install

echo ">> krew install --manifest --archive ($os/$arch)" >&2
export KREW_ROOT="$work/krew" KREW_NO_UPGRADE_CHECK=1 KREW_OS="$os" KREW_ARCH="$arch"
"$krew_bin/krew" install --manifest="$manifest" --archive="$archive"

installed="$KREW_ROOT/store/pulltrace/$version"
for f in kubectl-pulltrace LICENSE kubectl_complete-pulltrace; do
	if [ ! -e "$installed/$f" ]; then
		echo "FAIL: krew did not install $f (have: $(ls "$installed"))" >&2
		exit 1
	fi
done

echo ">> kubectl pulltrace version (real kubectl, plugin from \$KREW_ROOT/bin)" >&2
# An empty kubeconfig and HOME: the test must not reach whatever cluster this machine knows.
: >"$work/kubeconfig"
out=$(env -i PATH="$KREW_ROOT/bin:$kubectl_bin:/usr/bin:/bin" HOME="$work" KUBECONFIG="$work/kubeconfig" \
	kubectl pulltrace version 2>&1) || {
	echo "FAIL: kubectl pulltrace version exited $?: $out" >&2
	exit 1
}
echo "$out"
case "$out" in
*"kubectl-pulltrace: $version"*"server: not reachable ("*) ;;
*)
	echo "FAIL: unexpected output of kubectl pulltrace version" >&2
	exit 1
	;;
esac

plugins=$(env -i PATH="$KREW_ROOT/bin:$kubectl_bin:/usr/bin:/bin" HOME="$work" kubectl plugin list 2>&1 || true)
case "$plugins" in
*"$KREW_ROOT/bin/kubectl-pulltrace"*) ;;
*)
	echo "FAIL: kubectl plugin list does not show the plugin: $plugins" >&2
	exit 1
	;;
esac
echo ">> kubectl __complete pulltrace (through the shipped kubectl_complete-pulltrace)" >&2
comp=$(env -i PATH="$KREW_ROOT/bin:$installed:$kubectl_bin:/usr/bin:/bin" HOME="$work" KUBECONFIG="$work/kubeconfig" \
	kubectl __complete pulltrace fol 2>/dev/null || true)
case "$comp" in
follow*) ;;
*)
	echo "FAIL: plugin completion through kubectl gave: $comp" >&2
	exit 1
	;;
esac
echo ">> krew test passed" >&2
