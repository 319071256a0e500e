#!/usr/bin/env bash
# Generates charts/pulltrace/README.md with helm-docs from README.md.gotmpl and the `# --`
# comments of values.yaml. --check writes nothing and fails when README.md is stale.
#
# usage: hack/helm-docs.sh [--check]
set -euo pipefail
cd "$(dirname "$0")/.."

hack/components.sh helm-docs
bin="$(hack/components.sh path helm-docs)/helm-docs"
chart=charts/pulltrace
args=(--chart-search-root "$chart" --template-files README.md.gotmpl --sort-values-order file)

if [ "${1:-}" = --check ]; then
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	"$bin" "${args[@]}" --dry-run --log-level warning >"$tmp/README.md"
	if ! diff -u "$chart/README.md" "$tmp/README.md" >"$tmp/diff"; then
		echo "FAIL: $chart/README.md is stale; run hack/helm-docs.sh" >&2
		head -40 "$tmp/diff" >&2
		exit 1
	fi
	# Every value is documented: helm-docs leaves the description empty otherwise.
	if grep -E '^\| [a-zA-Z].* \| *\|$' "$tmp/README.md" >&2; then
		echo "FAIL: values above have no '# --' comment in values.yaml" >&2
		exit 1
	fi
	echo ">> $chart/README.md is up to date" >&2
	exit 0
fi
"$bin" "${args[@]}" --log-level warning
