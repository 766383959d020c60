{{/*
Naming, labels, images and the per-stage logic shared by every template.
The pod and PyTorchJob bodies live in _pytorchjob.tpl; this file holds what they and the other objects share.
*/}}

{{/* Chart name (nameOverride wins), a 63-character DNS label. */}}
{{- define "lift.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name prefix of every object: fullnameOverride, else RELEASE-NAME (or RELEASE if it contains NAME); 63 chars. */}}
{{- define "lift.fullname" -}}
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

{{/* Chart name and version for the helm.sh/chart label. */}}
{{- define "lift.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select this release's pods (NetworkPolicy, `kubectl -l`); never change them between upgrades. */}}
{{- define "lift.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lift.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Standard labels of every object: selector labels, version, chart, manager, part-of and commonLabels. */}}
{{- define "lift.labels" -}}
helm.sh/chart: {{ include "lift.chart" . }}
{{ include "lift.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lift
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels of a stage's job (PyTorchJob, TrainJob, TrainingRuntime): the standard ones, the stage, and Kueue's queue
and WorkloadPriorityClass when set. Kueue reads them on the job only; the pods do not carry them (Kueue's pod
integration would otherwise queue each pod a second time). Call with (dict "root" $ "name" STAGE "stage" MERGED).
*/}}
{{- define "lift.jobLabels" -}}
{{ include "lift.labels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- with .root.Values.queue }}
kueue.x-k8s.io/queue-name: {{ . }}
{{- end }}
{{- with .stage.workloadPriorityClass }}
kueue.x-k8s.io/priority-class: {{ . }}
{{- end }}
{{- end }}

{{/* Where the credentials Secret is mounted (storage.secret.mount file). */}}
{{- define "lift.credentialsDir" -}}
/var/run/secrets/lift
{{- end }}

{{/* Name of the ServiceAccount the stage pods run as. */}}
{{- define "lift.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lift.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: REGISTRY/REPOSITORY@DIGEST when a digest is set, else REGISTRY/REPOSITORY:TAG (appVersion by default). */}}
{{- define "lift.image" -}}
{{- $img := .Values.image }}
{{- $repo := ternary (printf "%s/%s" $img.registry $img.repository) $img.repository (ne $img.registry "") }}
{{- if $img.digest }}
{{- printf "%s@%s" $repo $img.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{/*
The pipeline's cluster stages in order, from lift's stage registry (lift/stages/__init__.py) as
scripts/render-manifests.py writes it to files/stages.json: a JSON list of {name, output, inputs}, inputs being
[[config key, folder under RUN whose _SUCCESS marks it]]. Call with the root context; read with fromJsonArray.
*/}}
{{- define "lift.stages" -}}
{{- $stages := .Files.Get "files/stages.json" | fromJsonArray }}
{{- if not (and $stages (kindIs "map" (first $stages))) }}
{{- fail "lift chart: files/stages.json is missing or not a JSON list of stages; run scripts/render-manifests.py" }}
{{- end }}
{{- toJson $stages }}
{{- end }}

{{/* The pipeline's stage names in order, as a JSON list (`include "lift.stageNames" . | fromJsonArray`). */}}
{{- define "lift.stageNames" -}}
{{- $names := list }}
{{- range $stage := include "lift.stages" . | fromJsonArray }}
{{- $names = append $names $stage.name }}
{{- end }}
{{- toJson $names }}
{{- end }}

{{/*
Name of a stage's PyTorchJob: FULLNAME-STAGE, with FULLNAME cut so the whole stays within 52 characters. The
operator names pods and Services JOB-worker-N, and a Service name must be a DNS-1035 label of at most 63.
Call with (dict "root" $ "name" STAGE).
*/}}
{{- define "lift.jobName" -}}
{{- $max := sub 51 (len .name) | int }}
{{- printf "%s-%s" (include "lift.fullname" .root | trunc $max | trimSuffix "-") .name }}
{{- end }}

{{/*
Deep merge of two maps, in place into .dst: non-empty nested maps are merged key by key; every other value of
.src (lists, {}, false, 0 and "" included) replaces the one in .dst, so {} clears a map. Sprig's mergeOverwrite
cannot be used here: it skips "empty" values, so a stage could not set gpus: 0 or suspend: false.
*/}}
{{- define "lift.merge" -}}
{{- $dst := .dst }}
{{- range $key, $value := .src }}
{{- if and (kindIs "map" $value) $value (kindIs "map" (get $dst $key)) }}
{{- include "lift.merge" (dict "dst" (get $dst $key) "src" $value) }}
{{- else if kindIs "invalid" $value }}
{{- $_ := set $dst $key $value }}
{{- else }}
{{- $_ := set $dst $key (deepCopy $value) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A stage's effective settings as JSON: `defaults` overridden by the stage's own block. The groups resources,
runPolicy and elastic are merged key by key; any other key the stage sets (nodeSelector, tolerations, affinity,
...) replaces the default whole, so a stage can also clear it with {} or []. The data stage runs one process on
one node, never elastic. Call with (dict "root" $ "name" STAGE); read with fromJson.
*/}}
{{- define "lift.stage" -}}
{{- $stage := deepCopy .root.Values.defaults }}
{{- range $key, $value := index .root.Values.stages .name }}
{{- if and (has $key (list "resources" "runPolicy" "elastic")) (kindIs "map" $value) }}
{{- include "lift.merge" (dict "dst" (get $stage $key) "src" $value) }}
{{- else }}
{{- $_ := set $stage $key $value }}
{{- end }}
{{- end }}
{{- if eq .name "data" }}
{{- $_ := set $stage "nodes" 1 }}
{{- $_ := set $stage "nprocPerNode" 1 }}
{{- $_ := set $stage "elastic" (dict "enabled" false) }}
{{- end }}
{{- toJson $stage }}
{{- end }}

{{/* A stage's config file (/etc/lift/STAGE.yaml): `run` plus the stage's `config` map. Call with (dict "root" $ "name" STAGE). */}}
{{- define "lift.stageConfig" -}}
{{- $cfg := dict "run" .root.Values.run }}
{{- include "lift.merge" (dict "dst" $cfg "src" (index .root.Values.stages .name).config) }}
{{- toYaml $cfg }}
{{- end }}

{{/*
URLs whose `_SUCCESS` markers a stage waits for before it starts, as a JSON list: the registry's inputs of the
stage (when waitForInputs) then the stage's waitFor, without duplicates. A stage waits for an input only while its
config leaves that key at lift's default (which lies under RUN); an input pointed elsewhere (a hub id, another run)
is taken as ready. The base T2V model has no marker to wait for. Call with (dict "root" $ "name" STAGE "stage" MERGED).
*/}}
{{- define "lift.waitUrls" -}}
{{- $run := trimSuffix "/" .root.Values.run }}
{{- $config := (index .root.Values.stages .name).config | default dict }}
{{- $urls := list }}
{{- if .stage.waitForInputs }}
{{- $inputs := list }}
{{- range $entry := include "lift.stages" .root | fromJsonArray }}
{{- if eq $entry.name $.name }}
{{- $inputs = $entry.inputs }}
{{- end }}
{{- end }}
{{- range $input := $inputs }}
{{- $node := $config }}
{{- $set := true }}
{{- range $part := splitList "." (index $input 0) }}
{{- if and (kindIs "map" $node) (hasKey $node $part) }}
{{- $node = get $node $part }}
{{- else }}
{{- $set = false }}
{{- end }}
{{- end }}
{{- if not $set }}
{{- $urls = append $urls (printf "%s/%s" $run (index $input 1)) }}
{{- end }}
{{- end }}
{{- end }}
{{- range .stage.waitFor }}
{{- $urls = append $urls (replace "${run}" $run .) }}
{{- end }}
{{- $urls | uniq | toJson }}
{{- end }}

{{/*
Cross-field checks the JSON schema cannot express; each failure says which value to change. Renders nothing.
*/}}
{{- define "lift.validateValues" -}}
{{- $root := . }}
{{- $errors := list }}
{{- if and (not .Values.serviceAccount.create) (not .Values.serviceAccount.name) }}
{{- $errors = append $errors "serviceAccount.name: required when serviceAccount.create is false (the existing account to run as)" }}
{{- end }}
{{- $enabled := list }}
{{- range $name := include "lift.stageNames" . | fromJsonArray }}
{{- $stage := include "lift.stage" (dict "root" $root "name" $name) | fromJson }}
{{- if $stage.enabled }}
{{- $enabled = append $enabled $name }}
{{- $job := include "lift.jobName" (dict "root" $root "name" $name) }}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $job) }}
{{- $errors = append $errors (printf "release name: the job name %q is not a DNS-1035 label (lowercase letters, digits and '-', starting with a letter); use another release name or fullnameOverride" $job) }}
{{- end }}
{{- $nodes := int $stage.nodes }}
{{- if $stage.elastic.enabled }}
{{- $min := int (default $nodes $stage.elastic.minNodes) }}
{{- $max := int (default $nodes $stage.elastic.maxNodes) }}
{{- if lt $nodes 2 }}
{{- $errors = append $errors (printf "stages.%s.elastic.enabled: an elastic job needs nodes >= 2 (the operator requires a Worker replica), got nodes=%d" $name $nodes) }}
{{- end }}
{{- if or (gt $min $nodes) (lt $max $nodes) }}
{{- $errors = append $errors (printf "stages.%s.elastic: need minNodes <= nodes <= maxNodes, got %d <= %d <= %d" $name $min $nodes $max) }}
{{- end }}
{{- end }}
{{- $gpus := int $stage.resources.gpus }}
{{- if and (kindIs "float64" $stage.nprocPerNode) (gt $gpus 0) (gt (int $stage.nprocPerNode) $gpus) }}
{{- $errors = append $errors (printf "stages.%s.nprocPerNode: %d processes per node but only %d GPUs; use at most one process per GPU" $name (int $stage.nprocPerNode) $gpus) }}
{{- end }}
{{- if eq $name "data" }}
{{- $config := $stage.config | default dict }}
{{- if eq (default "toy" $config.source) "import" }}
{{- $release := $config.release | default dict }}
{{- if or (not $release.json) (not $release.videos) }}
{{- $errors = append $errors "stages.data.config.release.json and .videos: both are required when stages.data.config.source is import" }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if not $enabled }}
{{- $errors = append $errors "stages: no stage is enabled; set stages.STAGE.enabled=true for at least one" }}
{{- end }}
{{- if $errors }}
{{- fail (printf "\n\nlift chart: invalid values:\n  - %s\n" (join "\n  - " $errors)) }}
{{- end }}
{{- end }}
