{{/*
A stage as a Kubeflow Trainer v2 TrainJob (trainer.kubeflow.org/v1alpha1), the second renderer of the stage pod
lift.podTemplate (_pytorchjob.tpl): its container's image, command, env and resources become spec.trainer, and the
rest of the pod reaches the runtime's `node` pods in one of two ways:

- trainJob.runtime.create false (default): the TrainJob references the ClusterTrainingRuntime
  trainJob.runtime.name (Trainer's `torch-distributed`) and patches its pods through spec.runtimePatches with what
  Trainer v2.3.0 lets a patch set: labels, annotations, security contexts, service account, node selector,
  tolerations, affinity, image pull secrets, volumes and mounts. A patch cannot add an init container with a command,
  so the wait for the inputs' _SUCCESS markers runs first in the node's own command (`lift wait ... && exec`); nor
  set automountServiceAccountToken, imagePullPolicy or priorityClassName (the ServiceAccount's automount setting
  applies; image.digest pins the image; priority comes from Kueue's workloadPriorityClass).
- trainJob.runtime.create true: the chart renders one TrainingRuntime per stage holding the whole stage pod (the
  wait-inputs init container, priorityClassName, no API token, restart policy, backoffLimit) and the TrainJob
  references it.

torchrun reads the PET_* variables the torch plugin sets (PET_NNODES, PET_NODE_RANK, PET_MASTER_ADDR/PORT,
PET_NPROC_PER_NODE). Trainer v2.3.0's torch policy has no elastic settings, so an elastic stage passes torchrun's
own flags: nnodes MIN:MAX and a c10d rendezvous at node 0.
Call with (dict "root" $ "name" STAGE); renders nothing when the stage is disabled.
*/}}
{{- define "lift.trainjob" -}}
{{- $root := .root }}
{{- $stage := include "lift.stage" . | fromJson }}
{{- if $stage.enabled }}
{{- $ctx := dict "root" $root "name" .name "stage" $stage }}
{{- $jobName := include "lift.jobName" . }}
{{- $own := $root.Values.trainJob.runtime.create }}
{{- $pod := include "lift.podTemplate" (merge (dict "replica" "node") $ctx) | fromYaml }}
{{- $main := first $pod.spec.containers }}
{{- $nodes := int $stage.nodes }}
{{- $nproc := $stage.nprocPerNode }}
{{- if and (kindIs "float64" $nproc) (eq (int $nproc) 0) }}
{{- $nproc = max (int $stage.resources.gpus) 1 }}
{{- end }}
{{- $command := $main.command }}
{{- if $stage.elastic.enabled }}
{{- $e := $stage.elastic }}
{{- $range := printf "%d:%d" (int (default $nodes $e.minNodes)) (int (default $nodes $e.maxNodes)) }}
{{- $endpoint := printf "%s:$(PET_MASTER_PORT)" (default "$(PET_MASTER_ADDR)" $e.rdzvHost) }}
{{- $flags := list "--nnodes" $range "--rdzv-backend" $e.rdzvBackend "--rdzv-endpoint" $endpoint "--rdzv-id" $jobName }}
{{- $flags = concat $flags (list "--max-restarts" (toString (int $e.maxRestarts))) }}
{{- $command = concat (list (first $command)) $flags (rest $command) }}
{{- end }}
{{- $waitUrls := include "lift.waitUrls" $ctx | fromJsonArray }}
{{- if and $waitUrls (not $own) }}
{{- $wait := list "lift" "wait" }}
{{- range $waitUrls }}{{ $wait = append $wait (squote .) }}{{ end }}
{{- $wait = concat $wait (list "--timeout" (toString (int $root.Values.wait.timeoutSeconds))) }}
{{- $wait = concat $wait (list "--interval" (toString (int $root.Values.wait.intervalSeconds))) }}
{{- $command = concat (list "bash" "-c" (printf "%s && exec \"$0\" \"$@\"" (join " " $wait))) $command }}
{{- end }}
{{- $run := $stage.runPolicy }}
{{- $labels := include "lift.jobLabels" $ctx | fromYaml }}
{{- if $own }}
apiVersion: trainer.kubeflow.org/v1alpha1
kind: TrainingRuntime
metadata:
  name: {{ $jobName }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "lift.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .name }}
    trainer.kubeflow.org/framework: torch
spec:
  mlPolicy:
    numNodes: {{ $nodes }}
    torch: {}
  template:
    spec:
      replicatedJobs:
        - name: node
          template:
            metadata:
              labels:
                trainer.kubeflow.org/trainjob-ancestor-step: trainer
            spec:
              backoffLimit: {{ $run.backoffLimit | int }}
              template:
                {{- $_ := set $main "name" "node" }}
                {{- $_ := unset $main "ports" }}
                {{- $restart := ternary "OnFailure" "Never" (eq $stage.restartPolicy "OnFailure") }}
                {{- $_ := set $pod.spec "restartPolicy" $restart }}
                {{- toYaml $pod | nindent 16 }}
---
{{- end }}
apiVersion: trainer.kubeflow.org/v1alpha1
kind: TrainJob
metadata:
  name: {{ $jobName }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- toYaml $labels | nindent 4 }}
spec:
  runtimeRef:
    apiGroup: trainer.kubeflow.org
    kind: {{ ternary "TrainingRuntime" "ClusterTrainingRuntime" $own }}
    name: {{ ternary $jobName $root.Values.trainJob.runtime.name $own }}
  {{- if or $run.suspend $root.Values.queue }}
  suspend: true
  {{- end }}
  {{- if $run.activeDeadlineSeconds }}
  activeDeadlineSeconds: {{ $run.activeDeadlineSeconds | int64 }}
  {{- end }}
  trainer:
    image: {{ $main.image }}
    command:
      {{- toYaml $command | nindent 6 }}
    env:
      {{- toYaml $main.env | nindent 6 }}
    numNodes: {{ $nodes }}
    {{- if regexMatch "^[0-9]+$" (toString $nproc) }}
    numProcPerNode: {{ int $nproc }}
    {{- end }}
    resourcesPerNode:
      {{- toYaml $main.resources | nindent 6 }}
  {{- if not $own }}
  runtimePatches:
    - manager: trainer.kubeflow.org/lift-chart
      trainingRuntimeSpec:
        template:
          spec:
            replicatedJobs:
              - name: node
                template:
                  spec:
                    template:
                      metadata:
                        {{- toYaml $pod.metadata | nindent 24 }}
                      spec:
                        {{- $spec := pick $pod.spec "securityContext" "serviceAccountName" "nodeSelector" "tolerations" }}
                        {{- $spec = merge $spec (pick $pod.spec "affinity" "imagePullSecrets" "volumes") }}
                        {{- $node := dict "name" "node" "securityContext" $main.securityContext }}
                        {{- $_ := set $node "volumeMounts" $main.volumeMounts }}
                        {{- $_ := set $spec "containers" (list $node) }}
                        {{- toYaml $spec | nindent 24 }}
  {{- end }}
{{- end }}
{{- end }}
