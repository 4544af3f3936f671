{{- define "ecs-image-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ecs-image-operator.fullname" -}}
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

{{- define "ecs-image-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ecs-image-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ecs-image-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ecs-image-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "ecs-image-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ecs-image-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ecs-image-operator.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The rules of what the operator calls in the namespaces it watches. */}}
{{- define "ecs-image-operator.watchRules" -}}
# Watch the objects, add/remove the finalizer, write status.
- apiGroups: ["imageops.dev"]
  resources: ["imagecopies", "imageimports", "imageexports", "imagereplications"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["imageops.dev"]
  resources: ["imagecopies/status", "imageimports/status", "imageexports/status", "imagereplications/status"]
  verbs: ["get", "patch", "update"]
# An ImageReplication's copies, one per region, made and removed by the operator.
- apiGroups: ["imageops.dev"]
  resources: ["imagecopies"]
  verbs: ["create", "delete"]
# The copies name their ImageReplication as owner with blockOwnerDeletion, which needs this.
- apiGroups: ["imageops.dev"]
  resources: ["imagereplications/finalizers"]
  verbs: ["update"]
# The ConfigMap an ImageReplication publishes its region → image map to (spec.publishTo).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "create", "patch", "delete"]
# Only the Secret an object names in spec.credentialsSecretRef, read by name.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
