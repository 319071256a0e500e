#!/usr/bin/env bash
# Lints and renders charts/pulltrace with the real helm CLI (the Go tests in charts/ use the Helm
# SDK; this checks what users run). Exits non-zero on the first failure.
#
# usage: hack/chart-lint.sh          # builds helm into the component cache if needed
#        HELM=/path/to/helm hack/chart-lint.sh
set -euo pipefail

cd "$(dirname "$0")/.."
chart=charts/pulltrace

if [ -z "${HELM:-}" ]; then
	hack/components.sh helm
	HELM="$(hack/components.sh path helm)/helm"
fi

# A helm built with `go install` reports Kubernetes 1.20 (release builds set the version with
# ldflags), which the chart's kubeVersion (>=1.28) refuses; render for the version the project
# tests against.
kube=(--kube-version 1.37.2)
monitoring=(--api-versions monitoring.coreos.com/v1 --api-versions monitoring.coreos.com/v1/ServiceMonitor
	--api-versions monitoring.coreos.com/v1/PodMonitor --api-versions monitoring.coreos.com/v1/PrometheusRule)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Every setting changed from its default, so that template paths behind `if` are linted too.
cat >"$tmp/nondefault.yaml" <<'EOF'
namespace: pulltrace
imagePullSecrets: [{name: regcred}]
imageRegistry: mirror.local:5000
rbac: {create: true}
config:
  logLevel: debug
  watchNamespaces: "team-a, team-b"
  historyTTL: 45m
  reportInterval: 750ms
agent:
  image: {repository: registry.local/pt-agent, tag: v9.9.9, pullPolicy: Always}
  serviceAccount: {create: true, name: pt-nodes, annotations: {iam.example/role: agent}}
  podAnnotations: {prometheus.io/scrape: "true", prometheus.io/port: "9091"}
  podLabels: {team: infra}
  extraArgs: ["--poll-interval=500ms", "--stall-timeout=1m"]
  extraEnv: [{name: HTTPS_PROXY, value: "http://proxy:3128"}]
  updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: "10%"}}
  containerd: {socketPath: /run/k3s/containerd/containerd.sock}
  auth: {token: lint-token-value}
  resources: {requests: {cpu: 5m, memory: 16Mi}, limits: {memory: 64Mi}}
  nodeSelector: {pool: pt}
  tolerations: [{key: dedicated, operator: Equal, value: pt, effect: NoSchedule}]
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms: [{matchExpressions: [{key: pool, operator: In, values: [pt]}]}]
  priorityClassName: system-node-critical
server:
  replicas: 3
  image: {repository: registry.local/pt-server, tag: v9.9.9, digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", pullPolicy: Always}
  serviceAccount: {create: true, name: pt-api, annotations: {iam.gke.io/gcp-service-account: pt@p.iam.gserviceaccount.com}}
  podAnnotations: {a.example/b: c}
  podLabels: {team: infra}
  extraArgs: ["--max-pulls=20000", "--agent-timeout=1m"]
  extraEnv: [{name: GODEBUG, value: "http2debug=1"}]
  service: {port: 18080, metricsPort: 19090}
  resources: {requests: {cpu: 20m, memory: 32Mi}, limits: {memory: 512Mi}}
  tolerations: [{key: dedicated, operator: Exists}]
  priorityClassName: high
ingress:
  enabled: true
  className: nginx
  annotations: {nginx.ingress.kubernetes.io/proxy-buffering: "off"}
  hosts: [{host: pt.example.org, paths: [{path: /, pathType: Prefix}]}]
  tls: [{secretName: pt-tls, hosts: [pt.example.org]}]
networkPolicy:
  enabled: true
  allowedNamespaceSelectors: [{matchLabels: {kubernetes.io/metadata.name: ingress-nginx}}]
  monitoringNamespaceSelector: {matchLabels: {kubernetes.io/metadata.name: observability}}
  apiServerCIDRs: [172.18.0.2/32]
serviceMonitor: {enabled: true, interval: 15s, labels: {release: prom}}
podMonitor: {enabled: true, interval: 15s, labels: {release: prom}}
prometheusRule: {enabled: true, labels: {release: prom}, alertLabels: {severity: page}, stalledMinutes: 7, etaMinutes: 45, etaForMinutes: 20, failures: 9, failuresWindow: 1h, agentsMissingMinutes: 30, silentMinutes: 4}
dashboard: {enabled: true, sidecarLabel: grafana_dashboard, sidecarLabelValue: "1", folder: Platform, labels: {team: infra}}
podDisruptionBudget: {enabled: true, maxUnavailable: 1}
test: {image: "busybox:1.36"}
EOF

step() { echo ">> $*" >&2; }

step "helm lint --strict (defaults)"
"$HELM" lint --strict "${kube[@]}" -n pulltrace "$chart"
step "helm lint --strict (every setting changed)"
"$HELM" lint --strict "${kube[@]}" -n pulltrace -f "$tmp/nondefault.yaml" "$chart"
step "helm lint --strict (no agent)"
"$HELM" lint --strict "${kube[@]}" -n pulltrace --set runtimeSocket.enabled=false "$chart"

step "helm template (defaults)"
"$HELM" template pulltrace "$chart" "${kube[@]}" -n pulltrace >"$tmp/default.out"
step "helm template (every setting changed, Prometheus Operator present)"
"$HELM" template pulltrace "$chart" "${kube[@]}" "${monitoring[@]}" -n pulltrace \
	-f "$tmp/nondefault.yaml" >"$tmp/nondefault.out"

# want FILE TEXT...: each TEXT must occur in FILE.
want() {
	local f=$1; shift
	for s in "$@"; do
		grep -qF -- "$s" "$f" || { echo "FAIL: '$s' not in $(basename "$f")" >&2; exit 1; }
	done
}
want "$tmp/default.out" \
	"kind: DaemonSet" "name: pulltrace-server" "name: pulltrace-server-headless" \
	"--containerd-socket=/run/containerd/containerd.sock" \
	"--server=http://pulltrace-server-headless.pulltrace.svc:8080" \
	"--report-interval=2s" "--history-ttl=30m" "--listen=:8080" "--metrics-addr=:9090" \
	"--token-file=/etc/pulltrace/token/token" "helm.sh/hook: test"
want "$tmp/nondefault.out" \
	"--log-level=debug" "--watch-namespaces=team-a,team-b" "--history-ttl=45m" \
	"--report-interval=750ms" "--containerd-socket=/run/k3s/containerd/containerd.sock" \
	"path: /run/k3s/containerd/containerd.sock" "--listen=:18080" "--metrics-addr=:19090" \
	"--server=http://pulltrace-server-headless.pulltrace.svc:18080" "replicas: 3" \
	"kind: Ingress" "kind: NetworkPolicy" "kind: ServiceMonitor" "kind: PodDisruptionBudget" \
	"cidr: 172.18.0.2/32" "kind: Role" "namespace: team-a" "namespace: team-b" \
	"kind: PodMonitor" "kind: PrometheusRule" "alert: PulltracePullStalled" "grafana_dashboard: \"1\"" \
	"image: \"mirror.local:5000/pt-agent:v9.9.9\"" "mirror.local:5000/pt-server@sha256:0123" \
	"serviceAccountName: pt-nodes" "serviceAccountName: pt-api" "--poll-interval=500ms" "--max-pulls=20000" \
	"maxUnavailable: 10%" "prometheus.io/scrape: \"true\""
if grep -qF "kind: ClusterRole" "$tmp/nondefault.out"; then
	echo "FAIL: ClusterRole rendered although watchNamespaces is set" >&2
	exit 1
fi

# refuse TEXT ARGS...: rendering with ARGS must fail with TEXT in the error.
refuse() {
	local text=$1; shift
	if "$HELM" template pulltrace "$chart" "${kube[@]}" -n pulltrace "$@" >/dev/null 2>"$tmp/err"; then
		echo "FAIL: rendered with $*" >&2
		exit 1
	fi
	grep -qF -- "$text" "$tmp/err" || { echo "FAIL: error for $* lacks '$text':" >&2; cat "$tmp/err" >&2; exit 1; }
}
step "bad values are refused"
refuse "runtimeSocket.risksAcknowledged=true" --set runtimeSocket.risksAcknowledged=false
refuse "additional properties 'bogus' not allowed" --set bogus=1
refuse "replicas" --set server.replicas=three
refuse "historyTTL" --set config.historyTTL=30
refuse "-n pulltrace" --set namespace=pulltrace -n default
refuse "config.reportInterval" --set 'agent.extraArgs={--report-interval=1s}'
refuse "selector label" --set agent.podLabels.app\\.kubernetes\\.io/component=x

echo ">> chart OK" >&2
