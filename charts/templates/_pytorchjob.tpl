{{/*
The PyTorchJob of one stage and the stage pod that both job APIs run (_trainjob.tpl wraps the same pod).
templates/jobs.yaml calls, for each stage,
  include "lift.pytorchjob" (dict "root" $ "name" STAGE)
which renders nothing when the stage is disabled.

Process layout: the Master replica (exactly 1 pod) plus nodes-1 Worker pods, each running torchrun with
nprocPerNode processes. torchrun takes its rendezvous from the PET_* variables the training operator sets
(PET_NNODES, PET_NODE_RANK, PET_MASTER_ADDR/PORT, PET_NPROC_PER_NODE; PET_RDZV_* when elastic), so the command
carries no launcher flags. The data stage is one plain `lift data` process.
*/}}

{{/* The main container's command and arguments, as JSON. Call with (dict "root" $ "name" STAGE "stage" MERGED). */}}
{{- define "lift.command" -}}
{{- $configFile := printf "/etc/lift/%s.yaml" .name }}
{{- $args := list }}
{{- if eq .name "data" }}
{{- $config := .stage.config | default dict }}
{{- $source := default "toy" $config.source }}
{{- $out := default (printf "%s/data" (trimSuffix "/" .root.Values.run)) $config.out }}
{{- $args = list "lift" "data" $source }}
{{- if eq $source "import" }}
{{- $release := $config.release | default dict }}
{{- $args = concat $args (list $release.json $release.videos) }}
{{- end }}
{{- $args = concat $args (list $out "--config" $configFile) }}
{{- else }}
{{- $args = list "torchrun" "--module" "lift" .name "--config" $configFile }}
{{- end }}
{{- if .stage.force }}
{{- $args = append $args "--force" }}
{{- end }}
{{- toJson $args }}
{{- end }}

{{/* Environment of every container: scratch locations, object storage, extraEnv. Call with the root context. */}}
{{- define "lift.env" -}}
{{- $cache := printf "%s/.cache" (trimSuffix "/" .Values.home) -}}
- name: HOME
  value: {{ .Values.home | quote }}
- name: XDG_CACHE_HOME
  value: {{ $cache | quote }}
- name: HF_HOME
  value: {{ printf "%s/huggingface" $cache | quote }}
- name: LIFT_CACHE
  value: {{ printf "%s/lift" $cache | quote }}
- name: TORCH_HOME
  value: {{ printf "%s/torch" $cache | quote }}
- name: TRITON_CACHE_DIR
  value: {{ printf "%s/triton" $cache | quote }}
- name: TORCHINDUCTOR_CACHE_DIR
  value: {{ printf "%s/inductor" $cache | quote }}
- name: MPLCONFIGDIR
  value: {{ printf "%s/matplotlib" $cache | quote }}
- name: TMPDIR
  value: /tmp
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
- name: LIFT_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
{{- with .Values.storage.endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.storage.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- $secret := .Values.storage.secret }}
{{- if and $secret.name (eq $secret.mount "file") }}
{{- if $secret.webIdentityRoleArn }}
- name: AWS_ROLE_ARN
  value: {{ $secret.webIdentityRoleArn | quote }}
- name: AWS_WEB_IDENTITY_TOKEN_FILE
  value: {{ printf "%s/token" (include "lift.credentialsDir" .) | quote }}
{{- else }}
- name: AWS_SHARED_CREDENTIALS_FILE
  value: {{ printf "%s/credentials" (include "lift.credentialsDir" .) | quote }}
{{- end }}
{{- else if $secret.name }}
{{- range $var, $key := dict "AWS_ACCESS_KEY_ID" $secret.accessKeyIdKey "AWS_SECRET_ACCESS_KEY" $secret.secretAccessKeyKey "AWS_SESSION_TOKEN" $secret.sessionTokenKey }}
{{- if $key }}
- name: {{ $var }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret.name | quote }}
      key: {{ $key | quote }}
      optional: {{ $secret.optional }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Volume mounts of every container. Call with the root context. */}}
{{- define "lift.volumeMounts" -}}
- name: config
  mountPath: /etc/lift
  readOnly: true
- name: tmp
  mountPath: /tmp
- name: cache
  mountPath: {{ printf "%s/.cache" (trimSuffix "/" .Values.home) | quote }}
- name: dshm
  mountPath: /dev/shm
{{- if and .Values.storage.secret.name (eq .Values.storage.secret.mount "file") }}
- name: credentials
  mountPath: {{ include "lift.credentialsDir" . }}
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* One replica's pod template. Call with (dict "root" $ "name" STAGE "stage" MERGED "replica" master|worker). */}}
{{- define "lift.podTemplate" -}}
{{- $root := .root }}
{{- $stage := .stage }}
{{- $waitUrls := include "lift.waitUrls" . | fromJsonArray }}
{{- $command := include "lift.command" . | fromJsonArray -}}
metadata:
  labels:
    {{- include "lift.selectorLabels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .name }}
    app.kubernetes.io/part-of: lift
    {{- with $root.Values.commonLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
    {{- with $stage.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $stage.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  serviceAccountName: {{ include "lift.serviceAccountName" $root }}
  automountServiceAccountToken: {{ $root.Values.serviceAccount.automountToken }}
  {{- with $stage.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- range . }}
    {{- if kindIs "map" . }}
    - name: {{ .name }}
    {{- else }}
    - name: {{ . }}
    {{- end }}
    {{- end }}
  {{- end }}
  {{- with $stage.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $stage.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $stage.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if $waitUrls }}
  initContainers:
    # Blocks until every input's _SUCCESS marker exists, so the stages of one install run in pipeline order.
    - name: wait-inputs
      image: {{ include "lift.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      command:
        - lift
        - wait
        {{- range $waitUrls }}
        - {{ . | quote }}
        {{- end }}
        - --timeout
        - {{ $root.Values.wait.timeoutSeconds | int | quote }}
        - --interval
        - {{ $root.Values.wait.intervalSeconds | int | quote }}
      env:
        {{- include "lift.env" $root | nindent 8 }}
      resources:
        {{- toYaml $root.Values.wait.resources | nindent 8 }}
      securityContext:
        {{- toYaml $root.Values.securityContext | nindent 8 }}
      volumeMounts:
        {{- include "lift.volumeMounts" $root | nindent 8 }}
  {{- end }}
  containers:
    # The training operator requires this name.
    - name: pytorch
      image: {{ include "lift.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      command:
        {{- range $command }}
        - {{ . | quote }}
        {{- end }}
      env:
        {{- include "lift.env" $root | nindent 8 }}
      ports:
        # The operator's default port for the c10d master store (PET_MASTER_PORT).
        - name: pytorchjob-port
          containerPort: 23456
          protocol: TCP
      resources:
        {{- $res := $stage.resources }}
        {{- $gpus := int $res.gpus }}
        requests:
          cpu: {{ $res.cpu | quote }}
          memory: {{ $res.memory | quote }}
          {{- with $res.ephemeralStorage }}
          ephemeral-storage: {{ . | quote }}
          {{- end }}
          {{- if gt $gpus 0 }}
          {{ $root.Values.gpuResourceName }}: {{ $gpus | quote }}
          {{- end }}
        limits:
          cpu: {{ $res.cpu | quote }}
          memory: {{ $res.memory | quote }}
          {{- with $res.ephemeralStorage }}
          ephemeral-storage: {{ . | quote }}
          {{- end }}
          {{- if gt $gpus 0 }}
          {{ $root.Values.gpuResourceName }}: {{ $gpus | quote }}
          {{- end }}
      securityContext:
        {{- toYaml $root.Values.securityContext | nindent 8 }}
      volumeMounts:
        {{- include "lift.volumeMounts" $root | nindent 8 }}
  volumes:
    - name: config
      configMap:
        name: {{ include "lift.fullname" $root }}-config
        items:
          - key: {{ printf "%s.yaml" .name }}
            path: {{ printf "%s.yaml" .name }}
    - name: tmp
      emptyDir:
        sizeLimit: {{ $stage.tmpSizeLimit | quote }}
    - name: cache
      emptyDir:
        sizeLimit: {{ $stage.cacheSizeLimit | quote }}
    - name: dshm
      emptyDir:
        medium: Memory
        sizeLimit: {{ $stage.shmSizeLimit | quote }}
    {{- $secret := $root.Values.storage.secret }}
    {{- if and $secret.name (eq $secret.mount "file") }}
    # The credentials Secret as read-only files (group-readable through fsGroup), never as environment variables.
    - name: credentials
      secret:
        secretName: {{ $secret.name | quote }}
        defaultMode: 288
        optional: {{ $secret.optional }}
        items:
          - key: {{ $secret.credentialsKey | quote }}
            path: {{ ternary "token" "credentials" (ne $secret.webIdentityRoleArn "") }}
    {{- end }}
    {{- with $root.Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{/* A stage's PyTorchJob, or nothing when the stage is disabled. Call with (dict "root" $ "name" STAGE). */}}
{{- define "lift.pytorchjob" -}}
{{- $root := .root }}
{{- $stage := include "lift.stage" . | fromJson }}
{{- if $stage.enabled }}
{{- $ctx := dict "root" $root "name" .name "stage" $stage }}
{{- $nodes := int $stage.nodes }}
{{- $gpus := int $stage.resources.gpus }}
{{- $nproc := $stage.nprocPerNode }}
{{- if and (kindIs "float64" $nproc) (eq (int $nproc) 0) }}
{{- $nproc = max $gpus 1 }}
{{- end }}
{{- $run := $stage.runPolicy }}
apiVersion: kubeflow.org/v1
kind: PyTorchJob
metadata:
  name: {{ include "lift.jobName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "lift.jobLabels" (dict "root" $root "name" .name "stage" $stage) | nindent 4 }}
spec:
  nprocPerNode: {{ $nproc | toString | quote }}
  {{- if $stage.elastic.enabled }}
  {{- $e := $stage.elastic }}
  elasticPolicy:
    minReplicas: {{ default $nodes $e.minNodes | int }}
    maxReplicas: {{ default $nodes $e.maxNodes | int }}
    maxRestarts: {{ $e.maxRestarts | int }}
    rdzvBackend: {{ $e.rdzvBackend }}
    rdzvPort: {{ $e.rdzvPort | int }}
    {{- with $e.rdzvHost }}
    rdzvHost: {{ . }}
    {{- end }}
  {{- end }}
  runPolicy:
    cleanPodPolicy: {{ $run.cleanPodPolicy }}
    backoffLimit: {{ $run.backoffLimit | int }}
    {{- if $run.ttlSecondsAfterFinished }}
    ttlSecondsAfterFinished: {{ $run.ttlSecondsAfterFinished | int }}
    {{- end }}
    {{- if $run.activeDeadlineSeconds }}
    activeDeadlineSeconds: {{ $run.activeDeadlineSeconds | int64 }}
    {{- end }}
    suspend: {{ or $run.suspend (ne $root.Values.queue "") }}
    {{- with $run.schedulingPolicy }}
    schedulingPolicy:
      {{- toYaml . | nindent 6 }}
    {{- end }}
  pytorchReplicaSpecs:
    Master:
      replicas: 1
      restartPolicy: {{ $stage.restartPolicy }}
      template:
        {{- include "lift.podTemplate" (merge (dict "replica" "master") $ctx) | nindent 8 }}
    {{- if gt $nodes 1 }}
    Worker:
      replicas: {{ sub $nodes 1 }}
      restartPolicy: {{ $stage.restartPolicy }}
      template:
        {{- include "lift.podTemplate" (merge (dict "replica" "worker") $ctx) | nindent 8 }}
    {{- end }}
{{- end }}
{{- end }}
