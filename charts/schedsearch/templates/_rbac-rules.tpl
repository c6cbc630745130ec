{{/*
What the controller does, and so the least it may do (controller/kube.py is the one place that
talks to the API). Checked by tests/integration/test_helm_install.py: the chart's ServiceAccount
runs a search to the end with exactly these.
*/}}
{{- define "schedsearch.rbacRules" -}}
# The searches and what they own are listed and watched by label into the controller's cache
# (secrets excepted: read by name). Patch on searches: the finalizer earlier versions put on them
# is taken off.
- apiGroups: ["schedsearch.io"]
  resources: ["schedulesearches"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["schedsearch.io"]
  resources: ["schedulesearches/status"]
  verbs: ["get", "patch"]
# The best schedule of each search is stored as an LRSchedule (replaced when a better one comes).
- apiGroups: ["schedsearch.io"]
  resources: ["lrschedules"]
  verbs: ["get", "list", "watch", "create", "update"]
# Trainer pods, HDET's headless Service, the per-search report token, the durable search state.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "create"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/*
Leader election, in the release's namespace only: the replicas' Lease (named after the release).
*/}}
{{- define "schedsearch.leaderElectionRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "create", "update"]
{{- end }}
