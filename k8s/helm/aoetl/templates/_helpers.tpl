{{/*
Shared pieces of the aoetl chart. Names and labels are those of the plain manifests in k8s/ (rendered from
this chart by `make k8s-render`): the NetworkPolicies select pods by these labels, so one release per
namespace.
*/}}

{{- define "aoetl.labels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/part-of: aoetl
{{- end }}

{{/* The pod labels the NetworkPolicies select on (networkpolicies.yaml). */}}
{{- define "aoetl.podLabels" -}}
{{ include "aoetl.labels" . }}
aoetl.io/component: service
aoetl.io/kafka-client: "true"
{{- if .svc.usesPostgres }}
aoetl.io/uses-postgres: "true"
{{- end }}
{{- if .svc.egressInternet }}
aoetl.io/egress: internet
{{- end }}
{{- if .svc.usesObjectStore }}
aoetl.io/uses-object-store: "true"
{{- end }}
{{- end }}

{{/* The spec policy's connections: `default` (the PostgreSQL DSN) and, when enabled, the object store's. */}}
{{- define "aoetl.policyConnections" -}}
{{- $store := .Values.objectStore }}
{{- $connections := dict "default" (dict "env" "AOETL_POSTGRES_DSN") }}
{{- $lake := dict "kind" "s3" "env" "AOETL_OBJECT_STORE_CREDENTIALS" "region" $store.region "roots" $store.roots "tenants" $store.tenants }}
{{- if $store.endpoint }}
{{- $_ := set $lake "endpoint" $store.endpoint }}
{{- end }}
{{- $_ := set $connections $store.connection $lake }}
{{- toJson $connections }}
{{- end }}

{{/* The object store's endpoint as an egress allow-list entry (host:port). */}}
{{- define "aoetl.objectStoreAllow" -}}
{{- $url := urlParse .Values.objectStore.endpoint }}
{{- $host := $url.host }}
{{- if not (contains ":" $host) }}
{{- $host = printf "%s:%s" $host (ternary "443" "80" (eq $url.scheme "https")) }}
{{- end }}
{{- $host }}
{{- end }}

{{- define "aoetl.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end }}

{{- define "aoetl.saslEnabled" -}}
{{- if hasPrefix "SASL" .Values.kafka.securityProtocol }}true{{ end }}
{{- end }}

{{/* Pod Security "restricted": non-root, RuntimeDefault seccomp (k8s/namespace.yaml enforces it). */}}
{{- define "aoetl.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurity.runAsUser }}
runAsGroup: {{ .Values.podSecurity.runAsGroup }}
fsGroup: {{ .Values.podSecurity.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "aoetl.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurity.runAsUser }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
  - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
The Kafka credentials of one client (dict: root, username): the SASL password by reference only.
*/}}
{{- define "aoetl.kafkaAuthEnv" -}}
{{- if include "aoetl.saslEnabled" .root }}
- name: AOETL_KAFKA_SASL_USERNAME
  value: {{ .username | quote }}
- name: AOETL_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .root.Values.kafka.passwordsSecret }}
      key: {{ .username }}
{{- end }}
{{- end }}

{{/* Volumes every aoetl pod has: /tmp (the root filesystem is read-only) and the Kafka CA, if any. */}}
{{- define "aoetl.commonVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- if .Values.kafka.caSecret.name }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.caSecret.name }}
    defaultMode: 0444
{{- end }}
{{- end }}

{{- define "aoetl.commonMounts" -}}
- name: tmp  # Python's temporary files, the monitor's faust directory
  mountPath: /tmp
{{- if .Values.kafka.caSecret.name }}
- name: kafka-ca
  mountPath: /etc/aoetl/kafka-ca
  readOnly: true
{{- end }}
{{- end }}

{{/* The smallest partition count of a service's input topics: no autoscaler goes beyond it. */}}
{{- define "aoetl.partitionBound" -}}
{{- $bound := 0 }}
{{- range .consumer.topics }}
{{- if or (eq $bound 0) (lt (int .partitions) $bound) }}{{ $bound = int .partitions }}{{ end }}
{{- end }}
{{- $bound }}
{{- end }}

{{/* The autoscaler's maximum (dict: name, svc): refused above the partition bound rather than clipped. */}}
{{- define "aoetl.maxReplicas" -}}
{{- $bound := include "aoetl.partitionBound" .svc | int }}
{{- $max := .svc.autoscaling.maxReplicas | int }}
{{- if gt $max $bound }}
{{- fail (printf "services.%s.autoscaling.maxReplicas (%d) exceeds the %d partitions of its input topics: the replicas beyond would sit idle" .name $max $bound) }}
{{- end }}
{{- $max }}
{{- end }}

{{- define "aoetl.autoscaled" -}}
{{- if and .svc.autoscaling.enabled .svc.consumer }}true{{ end }}
{{- end }}
