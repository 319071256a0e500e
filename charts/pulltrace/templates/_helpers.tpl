{{/*
Chart name, overridable so two installs of a renamed chart do not collide.
*/}}
{{- define "pulltrace.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Base name of every object. A release whose name already contains the chart name is used as is,
so `helm install pulltrace` yields the Service `pulltrace-server`, which is what the kubectl
plugin looks for by default. Truncated to 47 characters so that the longest suffix
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
A digest, when given, pins the image instead of the tag. imageRegistry replaces the registry.
Call with (dict "image" .Values.server.image "ctx" $).
*/}}
{{- define "pulltrace.image" -}}
{{- $repo := include "pulltrace.rehost" (dict "repo" .image.repository "registry" .ctx.Values.imageRegistry) }}
{{- if .image.digest }}
{{- printf "%s@%s" $repo .image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{/*
A repository moved to another registry: the registry part of the name (a first path element
holding "." or ":", or "localhost", as image references define it) is replaced, or prefixed
when there is none; a Docker Hub short name gains "library/" as Docker Hub itself spells it.
Call with (dict "repo" "ghcr.io/d44b/pulltrace-agent" "registry" "mirror:5000"); an empty
registry returns repo unchanged.
*/}}
{{- define "pulltrace.rehost" -}}
{{- if not .registry }}
{{- .repo }}
{{- else }}
{{- $parts := splitList "/" .repo }}
{{- $first := first $parts }}
{{- if and (gt (len $parts) 1) (or (contains "." $first) (contains ":" $first) (eq $first "localhost")) }}
{{- $parts = rest $parts }}
{{- else if eq (len $parts) 1 }}
{{- $parts = prepend $parts "library" }}
{{- end }}
{{- printf "%s/%s" (trimSuffix "/" .registry) (join "/" $parts) }}
{{- end }}
{{- end }}

{{/*
The test pod's image, a full reference in test.image, moved by imageRegistry like the others:
the tag or digest is split off, the repository rehosted, and the suffix put back.
*/}}
{{- define "pulltrace.testImage" -}}
{{- $ref := .Values.test.image }}
{{- $repo := regexReplaceAll "^([^@]*?)(:[^/:@]+)?(@.+)?$" $ref "${1}" }}
{{- $suffix := trimPrefix $repo $ref }}
{{- printf "%s%s" (include "pulltrace.rehost" (dict "repo" $repo "registry" .Values.imageRegistry)) $suffix }}
{{- end }}

{{/*
ServiceAccount names: the chart's own when it creates them, else the one given, else the
namespace's "default".
*/}}
{{- define "pulltrace.serverServiceAccount" -}}
{{- if .Values.server.serviceAccount.create }}
{{- default (include "pulltrace.serverName" .) .Values.server.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.server.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pulltrace.agentServiceAccount" -}}
{{- if .Values.agent.serviceAccount.create }}
{{- default (include "pulltrace.agentName" .) .Values.agent.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.agent.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Pod template metadata: the chart's labels plus podLabels, podAnnotations plus the token
checksum. Call with (dict "ctx" $ "component" "agent" "pod" .Values.agent).
*/}}
{{- define "pulltrace.podMetadata" -}}
labels:
  {{- include "pulltrace.labels" (dict "ctx" .ctx "component" .component) | nindent 2 }}
  {{- with .pod.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- $annotations := deepCopy (.pod.podAnnotations | default dict) }}
{{- with include "pulltrace.tokenChecksum" .ctx }}
{{- $annotations = merge (fromYaml .) $annotations }}
{{- end }}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
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
{{- $_ := set $store "source" "stored" }}
{{- else }}
{{- $token = randAlphaNum 32 }}
{{- $_ := set $store "source" "generated" }}
{{- end }}
{{- end }}
{{- $_ := set $store "token" $token }}
{{- $_ := set .Values "_pulltraceInternal" $store }}
{{- end }}
{{- index .Values._pulltraceInternal "token" }}
{{- end }}
{{- end }}

{{/*
Where the managed token came from in this render: "stored" (lookup read it from the cluster),
"generated" (lookup found none: a first install, or a renderer without cluster access), or ""
(agent.auth.token or an existing Secret).
*/}}
{{- define "pulltrace.tokenSource" -}}
{{- $_ := include "pulltrace.managedToken" . }}
{{- index (.Values._pulltraceInternal | default dict) "source" | default "" }}
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
{{- range $w := list "agent" "server" }}
{{- $pod := index $.Values $w }}
{{- range $k := keys ($pod.podLabels | default dict) | sortAlpha }}
{{- if has $k (list "app.kubernetes.io/name" "app.kubernetes.io/instance" "app.kubernetes.io/component") }}
{{- fail (printf "\n\n%s.podLabels sets %s, a selector label of the chart; choose another label key.\n" $w $k) }}
{{- end }}
{{- end }}
{{- $own := index (dict
  "agent" (list "--containerd-socket" "--server" "--report-interval" "--log-level" "--token-file" "--health-addr")
  "server" (list "--listen" "--metrics-addr" "--history-ttl" "--watch-namespaces" "--log-level" "--token-file")) $w }}
{{- range $a := $pod.extraArgs }}
{{- $name := first (splitList "=" $a) }}
{{- if has $name $own }}
{{- fail (printf "\n\n%s.extraArgs has %s, which the chart already sets from its values (%s); set the value instead of the flag.\n" $w $name (include "pulltrace.flagSource" $name)) }}
{{- end }}
{{- end }}
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

{{/*
Which value sets a flag the chart passes, for the extraArgs error.
*/}}
{{- define "pulltrace.flagSource" -}}
{{- $m := dict
  "--containerd-socket" "agent.containerd.socketPath"
  "--server" "server.service.port, fullnameOverride"
  "--report-interval" "config.reportInterval"
  "--log-level" "config.logLevel"
  "--token-file" "agent.auth.*"
  "--health-addr" "fixed at :9091, the agent's health and metrics port"
  "--listen" "server.service.port"
  "--metrics-addr" "server.service.metricsPort"
  "--history-ttl" "config.historyTTL"
  "--watch-namespaces" "config.watchNamespaces" }}
{{- index $m . }}
{{- end }}
