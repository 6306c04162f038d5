"""The one place that decides the runtime environment: the embedded default or production."""

from __future__ import annotations

import os

import dagster as dg

from homegrown import paths
from resources import InputResource, MlflowResource, StorageResource, TeacherResource
from resources.compute import TrainingCompute


def resources_for_environment(env: str | None = None) -> dict:
    env = env or paths.environment()
    if env == "local":
        return {
            "store": StorageResource(),
            "mlflow": MlflowResource(),
            "input_logs": InputResource(location=os.environ.get("HOMEGROWN_INPUT", "")),
            "teacher": TeacherResource(),
            "compute": TrainingCompute(backend=os.environ.get("HOMEGROWN_TRAINING_BACKEND", "in_process")),
        }
    # production: every external system is named by the environment (secrets through EnvVar)
    return {
        "store": StorageResource(root=dg.EnvVar("HOMEGROWN_ARTIFACTS")),
        "mlflow": MlflowResource(tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI"),
                                 ui_url=os.environ.get("HOMEGROWN_MLFLOW_UI_URL", "http://127.0.0.1:5000")),
        "input_logs": InputResource(location=dg.EnvVar("HOMEGROWN_INPUT")),
        "teacher": TeacherResource(kind=os.environ.get("HOMEGROWN_TEACHER", "template"),
                                   base_url=os.environ.get("HOMEGROWN_TEACHER_BASE_URL", ""),
                                   model=os.environ.get("HOMEGROWN_TEACHER_MODEL", "gpt-4o-mini"),
                                   api_key=dg.EnvVar("HOMEGROWN_TEACHER_API_KEY")),
        "compute": TrainingCompute(backend=os.environ.get("HOMEGROWN_TRAINING_BACKEND", "kubernetes"),
                                   image=os.environ.get("HOMEGROWN_TRAINING_IMAGE", ""),
                                   namespace=os.environ.get("HOMEGROWN_K8S_NAMESPACE", "default"),
                                   ecs_cluster=os.environ.get("HOMEGROWN_ECS_CLUSTER", ""),
                                   ecs_task_definition=os.environ.get("HOMEGROWN_ECS_TASK_DEFINITION", ""),
                                   ecs_subnets=os.environ.get("HOMEGROWN_ECS_SUBNETS", ""),
                                   ecs_security_groups=os.environ.get("HOMEGROWN_ECS_SECURITY_GROUPS", "")),
    }
