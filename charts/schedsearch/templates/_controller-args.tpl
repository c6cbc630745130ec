{{/*
The controller's command-line flags (python -m schedsearch.controller --help), from the values.
Trainer pods reach the report channel through the chart's Service and run the chart's image.
*/}}
{{- define "schedsearch.controllerArgs" -}}
- --log-level={{ .Values.controller.logLevel }}
- --health-port={{ .Values.controller.healthPort }}
- --report-port={{ .Values.reportChannel.port }}
- --report-url=http://{{ include "schedsearch.fullname" . }}.{{ .Release.Namespace }}.svc:{{ .Values.reportChannel.port }}
- --image={{ include "schedsearch.image" . }}
- --leader-elect
- --leader-election-namespace={{ .Release.Namespace }}
- --leader-election-id={{ include "schedsearch.fullname" . }}
{{- with .Values.controller.shardSelector }}
- --shard-selector={{ . }}
{{- end }}
{{- if .Values.metrics.enabled }}
- --metrics-port={{ .Values.metrics.port }}
{{- end }}
{{- if .Values.trainers.metrics.enabled }}
- --trainer-metrics-port={{ .Values.trainers.metrics.port }}
{{- end }}
{{- range .Values.rbac.namespaces }}
- --namespace={{ . }}
{{- else }}
- --all-namespaces
{{- end }}
{{- end }}
