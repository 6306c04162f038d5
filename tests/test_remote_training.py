"""Remote training: the Kubernetes pod as dagster-k8s builds it from the committed manifest, the ECS RunTask
request against the ECS API's own schema, and the container's protocol run for real in a local process (the
``subprocess`` backend): splits from the S3 store, metrics to MLflow from the child, the adapter back through
S3 and the result as a Pipes message."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml
from test_infra_manifests import k8s_errors
from test_s3_input import s3  # noqa: F401 - the moto fixture

from resources.compute import POD_MANIFEST, TrainingCompute, remote_extras

PIPES_ENV = {"DAGSTER_PIPES_CONTEXT": "e30=", "DAGSTER_PIPES_MESSAGES": "e30="}


def _pod(compute: TrainingCompute) -> dict:
    """The pod PipesK8sClient would create, from the parameters the backend hands it."""
    pytest.importorskip("dagster_k8s", reason="dagster-k8s (a dev dependency) is not installed")
    import kubernetes
    from dagster_k8s.pipes import build_pod_body

    params = compute.k8s_run_params()
    body = build_pod_body(pod_name="homegrown-train-abc", image=params["image"], command=params["command"],
                          env_vars=PIPES_ENV, base_pod_meta=params["base_pod_meta"],
                          base_pod_spec=params["base_pod_spec"])
    return {"apiVersion": "v1", "kind": "Pod", **kubernetes.client.ApiClient().sanitize_for_serialization(body)}


def test_the_training_pod_is_the_committed_manifest_with_the_image_and_pipes():
    pod = _pod(TrainingCompute(backend="kubernetes", image="registry.example/homegrown-train:7", gpu_count=2))
    assert k8s_errors([pod]) == []
    spec = pod["spec"]
    train = spec["containers"][0]
    assert train["name"] == "train" and train["image"] == "registry.example/homegrown-train:7"
    assert "command" not in train, "the image's entry point (resources.train_entry) must run"
    assert train["resources"]["limits"]["nvidia.com/gpu"] == "2"
    env = {e["name"]: e.get("value") for e in train["env"]}
    assert env["DAGSTER_PIPES_CONTEXT"] == "e30=" and env["HOMEGROWN_HOME"] == "/work"
    assert {"homegrown-env", "homegrown-secrets"} <= {
        (ref.get("configMapRef") or ref.get("secretRef"))["name"] for ref in train["envFrom"]}
    assert spec["nodeSelector"] == {"homegrown.io/node-pool": "gpu"}
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert spec["restartPolicy"] == "Never"
    assert all("persistentVolumeClaim" not in v for v in spec["volumes"]), "no volume shared with other machines"
    assert pod["metadata"]["labels"]["component"] == "training"


def test_a_manifest_the_backend_cannot_use_is_refused(tmp_path):
    with pytest.raises(ValueError, match="training image"):
        TrainingCompute(backend="kubernetes").k8s_run_params()  # the manifest's REGISTRY/ placeholder
    manifest = yaml.safe_load(POD_MANIFEST.read_text())
    manifest["spec"]["containers"][0]["name"] = "trainer"
    planted = tmp_path / "pod.yaml"
    planted.write_text(yaml.safe_dump(manifest))
    with pytest.raises(ValueError, match="named 'train'"):
        TrainingCompute(backend="kubernetes", image="x/y:1", pod_manifest=str(planted)).k8s_run_params()


def _run_task_errors(params: dict) -> list[str]:
    import botocore.session
    from botocore.validate import ParamValidator

    model = botocore.session.get_session().get_service_model("ecs")
    report = ParamValidator().validate(params, model.operation_model("RunTask").input_shape)
    return [report.generate_report()] if report.has_errors() else []


def test_the_ecs_run_task_request_has_the_network_configuration_awsvpc_needs():
    compute = TrainingCompute(backend="ecs", ecs_cluster="gpu", ecs_task_definition="homegrown-train",
                              ecs_subnets="subnet-1, subnet-2", ecs_security_groups="sg-1")
    params = compute.ecs_run_task_params()
    assert _run_task_errors(params) == []
    assert params["networkConfiguration"]["awsvpcConfiguration"] == {
        "subnets": ["subnet-1", "subnet-2"], "securityGroups": ["sg-1"], "assignPublicIp": "DISABLED"}
    assert "command" not in params["overrides"]["containerOverrides"][0]
    planted = {**params, "networkConfiguration": {"awsvpcConfig": params["networkConfiguration"]["awsvpcConfiguration"]}}
    assert _run_task_errors(planted), "a misspelled request must fail the schema check"


def test_ecs_without_subnets_fails_before_any_call():
    compute = TrainingCompute(backend="ecs", ecs_cluster="gpu", ecs_task_definition="homegrown-train")
    with pytest.raises(ValueError, match="awsvpc"):
        compute.ecs_run_task_params()
    bridge = TrainingCompute(backend="ecs", ecs_cluster="gpu", ecs_task_definition="t", ecs_network_mode="bridge")
    assert "networkConfiguration" not in bridge.ecs_run_task_params()


def test_remote_training_needs_the_store_on_s3(tmp_path):
    from homegrown.store import ArtifactStore

    with pytest.raises(ValueError, match="s3://"):
        remote_extras(ArtifactStore(tmp_path), {}, tmp_path / "t.jsonl", tmp_path / "v.jsonl", "smollm2-135m-instruct",
                      tmp_path / "out", "")


@pytest.mark.slow
def test_the_containers_protocol_end_to_end(hg_home, s3, tiny_llama_dir, monkeypatch):  # noqa: F811
    """The entry point of the training image, run as a local process with the pod's view of the world."""
    from homegrown.store import open_store
    from homegrown.tracking import tracker_from_env
    from pipelines.definitions import defs

    monkeypatch.setenv("HOMEGROWN_ARTIFACTS", "s3://assistant-logs/artifacts")
    # The child has a home of its own; it finds the tracking server as a pod does, through the environment.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{hg_home / 'mlflow' / 'mlflow.db'}")
    data = [a for a in defs.assets if a.key.to_user_string() in
            {"raw_interactions", "synthetic_examples", "scored_dataset", "dataset_splits"}]
    assert dg.materialize(data, resources=defs.resources).success
    training = [a for a in defs.assets if a.key.to_user_string() == "lora_adapter"]
    resources = {**defs.resources, "compute": TrainingCompute(backend="subprocess")}
    run_config = {"ops": {"lora_adapter": {"config": {
        "base_model": str(tiny_llama_dir), "max_steps": 2, "max_seq_length": 256, "per_device_batch_size": 2,
        "gradient_accumulation": 1}}}}
    result = dg.materialize(training, resources=resources, run_config=run_config)
    assert result.success

    store = open_store()
    pointer = store.pointer("lora_adapter")
    assert pointer["adapter_dir"].startswith("s3://assistant-logs/artifacts/lora_adapter/")
    adapter = Path(store.require_latest("lora_adapter")["adapter_dir"])
    assert (adapter / "adapter_config.json").is_file()
    run_id = pointer["mlflow_run_id"]
    losses = tracker_from_env()._client().get_metric_history(run_id, "loss")
    assert losses, "the child logs its own metrics to the asset's MLflow run"
    assert pointer["metrics"]["steps"] == 2  # the result came back as the child's Pipes message
