{{/* PLACEHOLDER until operator/rbac lands */}}
{{- define "schedsearch.rbacRules" -}}
- apiGroups: ["schedsearch.io"]
  resources: ["schedulesearches"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["schedsearch.io"]
  resources: ["schedulesearches/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}
{{- define "schedsearch.clusterRbacRules" -}}
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- end }}
