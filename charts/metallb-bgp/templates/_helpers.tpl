{{/* Names, labels and the image, shared by every template. */}}

{{- define "metallb-bgp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's base name; components append -controller / -speaker (so leave room: 50 chars). */}}
{{- define "metallb-bgp.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "metallb-bgp.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "metallb-bgp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "metallb-bgp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "metallb-bgp.labels" -}}
helm.sh/chart: {{ include "metallb-bgp.chart" . }}
{{ include "metallb-bgp.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: metallb-bgp
{{- end }}

{{/* Usage: include "metallb-bgp.componentLabels" (list . "controller") */}}
{{- define "metallb-bgp.componentLabels" -}}
{{ include "metallb-bgp.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "metallb-bgp.componentSelectorLabels" -}}
{{ include "metallb-bgp.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "metallb-bgp.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "metallb-bgp.controller.serviceAccountName" -}}
{{- if .Values.controller.serviceAccount.create }}
{{- default (printf "%s-controller" (include "metallb-bgp.fullname" .)) .Values.controller.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.controller.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "metallb-bgp.speaker.serviceAccountName" -}}
{{- if .Values.speaker.serviceAccount.create }}
{{- default (printf "%s-speaker" (include "metallb-bgp.fullname" .)) .Values.speaker.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.speaker.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Pod and container security settings both daemons share. */}}
{{- define "metallb-bgp.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Arguments both daemons take. */}}
{{- define "metallb-bgp.commonArgs" -}}
- --namespace={{ .Release.Namespace }}
- --log-level={{ .Values.logLevel }}
- --log-format={{ .Values.logFormat }}
{{- with .Values.loadBalancerClass }}
- --load-balancer-class={{ . }}
{{- end }}
{{- end }}

{{/* Liveness and readiness on the metrics server; usage: include "metallb-bgp.probes" . */}}
{{- define "metallb-bgp.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: monitoring
  initialDelaySeconds: 10
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: monitoring
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
{{- end }}
