{{/* Names: <release>-purrify, or the release name when it already says purrify. */}}
{{- define "purrify.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "purrify.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "purrify.gateway.fullname" -}}{{ include "purrify.fullname" . }}-gateway{{- end -}}
{{- define "purrify.operator.fullname" -}}{{ include "purrify.fullname" . }}-operator{{- end -}}
{{- define "purrify.worker.fullname" -}}{{ include "purrify.fullname" . }}-worker{{- end -}}

{{/* Labels of every object; call with (dict "root" $ "component" "gateway"). */}}
{{- define "purrify.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{ include "purrify.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: purrify
{{- end -}}

{{- define "purrify.selectorLabels" -}}
app.kubernetes.io/name: {{ include "purrify.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* <registry>/<repository>:<tag>|@<digest>; call with (dict "root" $ "image" .Values.images.gateway). */}}
{{- define "purrify.image" -}}
{{- $registry := default .root.Values.images.registry .image.registry | trimSuffix "/" -}}
{{- $repo := ternary .image.repository (printf "%s/%s" $registry .image.repository) (empty $registry) -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repo .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "purrify.imagePullSecrets" -}}
{{- with .Values.images.pullSecrets -}}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* The restricted Pod Security Standard, pod level. */}}
{{- define "purrify.podSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .Values.securityContext.runAsUser }}
  runAsGroup: {{ .Values.securityContext.runAsGroup }}
  fsGroup: {{ .Values.securityContext.fsGroup }}
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* The restricted Pod Security Standard, container level. */}}
{{- define "purrify.containerSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .Values.securityContext.runAsUser }}
  runAsGroup: {{ .Values.securityContext.runAsGroup }}
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  privileged: false
  capabilities:
    drop: ["ALL"]
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{/* The downward API: the pod's namespace and name. */}}
{{- define "purrify.downwardEnv" -}}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end -}}

{{/* A soft spread of a component's replicas over nodes; (dict "root" $ "component" "gateway"). */}}
{{- define "purrify.spread" -}}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "purrify.selectorLabels" . | nindent 8 }}
{{- end -}}

{{/*
The rules of one Role or ClusterRole of a deploy/ file (copied byte for byte into files/; a test
keeps the copies equal), so deploy/ stays the one source of the permissions.
Call with (dict "root" $ "file" "files/operator-rbac.yaml" "kind" "ClusterRole" "name" "purrify-operator").
*/}}
{{- define "purrify.rbacRules" -}}
{{- $found := "" -}}
{{- $want := . -}}
{{- range splitList "\n---\n" ($want.root.Files.Get $want.file) -}}
{{- $doc := fromYaml . -}}
{{- if and (eq (toString $doc.kind) $want.kind) (eq (toString (dig "metadata" "name" "" $doc)) $want.name) -}}
{{- $found = toYaml $doc.rules -}}
{{- end -}}
{{- end -}}
{{- if not $found -}}
{{- fail (printf "%s has no %s named %s" $want.file $want.kind $want.name) -}}
{{- end -}}
{{- $found -}}
{{- end -}}

{{- define "purrify.storageUrl" -}}
{{- $prefix := trimAll "/" .Values.storage.prefix -}}
{{- if $prefix -}}
s3://{{ .Values.storage.bucket }}/{{ $prefix }}
{{- else -}}
s3://{{ .Values.storage.bucket }}
{{- end -}}
{{- end -}}

{{/* Storage environment shared by the gateway and (through the worker ConfigMap) the workers. */}}
{{- define "purrify.storageEnv" -}}
PURRIFY_STORAGE: {{ include "purrify.storageUrl" . | quote }}
{{- with .Values.storage.s3.endpoint }}
PURRIFY_S3_ENDPOINT: {{ . | quote }}
{{- end }}
{{- with .Values.storage.s3.region }}
PURRIFY_S3_REGION: {{ . | quote }}
{{- end }}
PURRIFY_S3_ALLOW_HTTP: {{ .Values.storage.s3.allowHttp | toString | quote }}
{{- end -}}

{{- define "purrify.operatorUrl" -}}
{{- if .Values.gateway.config.operatorUrl -}}
{{- .Values.gateway.config.operatorUrl -}}
{{- else if .Values.operator.enabled -}}
http://{{ include "purrify.operator.fullname" . }}.{{ .Release.Namespace }}.svc:{{ .Values.operator.port }}
{{- end -}}
{{- end -}}

{{- define "purrify.trustForwardedFor" -}}
{{- if kindIs "bool" .Values.gateway.config.trustForwardedFor -}}
{{- .Values.gateway.config.trustForwardedFor -}}
{{- else -}}
{{- .Values.ingress.enabled -}}
{{- end -}}
{{- end -}}

{{/*
PURRIFY_PUBLIC_URL: gateway.config.publicUrl, or the Ingress's host (https:// with the chart's TLS,
http:// without); empty when neither, and the variable is then left out.
*/}}
{{- define "purrify.publicUrl" -}}
{{- if .Values.gateway.config.publicUrl -}}
{{- .Values.gateway.config.publicUrl -}}
{{- else if and .Values.ingress.enabled .Values.ingress.host -}}
{{- printf "%s://%s" (ternary "https" "http" .Values.ingress.tls.enabled) .Values.ingress.host -}}
{{- end -}}
{{- end -}}

{{/* Where the WeChat Pay certificates Secret is mounted (WECHAT_CERT_DIR). */}}
{{- define "purrify.wechatPayCertDir" -}}/etc/purrify/wechatpay{{- end -}}

{{/* WECHAT_NOTIFY_URL: gateway.wechatPay.notifyUrl, or the notify route on ingress.host. */}}
{{- define "purrify.wechatPayNotifyUrl" -}}
{{- if .Values.gateway.wechatPay.notifyUrl -}}
{{- .Values.gateway.wechatPay.notifyUrl -}}
{{- else if .Values.ingress.host -}}
{{- printf "https://%s/api/wechat/pay/notify/" .Values.ingress.host -}}
{{- else -}}
{{- fail "gateway.wechatPay.notifyUrl: set it, or ingress.host to derive it (https://<host>/api/wechat/pay/notify/); WeChat posts payment notifications there" -}}
{{- end -}}
{{- end -}}

{{/* WECHAT_MCH_ID: a number in the values (1900000109) printed as one, not as 1.900000109e+09. */}}
{{- define "purrify.wechatPayMchId" -}}
{{- $id := .Values.gateway.wechatPay.mchId -}}
{{- ternary $id ($id | int64 | toString) (kindIs "string" $id) -}}
{{- end -}}
