"""Where training runs. The asset is the same for every backend; only this resource changes.

- ``in_process``: this process, on CUDA when present, else the CPU (the embedded default).
- ``accelerate``: a subprocess through Dagster Pipes running ``accelerate launch`` (DDP/FSDP over several
  GPUs; on a CPU machine several gloo processes).
- ``kubernetes`` / ``ecs``: a remote GPU container through dagster-k8s / dagster-aws Pipes clients running
  the same entry point (see infra/).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

BACKENDS = ("in_process", "accelerate", "kubernetes", "ecs")


class TrainingCompute(dg.ConfigurableResource):
    backend: str = Field(default="in_process", description="in_process | accelerate | kubernetes | ecs")
    num_processes: int = Field(default=2, ge=1, description="accelerate: processes (one per GPU).")
    accelerate_config: str = Field(default="", description="accelerate: a config file (FSDP, DeepSpeed...).")
    image: str = Field(default="", description="kubernetes/ecs: the training image (infra/Dockerfile.train).")
    namespace: str = Field(default="default", description="kubernetes: namespace of the training pod.")
    gpu_count: int = Field(default=1, ge=0, description="kubernetes: nvidia.com/gpu limit of the pod.")
    ecs_cluster: str = Field(default="", description="ecs: cluster name.")
    ecs_task_definition: str = Field(default="", description="ecs: task definition family or ARN.")
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
    ) -> dict[str, Any]:
        """Train an adapter; returns TrainResult.to_dict() (adapter_dir, metrics, history, resumed_from)."""
        if self.backend not in BACKENDS:
            raise ValueError(f"training backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.backend == "in_process":
            from homegrown.training.sft import TrainConfig, train

            result = train(TrainConfig.from_dict(config), train_jsonl, validation_jsonl, base_path, output_dir,
                           progress=progress)
            return result.to_dict()

        output_dir.mkdir(parents=True, exist_ok=True)
        result_path = output_dir / "train_result.json"
        extras = {"config": config, "train_jsonl": str(train_jsonl), "validation_jsonl": str(validation_jsonl),
                  "base_path": str(base_path), "output_dir": str(output_dir), "result_path": str(result_path)}
        if self.backend == "accelerate":
            self._run_accelerate(context, extras)
        else:
            self._run_remote(context, extras)
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

    def _run_remote(self, context: dg.AssetExecutionContext, extras: dict[str, Any]) -> None:
        if not self.image and self.backend == "kubernetes":
            raise ValueError("the kubernetes training backend needs an image (see infra/k8s)")
        command = ["python", "-m", "resources.train_entry"]
        env = {"HOMEGROWN_TRAIN_EXTRAS": json.dumps(extras)}
        if self.backend == "kubernetes":
            from dagster_k8s import PipesK8sClient

            PipesK8sClient().run(
                context=context, image=self.image, command=command, namespace=self.namespace, env=env,
                extras=extras,
                base_pod_spec={"containers": [{"name": "train", "resources": {
                    "limits": {"nvidia.com/gpu": str(self.gpu_count)}}}]},
            )
        else:
            import boto3
            from dagster_aws.pipes import PipesECSClient

            if not (self.ecs_cluster and self.ecs_task_definition):
                raise ValueError("the ecs training backend needs ecs_cluster and ecs_task_definition")
            PipesECSClient(client=boto3.client("ecs")).run(context=context, extras=extras, run_task_params={
                "cluster": self.ecs_cluster, "taskDefinition": self.ecs_task_definition, "count": 1,
                "overrides": {"containerOverrides": [{"name": "train", "command": command,
                                                      "environment": [{"name": k, "value": v} for k, v in env.items()]}]},
            })


def _project_path() -> str:
    return str(Path(__file__).resolve().parent.parent)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
