{{/*
Names, labels and the image reference shared by every template.
*/}}

{{- define "schedsearch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name: "<release>" when it already contains the chart name, else
"<release>-<chart>"; Kubernetes names are at most 63 characters.
*/}}
{{- define "schedsearch.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "schedsearch.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "schedsearch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "schedsearch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "schedsearch.labels" -}}
helm.sh/chart: {{ include "schedsearch.chart" . }}
app.kubernetes.io/name: {{ include "schedsearch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: schedsearch
{{- end }}

{{- define "schedsearch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "schedsearch.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image of the controller and of the trainer pods: a digest wins over a tag, and an empty
tag means the chart's appVersion.
*/}}
{{- define "schedsearch.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Pod- and container-level security settings, shared by the controller and the test pod: they
satisfy the "restricted" Pod Security Standard. Not values: weakening them is not supported.
*/}}
{{- define "schedsearch.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "schedsearch.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Selects the trainer pods the controller creates (controller/names.py labels them).
*/}}
{{- define "schedsearch.trainerSelector" -}}
matchLabels:
  app.kubernetes.io/managed-by: schedsearch
matchExpressions:
  - key: schedsearch.io/search
    operator: Exists
{{- end }}

{{- define "schedsearch.dashboardLabelText" -}}
{{- $pairs := list }}
{{- range $k, $v := .Values.dashboard.labels }}
{{- $pairs = append $pairs (printf "%s=%s" $k $v) }}
{{- end }}
{{- join ", " $pairs }}
{{- end }}
