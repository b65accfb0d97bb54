{{/* The release's name for every object. */}}
{{- define "codeq.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "codeq.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "codeq.labels" -}}
{{ include "codeq.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "codeq.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else -}}
{{- include "codeq.fullname" . -}}
{{- end -}}
{{- end -}}

{{- define "codeq.redisAddr" -}}
{{- if .Values.kvrocks.enabled -}}
{{- printf "%s-kvrocks:6666" (include "codeq.fullname" .) -}}
{{- else -}}
{{- .Values.redis.addr -}}
{{- end -}}
{{- end -}}

{{/* The pod template shared by the StatefulSet and the Deployment. */}}
{{- define "codeq.podTemplate" -}}
metadata:
  labels:
    {{- include "codeq.labels" . | nindent 4 }}
  annotations:
    checksum/config: {{ include "codeq.config" . | sha256sum }}
spec:
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  containers:
    - name: codeq
      image: {{ printf "%s:%s" .Values.image.repository .Values.image.tag | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args: ["serve"]
      env:
        - name: CODEQ_CONFIG
          value: /etc/codeq/codeq.yaml
        {{- range $key := list "CODEQ_STATIC_TOKENS" "CODEQ_REDIS_PASSWORD" "CODEQ_WEBHOOK_HMAC_SECRET" }}
        - name: {{ $key }}
          valueFrom:
            secretKeyRef:
              name: {{ include "codeq.secretName" $ }}
              key: {{ $key }}
              optional: true
        {{- end }}
      ports:
        - name: http
          containerPort: 8080
          protocol: TCP
      livenessProbe:
        httpGet: { path: /healthz, port: http }
        initialDelaySeconds: {{ .Values.probes.liveness.initialDelaySeconds }}
        periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
        failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
      readinessProbe:
        httpGet: { path: /readyz, port: http }
        initialDelaySeconds: {{ .Values.probes.readiness.initialDelaySeconds }}
        periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
        failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: { drop: ["ALL"] }
      volumeMounts:
        - name: config
          mountPath: /etc/codeq
          readOnly: true
        - name: data
          mountPath: /var/lib/codeq
  volumes:
    - name: config
      configMap:
        name: {{ include "codeq.fullname" . }}
    {{- if ne .Values.storage "embedded" }}
    - name: data
      emptyDir: {}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* Tokens are required: without any, codeQ is in local mode, which
refuses the non-loopback address a pod listens on. */}}
{{- define "codeq.requireTokens" -}}
{{- $providers := list "identityServiceUrl" "identityJwksUrl" "workerJwksUrl" -}}
{{- $jwt := false -}}
{{- range $providers -}}
{{- if hasKey $.Values.config . -}}{{- $jwt = true -}}{{- end -}}
{{- end -}}
{{- if not (or .Values.secrets.staticTokens .Values.secrets.existingSecret $jwt) -}}
{{- fail "codeq: set secrets.staticTokens, secrets.existingSecret or an identity provider in config (identityServiceUrl, identityJwksUrl, workerJwksUrl): without tokens codeQ runs in local mode, which only listens on loopback" -}}
{{- end -}}
{{- end -}}

{{/* The codeQ configuration file. */}}
{{- define "codeq.config" -}}
{{- $fixed := dict "host" "0.0.0.0" "port" 8080 "dataDir" "/var/lib/codeq" "storage" .Values.storage -}}
{{- if eq .Values.storage "redis" -}}
{{- $_ := set $fixed "redisAddr" (include "codeq.redisAddr" .) -}}
{{- $_ := set $fixed "redisDb" .Values.redis.db -}}
{{- if and .Values.redis.username (not .Values.kvrocks.enabled) -}}
{{- $_ := set $fixed "redisUsername" .Values.redis.username -}}
{{- end -}}
{{- $_ := set $fixed "redisKeyPrefix" .Values.redis.keyPrefix -}}
{{- end -}}
{{- toYaml (merge $fixed .Values.config) -}}
{{- end -}}
