{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "radstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name: the prefix of every resource. */}}
{{- define "radstream.fullname" -}}
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

{{- define "radstream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "radstream.labels" -}}
helm.sh/chart: {{ include "radstream.chart" . }}
{{ include "radstream.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "radstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "radstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector labels of one role's pods; call with (dict "root" $ "role" "ingest"). */}}
{{- define "radstream.roleSelectorLabels" -}}
{{ include "radstream.selectorLabels" .root }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{- define "radstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "radstream.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the database URL, JWT secret and S3 keys. */}}
{{- define "radstream.secretName" -}}
{{- default (include "radstream.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/*
The site configuration: .Values.config with what the chart itself decides (DICOM TLS files)
merged in. Rendered by radstream.toml below, not by Helm's toToml: Helm reads every number in
values as a float, and toToml would write port = 11112.0, which the node refuses.
*/}}
{{- define "radstream.config" -}}
{{- $config := deepCopy (.Values.config | default dict) }}
{{- if .Values.dicomTls.enabled }}
{{- $tls := dict "enabled" true "port" .Values.dicomTls.port "certificate" "/etc/radstream/tls/tls.crt" "private_key" "/etc/radstream/tls/tls.key" }}
{{- if .Values.dicomTls.clientCa }}
{{- $_ := set $tls "client_ca" "/etc/radstream/tls/ca.crt" }}
{{- end }}
{{- $dicom := get $config "dicom" | default dict }}
{{- $_ := set $dicom "tls" (mergeOverwrite (get $dicom "tls" | default dict) $tls) }}
{{- $_ := set $config "dicom" $dicom }}
{{- end }}
{{- include "radstream.toml" $config }}
{{- end }}

{{/* A map of sections as TOML: scalars first, then one [table] per map, nested maps inline. */}}
{{- define "radstream.toml" -}}
{{- range $key, $value := . }}
{{- if and (not (kindIs "map" $value)) (not (kindIs "invalid" $value)) }}
{{ include "radstream.tomlKey" $key }} = {{ include "radstream.tomlValue" $value }}
{{- end }}
{{- end }}
{{- range $key, $value := . }}
{{- if kindIs "map" $value }}

[{{ include "radstream.tomlKey" $key }}]
{{- range $k, $v := $value }}
{{- if not (kindIs "invalid" $v) }}
{{ include "radstream.tomlKey" $k }} = {{ include "radstream.tomlValue" $v }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "radstream.tomlKey" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{/* One TOML value: whole numbers as integers, strings JSON-escaped (valid TOML basic strings),
lists as arrays, maps as inline tables; null entries are left out. */}}
{{- define "radstream.tomlValue" -}}
{{- if kindIs "map" . }}
{{- $parts := list }}
{{- range $k, $v := . }}
{{- if not (kindIs "invalid" $v) }}
{{- $parts = append $parts (printf "%s = %s" (include "radstream.tomlKey" $k) (include "radstream.tomlValue" $v)) }}
{{- end }}
{{- end }}
{{- printf "{ %s }" (join ", " $parts) }}
{{- else if kindIs "slice" . }}
{{- $parts := list }}
{{- range . }}
{{- $parts = append $parts (include "radstream.tomlValue" .) }}
{{- end }}
{{- printf "[%s]" (join ", " $parts) }}
{{- else if kindIs "string" . }}
{{- toJson . }}
{{- else if kindIs "bool" . }}
{{- ternary "true" "false" . }}
{{- else if and (kindIs "float64" .) (eq . (floor .)) }}
{{- printf "%d" (int64 .) }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/* An HTTP probe from the probes map; call with (dict "probe" $p "port" "http"). */}}
{{- define "radstream.httpProbe" -}}
httpGet:
  path: {{ .probe.path }}
  port: {{ .port }}
initialDelaySeconds: {{ .probe.initialDelaySeconds }}
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
{{- end }}
