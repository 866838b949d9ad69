{{/* Names and labels shared by every template. */}}
{{- define "lorafleet.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "lorafleet.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "lorafleet.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "lorafleet.image" -}}
{{ printf "%s:%s" .Values.image.repository .Values.image.tag }}
{{- end -}}

{{- define "lorafleet.dbSecret" -}}
{{- default (printf "%s-database" (include "lorafleet.fullname" .)) .Values.database.existingSecret -}}
{{- end -}}

{{/* The Secret holding the service secret (and the JWT secret if given). */}}
{{- define "lorafleet.authSecret" -}}
{{- default (printf "%s-auth" (include "lorafleet.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "lorafleet.jwtSecret" -}}
{{- default (printf "%s-auth" (include "lorafleet.fullname" .)) .Values.auth.jwt.existingSecret -}}
{{- end -}}

{{/* LORAFLEET_AUTH_*: the mode, the secrets by reference, the JWT checks. */}}
{{- define "lorafleet.authEnv" -}}
{{- $mode := .Values.auth.mode -}}
{{- if not (has $mode (list "required" "disabled")) -}}
{{- fail (printf "auth.mode must be required or disabled, not %q" $mode) -}}
{{- end -}}
- name: LORAFLEET_AUTH_MODE
  value: {{ $mode | quote }}
- name: LORAFLEET_AUTH_SERVICE_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "lorafleet.authSecret" . }}
      key: service-secret
{{- if or .Values.auth.jwt.secret .Values.auth.jwt.existingSecret }}
- name: LORAFLEET_AUTH_JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "lorafleet.jwtSecret" . }}
      key: jwt-secret
{{- end }}
{{- with .Values.auth.jwt.jwksUrl }}
- name: LORAFLEET_AUTH_JWKS_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.auth.jwt.issuer }}
- name: LORAFLEET_AUTH_JWT_ISSUER
  value: {{ . | quote }}
{{- end }}
{{- with .Values.auth.jwt.audience }}
- name: LORAFLEET_AUTH_JWT_AUDIENCE
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{- define "lorafleet.artifactsClaim" -}}
{{- default (printf "%s-artifacts" (include "lorafleet.fullname" .)) .Values.artifacts.persistence.existingClaim -}}
{{- end -}}

{{/* host:port of a service's Service, for the others' LORAFLEET_*_ADDRESS. */}}
{{- define "lorafleet.address" -}}
{{- $svc := index .root.Values.services .name -}}
{{- printf "%s-%s:%v" (include "lorafleet.fullname" .root) .name $svc.port -}}
{{- end -}}

{{/* Every inference replica the gateway may route to: the StatefulSet's pods
     up to the autoscaler's maximum (those not running are skipped). */}}
{{- define "lorafleet.inferenceReplicas" -}}
{{- $root := . -}}
{{- $inf := .Values.services.inference -}}
{{- $count := int $inf.replicas -}}
{{- if $inf.autoscaling.enabled }}{{ $count = int $inf.autoscaling.maxReplicas }}{{ end -}}
{{- $name := printf "%s-inference" (include "lorafleet.fullname" $root) -}}
{{- $out := list -}}
{{- range $i := until $count -}}
{{- $out = append $out (printf "%s-%d.%s-headless:%v" $name $i $name $inf.port) -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}

{{/* The environment every service shares. */}}
{{- define "lorafleet.env" -}}
- name: LORAFLEET_DATA_DIR
  value: /data
- name: LORAFLEET_HOST
  value: 0.0.0.0
- name: LORAFLEET_LOG_JSON
  value: "1"
- name: LORAFLEET_GRACE_PERIOD_S
  value: {{ .Values.gracePeriodSeconds | quote }}
- name: LORAFLEET_METRICS_PORT
  value: {{ .Values.metrics.port | quote }}
- name: LORAFLEET_OTLP_ENDPOINT
  value: {{ .Values.otlpEndpoint | quote }}
- name: LORAFLEET_WORKER_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: LORAFLEET_PG_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "lorafleet.dbSecret" . }}
      key: postgres-url
{{- range $name := list "registry" "trainer" "merger" "validator" "gateway" }}
- name: LORAFLEET_{{ upper $name }}_ADDRESS
  value: {{ include "lorafleet.address" (dict "root" $ "name" $name) }}
{{- end }}
- name: LORAFLEET_INFERENCE_ADDRESS
  value: {{ include "lorafleet.address" (dict "root" . "name" "inference") }}
{{ include "lorafleet.authEnv" . }}
{{- end -}}
