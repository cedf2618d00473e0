{{/* The objects' fixed name: the controller finds its Lease and record-key Secret by it. */}}
{{- define "eccm.name" -}}edge-cloud-controller-manager{{- end }}

{{/* Labels of every object: manifests/'s, and Helm's bookkeeping. */}}
{{- define "eccm.labels" -}}
app.kubernetes.io/name: {{ include "eccm.name" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* What selects the pods (never changes across upgrades). */}}
{{- define "eccm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "eccm.name" . }}
{{- end }}

{{- define "eccm.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}:{{ $tag }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end }}
