{{/*
Chart name, overridable so two installs of a renamed chart do not collide.
*/}}
{{- define "pulltrace.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Base name of every object. A release whose name already contains the chart name is used as is,
so `helm install pulltrace` yields the Service `pulltrace-server`, which is what the kubectl
plugin looks for by default. Truncated to 49 characters so that the longest suffix
("-server-headless", 16 characters) still fits the 63-character DNS label limit of Services.
*/}}
{{- define "pulltrace.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 47 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 47 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 47 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pulltrace.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Recommended labels. Call with (dict "ctx" $ "component" "server").
*/}}
{{- define "pulltrace.labels" -}}
helm.sh/chart: {{ include "pulltrace.chart" .ctx }}
{{ include "pulltrace.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: pulltrace
{{- end }}

{{/*
Selector labels: immutable in Deployments and DaemonSets, so they never include the version.
*/}}
{{- define "pulltrace.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pulltrace.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "pulltrace.serverName" -}}
{{- printf "%s-server" (include "pulltrace.fullname" .) }}
{{- end }}

{{- define "pulltrace.agentName" -}}
{{- printf "%s-agent" (include "pulltrace.fullname" .) }}
{{- end }}

{{/*
Headless Service of the server pods. The agent reports to this name: it resolves to every
server pod's address, and the agent sends each report to each address, so every replica holds
the full picture.
*/}}
{{- define "pulltrace.headlessName" -}}
{{- printf "%s-server-headless" (include "pulltrace.fullname" .) }}
{{- end }}

{{/*
Image reference; the tag defaults to the chart's appVersion so chart and binaries move together.
Call with (dict "image" .Values.server.image "ctx" $).
*/}}
{{- define "pulltrace.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}

{{/*
Name of the Secret holding the shared agent token, and the key inside it.
*/}}
{{- define "pulltrace.tokenSecretName" -}}
{{- if .Values.agent.auth.existingSecret }}
{{- .Values.agent.auth.existingSecret }}
{{- else }}
{{- printf "%s-token" (include "pulltrace.fullname" .) }}
{{- end }}
{{- end }}

{{- define "pulltrace.tokenSecretKey" -}}
{{- if .Values.agent.auth.existingSecret }}
{{- .Values.agent.auth.existingSecretKey }}
{{- else -}}
token
{{- end }}
{{- end }}

{{/*
Where the token Secret is mounted in both workloads; the binaries read it with --token-file so
the token never appears in the pod spec, the process list or the environment.
*/}}
{{- define "pulltrace.tokenDir" -}}
/etc/pulltrace/token
{{- end }}

{{- define "pulltrace.tokenFile" -}}
{{- printf "%s/token" (include "pulltrace.tokenDir" .) }}
{{- end }}

{{/*
The token value the chart manages (nil when an existing Secret is used): the value given in
agent.auth.token, else the one already stored in the release's Secret (lookup, so upgrades keep
it and running agents stay authenticated), else a fresh random one. Memoised in a global so the
Secret and the pod-template checksum see the same value within one render.
*/}}
{{- define "pulltrace.managedToken" -}}
{{- if not .Values.agent.auth.existingSecret }}
{{- $store := .Values._pulltraceInternal | default dict }}
{{- if not (hasKey $store "token") }}
{{- $token := .Values.agent.auth.token }}
{{- if not $token }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "pulltrace.tokenSecretName" .) }}
{{- if and $existing $existing.data (hasKey $existing.data "token") }}
{{- $token = index $existing.data "token" | b64dec }}
{{- else }}
{{- $token = randAlphaNum 32 }}
{{- end }}
{{- end }}
{{- $_ := set $store "token" $token }}
{{- $_ := set .Values "_pulltraceInternal" $store }}
{{- end }}
{{- index .Values._pulltraceInternal "token" }}
{{- end }}
{{- end }}

{{/*
Pod-template annotation that rolls agents and server together when a generated token changes
(the Secret was deleted, or a renderer without cluster access made a new one). Only for
generated tokens: their 32 random characters make the hash useless to an attacker, whereas
the hash of a user-chosen token, readable by anyone who may read Deployments, would allow an
offline dictionary attack. After changing agent.auth.token or an existing Secret, restart both
workloads (see the chart README).
*/}}
{{- define "pulltrace.tokenChecksum" -}}
{{- if not (or .Values.agent.auth.token .Values.agent.auth.existingSecret) -}}
annotations:
  checksum/token: {{ include "pulltrace.managedToken" . | sha256sum }}
{{- end }}
{{- end }}

{{/*
Namespaces the server watches, cleaned: split on commas, blanks dropped, duplicates removed.
Returns a comma-joined string ("" means every namespace).
*/}}
{{- define "pulltrace.watchNamespaces" -}}
{{- $out := list }}
{{- range splitList "," .Values.config.watchNamespaces }}
{{- $ns := trim . }}
{{- if $ns }}
{{- $out = append $out $ns }}
{{- end }}
{{- end }}
{{- $out | uniq | join "," }}
{{- end }}

{{/*
Checks that values.schema.json cannot express. Rendered from the server Deployment, which every
install has, so a bad combination fails `helm install`, `helm template` and `helm lint` alike.
*/}}
{{- define "pulltrace.validate" -}}
{{- if and .Values.runtimeSocket.enabled (not .Values.runtimeSocket.risksAcknowledged) }}
{{- fail (printf "\n\nruntimeSocket.enabled=true mounts the node's containerd socket (%s) into the agent pods. Whoever controls that socket controls every container on the node (it is root-equivalent), and the agent runs as uid 0 to open it.\nTo accept this, set runtimeSocket.risksAcknowledged=true (the chart default).\nTo deploy without any agent instead, set runtimeSocket.enabled=false: the server will then see no image pulls at all.\n" .Values.agent.containerd.socketPath) }}
{{- end }}
{{- if and .Values.namespace (ne .Values.namespace .Release.Namespace) }}
{{- fail (printf "\n\nnamespace=%q but the release namespace is %q. Every object of this chart goes to the release namespace (helm -n). Install with -n %s, or set namespace=%q, or leave namespace empty.\n" .Values.namespace .Release.Namespace .Values.namespace .Release.Namespace) }}
{{- end }}
{{- if and .Values.agent.auth.token .Values.agent.auth.existingSecret }}
{{- fail "\n\nagent.auth.token and agent.auth.existingSecret are both set; set only one: the token is read from exactly one Secret.\n" }}
{{- end }}
{{- if eq (int .Values.server.service.port) (int .Values.server.service.metricsPort) }}
{{- fail (printf "\n\nserver.service.port and server.service.metricsPort are both %d; the server listens on them separately, so they must differ.\n" (int .Values.server.service.port)) }}
{{- end }}
{{- end }}

{{/*
Source CIDRs of the API server's service proxy, as a JSON list: networkPolicy.apiServerCIDRs
when set, else the API server's own addresses as the `kubernetes` Service's endpoints list
them (lookup; where kubeadm-style API servers connect to pods from), so that with the policy
on `kubectl pulltrace` keeps working without a setting. Empty where nothing is known: in
`helm template`, or on clusters whose control plane reaches pods through another address.
*/}}
{{- define "pulltrace.apiServerCIDRs" -}}
{{- $cidrs := list -}}
{{- if .Values.networkPolicy.apiServerCIDRs -}}
{{- $cidrs = .Values.networkPolicy.apiServerCIDRs -}}
{{- else -}}
{{- $ep := lookup "v1" "Endpoints" "default" "kubernetes" | default dict -}}
{{- range $s := ($ep.subsets | default list) -}}
{{- range $a := ($s.addresses | default list) -}}
{{- if contains ":" $a.ip -}}
{{- $cidrs = append $cidrs (printf "%s/128" $a.ip) -}}
{{- else -}}
{{- $cidrs = append $cidrs (printf "%s/32" $a.ip) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $cidrs -}}
{{- end -}}
