#!/usr/bin/env bash
# make bench: Go benchmarks of the hot paths, then the load program against real processes
# on loopback. Prints figures; asserts nothing (speed is measured, never a test verdict).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== Go benchmarks (one machine, one run; compare with benchstat across runs)"
go test -run '^$' -bench . -benchtime 2s ./internal/tracker ./internal/aggregate ./internal/stream ./internal/server | grep -E '^(Benchmark|goos|goarch|cpu)'
echo
echo "== Load: server intake, SSE fan-out, agent on a real pull, end-to-end delay"
hack/components.sh containerd crictl registry kube kubectl
go run ./hack/loadtest "$@"
echo
echo "== Speed and ETA accuracy against the throttle (real containerd, agent and server)"
go run ./hack/ratebench
