{{/* Names */}}
{{- define "crossfade.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "crossfade.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "crossfade.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "crossfade.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "crossfade.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels */}}
{{- define "crossfade.selectorLabels" -}}
app.kubernetes.io/name: {{ include "crossfade.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "crossfade.labels" -}}
helm.sh/chart: {{ include "crossfade.chart" . }}
{{ include "crossfade.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: crossfade
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of one component: (dict "ctx" $ "component" "sync") */}}
{{- define "crossfade.componentLabels" -}}
{{ include "crossfade.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "crossfade.componentSelectorLabels" -}}
{{ include "crossfade.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "crossfade.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "crossfade.configPath" -}}/etc/crossfade/crossfade.yaml{{- end -}}

{{/*
crossfade.yaml: the `config` values as they are (one to one with crossfade's Settings).
Secrets are not in it: see crossfade.secretEnv.
*/}}
{{- define "crossfade.configYaml" -}}
{{- if .Values.mappingFile }}
{{ toYaml (set (deepCopy .Values.config) "mapping" "mapping.yaml") }}
{{- else }}
{{ toYaml .Values.config }}
{{- end }}
{{- end -}}

{{/* Environment shared by every crossfade container: config path, secrets, extras. */}}
{{- define "crossfade.env" -}}
- name: CROSSFADE_CONFIG
  value: {{ include "crossfade.configPath" . }}
- name: HOME
  value: /tmp
- name: CROSSFADE_SOURCE__DSN
  valueFrom:
    secretKeyRef:
      name: {{ required "secrets.sourceDsn.name: name an existing Secret holding the legacy database DSN" .Values.secrets.sourceDsn.name }}
      key: {{ .Values.secrets.sourceDsn.key }}
- name: CROSSFADE_TARGET__DSN
  valueFrom:
    secretKeyRef:
      name: {{ required "secrets.targetDsn.name: name an existing Secret holding the new database DSN" .Values.secrets.targetDsn.name }}
      key: {{ .Values.secrets.targetDsn.key }}
{{- range $env, $ref := dict "CROSSFADE_KAFKA__SASL_PASSWORD" .Values.secrets.kafkaSaslPassword "CROSSFADE_KAFKA__SCHEMA_REGISTRY_URL" .Values.secrets.schemaRegistryUrl "CROSSFADE_CUTOVER__FLIP_HTTP" .Values.secrets.cutoverFlipHttp "CROSSFADE_CONNECT_URL" .Values.secrets.kafkaConnectUrl }}
{{- if $ref.name }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.name }}
      key: {{ $ref.key }}
{{- end }}
{{- end }}
{{- range $prop, $ref := .Values.secrets.kafkaExtra }}
- name: CROSSFADE_KAFKA__EXTRA__{{ $prop }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.name }}
      key: {{ $ref.key }}
{{- end }}
{{- range $prop, $ref := .Values.secrets.captureProperties }}
- name: CROSSFADE_CAPTURE__PROPERTIES__{{ $prop }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.name }}
      key: {{ $ref.key }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Pod annotations: roll the pods when crossfade.yaml (or the mapping file) changes. */}}
{{- define "crossfade.podAnnotations" -}}
checksum/config: {{ printf "%s\n%s" (include "crossfade.configYaml" .) (.Values.mappingFile | default "") | sha256sum }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "crossfade.metricsPort" -}}
{{- required "config.ops.metrics_port must be set: the probes and the ServiceMonitor use it" .Values.config.ops.metrics_port -}}
{{- end -}}

{{/*
Probes on /healthz (liveness, startup) and /readyz (readiness) on the `metrics` port.
Takes the root context, or (dict "Values" .Values "port" NAME "ready" PATH) to change both.
*/}}
{{- define "crossfade.probes" -}}
{{- $port := .port | default "metrics" -}}
{{- $ready := .ready | default "/readyz" -}}
startupProbe:
  httpGet:
    path: /healthz
    port: {{ $port }}
  periodSeconds: {{ .Values.probes.startup.periodSeconds }}
  timeoutSeconds: {{ .Values.probes.startup.timeoutSeconds }}
  failureThreshold: {{ .Values.probes.startup.failureThreshold }}
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ $port }}
  initialDelaySeconds: {{ .Values.probes.liveness.initialDelaySeconds }}
  periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
  timeoutSeconds: {{ .Values.probes.liveness.timeoutSeconds }}
  failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
readinessProbe:
  httpGet:
    path: {{ $ready }}
    port: {{ $port }}
  initialDelaySeconds: {{ .Values.probes.readiness.initialDelaySeconds }}
  periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
  timeoutSeconds: {{ .Values.probes.readiness.timeoutSeconds }}
  failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
{{- end -}}

{{/* Volumes every crossfade pod mounts: the config and a writable /tmp. */}}
{{- define "crossfade.volumes" -}}
- name: config
  configMap:
    name: {{ include "crossfade.fullname" . }}-config
- name: tmp
  emptyDir: {}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "crossfade.volumeMounts" -}}
- name: config
  mountPath: /etc/crossfade
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "crossfade.podSpecCommon" -}}
serviceAccountName: {{ include "crossfade.serviceAccountName" . }}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{ toYaml . }}
{{- end }}
securityContext:
{{ toYaml .Values.podSecurityContext | indent 2 }}
{{- end -}}

{{/* Scheduling fields of one component's values: (dict "v" .Values.sync) */}}
{{- define "crossfade.scheduling" -}}
{{- with .v.nodeSelector }}
nodeSelector:
{{ toYaml . | indent 2 }}
{{- end }}
{{- with .v.tolerations }}
tolerations:
{{ toYaml . | indent 2 }}
{{- end }}
{{- with .v.affinity }}
affinity:
{{ toYaml . | indent 2 }}
{{- end }}
{{- with .v.topologySpreadConstraints }}
topologySpreadConstraints:
{{ toYaml . | indent 2 }}
{{- end }}
{{- end -}}

{{/* Checks that span several values (the schema checks each value alone). */}}
{{- define "crossfade.validate" -}}
{{- if kindIs "string" .Values.config.mapping -}}
{{- fail (printf "config.mapping names a file (%s), which the chart cannot read from your disk: pass its content with `--set-file mappingFile=%s` and leave config.mapping unset, or put the mapping itself (the file's content) under config.mapping" .Values.config.mapping .Values.config.mapping) -}}
{{- end -}}
{{- if and .Values.mappingFile .Values.config.mapping -}}
{{- fail "both mappingFile and config.mapping are set: keep one (mappingFile holds the mapping file's content, config.mapping the mapping itself)" -}}
{{- end -}}
{{- if .Values.mappingFile -}}
{{- $m := fromYaml .Values.mappingFile -}}
{{- if hasKey $m "Error" -}}
{{- fail (printf "mappingFile is not YAML: %s" (get $m "Error")) -}}
{{- end -}}
{{- end -}}
{{- if gt (int .Values.sync.replicas) (int .Values.config.kafka.partitions) -}}
{{- fail (printf "sync.replicas (%d) is more than config.kafka.partitions (%d): the extra workers would get no partition and never become ready" (int .Values.sync.replicas) (int .Values.config.kafka.partitions)) -}}
{{- end -}}
{{- if and (eq .Values.capture.mode "kafkaConnect") (not .Values.config.kafka.schema_registry_url) (not .Values.secrets.schemaRegistryUrl.name) -}}
{{- fail "capture.mode=kafkaConnect needs config.kafka.schema_registry_url (or secrets.schemaRegistryUrl): Kafka Connect writes Confluent-framed Avro through the Schema Registry and sync reads it back from there" -}}
{{- end -}}
{{- if and .Values.persistence.enabled (ne .Values.capture.mode "embedded") -}}
{{- fail "persistence.enabled keeps embedded Debezium's offsets; with capture.mode=kafkaConnect, Kafka Connect keeps them in Kafka: turn persistence off" -}}
{{- end -}}
{{- end -}}

{{/* Strimzi: a KafkaTopic's resource name for a topic name (lower case, no "_", unique by a hash). */}}
{{- define "crossfade.topicResourceName" -}}
{{- $base := regexReplaceAll "[^a-z0-9]+" (lower .topic) "-" | trunc 200 | trimAll "-" -}}
{{- printf "%s-%s" $base (sha256sum .topic | trunc 8) -}}
{{- end -}}

{{/* Whether crossfade's events travel without a Schema Registry (schemas in <prefix>.__schemas). */}}
{{- define "crossfade.registryless" -}}
{{- if not (or .Values.config.kafka.schema_registry_url .Values.secrets.schemaRegistryUrl.name) -}}true{{- end -}}
{{- end -}}

{{/*
The Debezium connector's properties for Strimzi's KafkaConnector: what `crossfade connector
render` prints for this config (crossfade/capture/connector.py, kafka_connect_config), but the
database's address, which comes from strimzi.kafkaConnector.database (the DSN is a Secret).
tests/deploy/test_helm_chart.py keeps the two equal.
*/}}
{{- define "crossfade.connectorConfig" -}}
{{- $c := .Values.config -}}
{{- $db := .Values.strimzi.kafkaConnector.database -}}
{{- $tables := $c.tables -}}
{{- if $c.capture.fence_table }}{{ $tables = append $tables "crossfade.fence" }}{{ end -}}
{{- if $c.capture.signal_table }}{{ $tables = append $tables "crossfade.debezium_signal" }}{{ end -}}
{{- $registry := required "strimzi.kafkaConnector needs config.kafka.schema_registry_url (without credentials): the KafkaConnector's converters write through it" $c.kafka.schema_registry_url -}}
{{- $props := dict
  "topic.prefix" $c.kafka.topic_prefix
  "plugin.name" "pgoutput"
  "slot.name" $c.capture.slot_name
  "publication.name" $c.capture.publication_name
  "publication.autocreate.mode" "filtered"
  "table.include.list" (join "," $tables)
  "snapshot.mode" $c.capture.snapshot_mode
  "decimal.handling.mode" "string"
  "interval.handling.mode" "string"
  "time.precision.mode" "adaptive_time_microseconds"
  "binary.handling.mode" "bytes"
  "hstore.handling.mode" "json"
  "skipped.operations" "none"
  "tombstones.on.delete" "true"
  "heartbeat.interval.ms" (toString (int $c.capture.heartbeat_interval_ms))
  "include.unknown.datatypes" "false"
  "unavailable.value.placeholder" "__debezium_unavailable_value"
  "max.batch.size" "4096"
  "max.queue.size" "8192"
  "poll.interval.ms" "10"
  "database.hostname" $db.hostname
  "database.port" (toString (int $db.port))
  "database.user" $db.user
  "database.dbname" $db.dbname
  "database.password" "${env:CROSSFADE_SOURCE_PASSWORD}"
  "key.converter" "io.confluent.connect.avro.AvroConverter"
  "key.converter.schema.registry.url" $registry
  "value.converter" "io.confluent.connect.avro.AvroConverter"
  "value.converter.schema.registry.url" $registry
-}}
{{- if $c.capture.signal_table }}{{ $_ := set $props "signal.data.collection" "crossfade.debezium_signal" }}{{ end -}}
{{- range $k, $v := $c.capture.properties }}{{ $_ := set $props $k (toString $v) }}{{ end -}}
{{- range $k, $_ := .Values.secrets.captureProperties }}
{{- $_ := set $props $k (printf "${env:CROSSFADE_CONNECT_%s}" (regexReplaceAll "[^A-Za-z0-9]+" $k "_" | trimAll "_" | upper)) }}
{{- end -}}
{{- toYaml $props -}}
{{- end -}}
