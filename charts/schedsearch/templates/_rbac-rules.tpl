{{/*
What the controller does, and so the least it may do (controller/kube.py is the one place that
talks to the API). Checked by tests/integration/test_helm_install.py: the chart's ServiceAccount
runs a search to the end with exactly these.
*/}}
{{- define "schedsearch.rbacRules" -}}
# The searches: kopf lists and watches them, adds its finalizer and bookkeeping annotations.
- apiGroups: ["schedsearch.io"]
  resources: ["schedulesearches"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["schedsearch.io"]
  resources: ["schedulesearches/status"]
  verbs: ["get", "patch"]
# The best schedule of each search is stored as an LRSchedule (replaced when a better one comes).
- apiGroups: ["schedsearch.io"]
  resources: ["lrschedules"]
  verbs: ["get", "create", "update"]
# Trainer pods, HDET's headless Service, the per-search report token, the durable search state.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "create", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "create"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/*
Cluster-wide mode only: kopf watches the CRDs to notice them change while it runs (namespaced,
it reads them once at start and logs that it cannot watch them).
*/}}
{{- define "schedsearch.clusterRbacRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- end }}
