#!/usr/bin/env bash
# Builds the kubectl-pulltrace release archives (one .tar.gz per platform, each holding the
# binary, LICENSE and the kubectl_complete-pulltrace helper) and writes their version, uri and
# sha256 into the krew manifest.
#
# usage: hack/dist.sh [VERSION]          # default: v<appVersion of charts/pulltrace/Chart.yaml>
# env:   DIST=dir          archives go here (default dist/)
#        MANIFEST=file     manifest to write (default plugins/krew.yaml; its platform entries
#                          are the template, so another file starts as a copy of it)
#        PLATFORMS="os/arch ..."  subset to build (default: linux, darwin, windows x amd64, arm64)
#        RELEASE_URL=url   base of the download URIs
set -euo pipefail

cd "$(dirname "$0")/.."

appver=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' charts/pulltrace/Chart.yaml)
VERSION=${1:-${VERSION:-v$appver}}
case "$VERSION" in v*) ;; *) VERSION="v$VERSION" ;; esac
DIST=${DIST:-dist}
MANIFEST=${MANIFEST:-plugins/krew.yaml}
PLATFORMS=${PLATFORMS:-linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64}
RELEASE_URL=${RELEASE_URL:-https://github.com/d44b/pulltrace/releases/download/$VERSION}

mkdir -p "$DIST"
if ! [ "$MANIFEST" -ef plugins/krew.yaml ]; then
	cp plugins/krew.yaml "$MANIFEST"
fi

sha256() {
	if command -v sha256sum >/dev/null; then
		sha256sum "$1" | cut -d' ' -f1
	else
		shasum -a 256 "$1" | cut -d' ' -f1
	fi
}

# GNU tar can make byte-identical archives (same input, same sha256); others get a plain tar.
tar_flags=()
if tar --version 2>/dev/null | grep -q 'GNU tar'; then
	tar_flags=(--sort=name --owner=0 --group=0 --numeric-owner --mtime=@0)
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

for p in $PLATFORMS; do
	os=${p%/*}
	arch=${p#*/}
	ext=""
	[ "$os" = windows ] && ext=.exe
	rm -rf "${stage:?}"/*
	# Created per platform: another tool sharing dist/ may have removed it meanwhile.
	mkdir -p "$DIST"
	echo ">> building kubectl-pulltrace $VERSION for $os/$arch" >&2
	CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -trimpath -buildvcs=false \
		-ldflags "-s -w -X main.version=$VERSION" -o "$stage/kubectl-pulltrace$ext" ./cmd/kubectl-pulltrace
	cp LICENSE "$stage/LICENSE"
	cp cmd/kubectl-pulltrace/kubectl_complete-pulltrace "$stage/kubectl_complete-pulltrace"
	chmod 0755 "$stage/kubectl-pulltrace$ext" "$stage/kubectl_complete-pulltrace"
	chmod 0644 "$stage/LICENSE"
	name="kubectl-pulltrace_${VERSION}_${os}_${arch}.tar.gz"
	tar "${tar_flags[@]}" -C "$stage" -cf - "kubectl-pulltrace$ext" LICENSE kubectl_complete-pulltrace | gzip -n -9 >"$DIST/$name"
	sha=$(sha256 "$DIST/$name")
	echo "   $DIST/$name sha256:$sha" >&2

	# The platform's entry is found by the archive name's _<os>_<arch>.tar.gz suffix; its uri
	# and the sha256 line after it are replaced.
	tmp=$(mktemp)
	awk -v suffix="_${os}_${arch}.tar.gz" -v uri="$RELEASE_URL/$name" -v sha="$sha" '
		/^[ \t]*uri:/ && index($0, suffix) { sub(/uri:.*/, "uri: " uri); pending = 1; found = 1; print; next }
		pending && /^[ \t]*sha256:/ { sub(/sha256:.*/, "sha256: " sha); pending = 0 }
		{ print }
		END { if (!found) exit 3 }' "$MANIFEST" >"$tmp" || {
		rm -f "$tmp"
		echo "no platform entry for $os/$arch in $MANIFEST" >&2
		exit 1
	}
	cat "$tmp" >"$MANIFEST"
	rm -f "$tmp"
done

sed -i.bak -E "s/^(  version: ).*/\1$VERSION/" "$MANIFEST" && rm -f "$MANIFEST.bak"
echo ">> $MANIFEST updated for $VERSION" >&2
