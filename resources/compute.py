"""Where training runs. The asset is the same for every backend; only this resource changes.

- ``in_process``: this process, on CUDA when present, else the CPU (the embedded default).
- ``accelerate``: a subprocess through Dagster Pipes running ``accelerate launch`` (DDP/FSDP over several
  GPUs; on a CPU machine several gloo processes).
- ``kubernetes`` / ``ecs``: a GPU container through dagster-k8s / dagster-aws Pipes clients. The pod is built
  from ``infra/k8s/training-job.yaml`` (the ECS task from ``infra/ecs/task-definition.json``) and runs the
  training image's entry point, ``resources.train_entry``. Nothing is shared but the services: the container
  reads the splits from the S3 artifact store, prepares the base from its spec, logs its metrics to the
  MLflow run itself, uploads the adapter to the store, and sends the result back as a Pipes message (the pod's
  log, CloudWatch on ECS).
- ``subprocess``: that same remote protocol in a local process: try an S3 + MLflow setup without a cluster.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

BACKENDS = ("in_process", "accelerate", "kubernetes", "ecs", "subprocess")
REMOTE_BACKENDS = ("kubernetes", "ecs", "subprocess")
PROJECT = Path(__file__).resolve().parent.parent
POD_MANIFEST = PROJECT / "infra" / "k8s" / "training-job.yaml"
ECS_TASK_DEFINITION = PROJECT / "infra" / "ecs" / "task-definition.json"
TRAIN_CONTAINER = "train"
RESULT_MESSAGE = "homegrown_train_result"


class TrainingCompute(dg.ConfigurableResource):
    backend: str = Field(default="in_process", description="in_process | accelerate | kubernetes | ecs | subprocess")
    num_processes: int = Field(default=2, ge=1, description="accelerate: processes (one per GPU).")
    accelerate_config: str = Field(default="", description="accelerate: a config file (FSDP, DeepSpeed...).")
    image: str = Field(default="", description="kubernetes: the training image (infra/Dockerfile.train); empty "
                                               "keeps the manifest's.")
    namespace: str = Field(default="default", description="kubernetes: namespace of the training pod.")
    gpu_count: int = Field(default=1, ge=0, description="kubernetes: nvidia.com/gpu limit of the pod.")
    pod_manifest: str = Field(default="", description="kubernetes: the pod manifest (default "
                                                      "infra/k8s/training-job.yaml).")
    ecs_cluster: str = Field(default="", description="ecs: cluster name.")
    ecs_task_definition: str = Field(default="", description="ecs: task definition family or ARN.")
    ecs_subnets: str = Field(default="", description="ecs: comma-separated subnet ids (awsvpc needs them).")
    ecs_security_groups: str = Field(default="", description="ecs: comma-separated security group ids.")
    ecs_network_mode: str = Field(default="", description="ecs: the task definition's network mode (default: "
                                                          "the committed task definition's).")
    timeout_s: int = Field(default=6 * 3600, description="A training run that takes longer is stopped.")

    def uses_gpu(self) -> bool:
        if self.backend in ("kubernetes", "ecs"):
            return True
        import torch

        return torch.cuda.is_available()

    def train(
        self,
        context: dg.AssetExecutionContext,
        config: dict[str, Any],
        train_jsonl: Path,
        validation_jsonl: Path,
        base_path: Path,
        output_dir: Path,
        progress: Callable[[dict], None] | None = None,
        *,
        store: Any = None,
        base_spec: str = "",
        mlflow_run_id: str = "",
    ) -> dict[str, Any]:
        """Train an adapter; returns TrainResult.to_dict() (adapter_dir, metrics, history, resumed_from).

        The remote backends need ``store`` on S3 (the container reads and writes through it), the base model's
        ``base_spec`` (prepared again in the container) and the MLflow run the container logs to."""
        if self.backend not in BACKENDS:
            raise ValueError(f"training backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.backend == "in_process":
            from homegrown.training.sft import TrainConfig, train

            result = train(TrainConfig.from_dict(config), train_jsonl, validation_jsonl, base_path, output_dir,
                           progress=progress)
            return result.to_dict()

        output_dir.mkdir(parents=True, exist_ok=True)
        if self.backend in REMOTE_BACKENDS:
            extras = remote_extras(store, config, train_jsonl, validation_jsonl, base_spec, output_dir, mlflow_run_id)
            invocation = self._run_remote(context, extras)
            results = [m["payload"] for m in invocation.get_custom_messages()
                       if isinstance(m, dict) and m.get("name") == RESULT_MESSAGE]
            if not results:
                raise RuntimeError(f"the {self.backend} training run sent no result message")
            return store.localize(results[-1])  # the adapter, downloaded into this machine's working copy

        result_path = output_dir / "train_result.json"
        extras = {"config": config, "train_jsonl": str(train_jsonl), "validation_jsonl": str(validation_jsonl),
                  "base_path": str(base_path), "output_dir": str(output_dir), "result_path": str(result_path)}
        self._run_accelerate(context, extras)
        if not result_path.exists():
            raise RuntimeError(f"the {self.backend} training run wrote no result at {result_path}")
        return json.loads(result_path.read_text())

    def _run_accelerate(self, context: dg.AssetExecutionContext, extras: dict[str, Any]) -> None:
        accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
        command = [accelerate, "launch", "--num_processes", str(self.num_processes)]
        if self.accelerate_config:
            command += ["--config_file", self.accelerate_config]
        if self.num_processes > 1:
            # --multi_gpu starts the processes through torchrun; on a CPU-only machine the trainer runs with
            # use_cpu and they form a gloo group (accelerate's --cpu alone starts a single process).
            command += ["--multi_gpu", "--num_machines", "1", "--machine_rank", "0",
                        "--main_process_port", str(_free_port())]
        command += ["-m", "resources.train_entry"]
        env = {**os.environ, "HOMEGROWN_TRAIN_EXTRAS": json.dumps(extras), "PYTHONPATH": _project_path()}
        client = dg.PipesSubprocessClient(cwd=_project_path())
        client.run(command=command, context=context, extras=extras, env=env)

    def _run_remote(self, context: dg.AssetExecutionContext, extras: dict[str, Any]):
        if self.backend == "subprocess":
            # The container's entry point as a local process with a home of its own (a pod's emptyDir): it
            # sees none of this machine's files, only the services.
            with tempfile.TemporaryDirectory(prefix="homegrown-pod-") as home:
                env = {**os.environ, "PYTHONPATH": _project_path(), "HOMEGROWN_HOME": home}
                return dg.PipesSubprocessClient(cwd=_project_path()).run(
                    command=[sys.executable, "-m", "resources.train_entry"], context=context, extras=extras, env=env)
        if self.backend == "kubernetes":
            from dagster_k8s import PipesK8sClient

            return PipesK8sClient().run(context=context, extras=extras, **self.k8s_run_params())
        import boto3
        from dagster_aws.pipes import PipesECSClient

        return PipesECSClient(client=boto3.client("ecs")).run(
            context=context, extras=extras, run_task_params=self.ecs_run_task_params(),
            pipes_container_name=TRAIN_CONTAINER)

    def k8s_run_params(self) -> dict[str, Any]:
        """What ``PipesK8sClient.run`` gets: the committed pod manifest (volumes, env from the ConfigMap and
        Secret, tolerations, node selector) with this resource's image and GPU count, and no command, so
        the image's entry point runs."""
        import yaml

        manifest = yaml.safe_load(Path(self.pod_manifest or POD_MANIFEST).read_text())
        spec = copy.deepcopy(manifest["spec"])
        containers = spec.get("containers") or []
        if not containers or containers[0].get("name") != TRAIN_CONTAINER:
            raise ValueError(f"the pod manifest's first container must be named {TRAIN_CONTAINER!r}")
        train = containers[0]
        if self.image:
            train["image"] = self.image
        if not train.get("image") or "REGISTRY/" in train["image"]:
            raise ValueError("the kubernetes training backend needs the training image: set TrainingCompute.image "
                             "(HOMEGROWN_TRAINING_IMAGE) or the image in the pod manifest")
        limits = train.setdefault("resources", {}).setdefault("limits", {})
        if self.gpu_count:
            limits["nvidia.com/gpu"] = str(self.gpu_count)
        else:
            limits.pop("nvidia.com/gpu", None)
        meta = {k: v for k, v in (manifest.get("metadata") or {}).items() if k != "generateName"}
        return {"image": None, "command": None, "namespace": self.namespace, "base_pod_meta": meta,
                "base_pod_spec": spec, "pod_wait_timeout": float(self.timeout_s)}

    def ecs_run_task_params(self) -> dict[str, Any]:
        """``RunTask`` for the training task: one task, the network configuration ``awsvpc`` requires, and
        the image's entry point (Pipes adds its environment to the ``train`` container's overrides)."""
        if not (self.ecs_cluster and self.ecs_task_definition):
            raise ValueError("the ecs training backend needs ecs_cluster and ecs_task_definition")
        mode = self.ecs_network_mode or json.loads(ECS_TASK_DEFINITION.read_text()).get("networkMode", "bridge")
        params: dict[str, Any] = {"cluster": self.ecs_cluster, "taskDefinition": self.ecs_task_definition,
                                  "count": 1, "overrides": {"containerOverrides": [{"name": TRAIN_CONTAINER}]}}
        if mode == "awsvpc":
            subnets = [s.strip() for s in self.ecs_subnets.split(",") if s.strip()]
            if not subnets:
                raise ValueError("the ecs task definition uses awsvpc networking: set ecs_subnets "
                                 "(HOMEGROWN_ECS_SUBNETS), and ecs_security_groups")
            vpc: dict[str, Any] = {"subnets": subnets, "assignPublicIp": "DISABLED"}
            groups = [g.strip() for g in self.ecs_security_groups.split(",") if g.strip()]
            if groups:
                vpc["securityGroups"] = groups
            params["networkConfiguration"] = {"awsvpcConfiguration": vpc}
        return params


def remote_extras(store: Any, config: dict[str, Any], train_jsonl: Path, validation_jsonl: Path, base_spec: str,
                  output_dir: Path, mlflow_run_id: str) -> dict[str, Any]:
    """The Pipes extras of a remote training run: URIs of the store, never a path of this machine."""
    if store is None or not getattr(store, "remote", False):
        raise ValueError("remote training reads and writes through the artifact store: set HOMEGROWN_ARTIFACTS to "
                         "an s3:// location (a pod cannot see this machine's files)")
    if not base_spec:
        raise ValueError("remote training prepares the base model from its spec: give base_spec")
    # The inputs may be files of this run not yet recorded anywhere (a specialist's slice): send them to S3.
    store.publish({"train": str(train_jsonl), "validation": str(validation_jsonl)})
    return {"config": config, "artifacts": store.uri, "train_uri": store.uri_of(train_jsonl),
            "validation_uri": store.uri_of(validation_jsonl), "output_uri": store.uri_of(output_dir),
            "base_spec": base_spec, "mlflow_run_id": mlflow_run_id}


def _project_path() -> str:
    return str(Path(__file__).resolve().parent.parent)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
