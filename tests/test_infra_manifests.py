"""Every deployment file in infra/ validates offline, and each check fails on a planted misspelling.

- Kubernetes manifests: kubernetes-validate (the API's OpenAPI schemas, strict: an unknown field fails).
- Helm values: the keys of the Dagster chart (1.13, helm/dagster/schema in the dagster repository, whose
  values.schema.json is not available offline) as a JSON schema below, forbidding extra keys where the chart
  does; the Kubernetes objects inside (resources, tolerations, node selectors) with kubernetes-validate.
- Compose: the compose-spec keys a service may have (no Docker engine here for `docker compose config`),
  plus references: depends_on targets, named volumes, build contexts and Dockerfiles.
- Dockerfiles: every COPY source exists in the build context (the repository root).
- ECS task definition: botocore's RegisterTaskDefinition input shape.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from pipelines.jobs import K8S_GPU_NODE_TAG

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
K8S_VERSION = "1.32.0"


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


# --- Kubernetes ----------------------------------------------------------------------------------------------

def k8s_errors(docs: list[dict]) -> list[str]:
    errors = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}: {exc.message}")
    return errors


def _manifests() -> dict[str, list[dict]]:
    return {p.name: [d for d in yaml.safe_load_all(p.read_text()) if d] for p in sorted((INFRA / "k8s").glob("*.yaml"))}


@pytest.mark.parametrize("name", sorted(_manifests()))
def test_kubernetes_manifest_validates(name):
    assert k8s_errors(_manifests()[name]) == []


def test_a_misspelled_kubernetes_field_fails():
    docs = copy.deepcopy(_manifests()["vllm.yaml"])
    container = docs[0]["spec"]["template"]["spec"]["containers"][0]
    container["volumeMount"] = container.pop("volumeMounts")
    assert k8s_errors(docs)


def test_vllm_serves_the_champion_adapter_and_the_gateway_points_at_it():
    vllm, service = _manifests()["vllm.yaml"]
    container = vllm["spec"]["template"]["spec"]["containers"][0]
    assert "--enable-lora" in container["args"]
    assert {"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "True"} in container["env"]
    assert "/v1/load_lora_adapter" in "\n".join(container["lifecycle"]["postStart"]["exec"]["command"])
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    port = service["spec"]["ports"][0]["port"]
    upstream = f"http://{service['metadata']['name']}:{port}"

    models_map, gateway, _ = _manifests()["gateway.yaml"]
    champion = json.loads(models_map["data"]["models.json"])["champion"]
    assert champion["base_url"].startswith(upstream) and champion["model"] == "champion"
    env = {e["name"]: e.get("value") for e in gateway["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["HOMEGROWN_VLLM_URL"] == upstream


def test_the_gpu_run_tag_is_a_valid_pod_placement():
    """retrain_job's dagster-k8s/config tag, as the K8sRunLauncher would apply it to the run pod."""
    config = K8S_GPU_NODE_TAG["dagster-k8s/config"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "run"}, "spec": {
        "nodeSelector": config["pod_spec_config"]["node_selector"],
        "tolerations": config["pod_spec_config"]["tolerations"],
        "containers": [{"name": "run", "image": "x", **config["container_config"]}]}}
    assert k8s_errors([pod]) == []


# --- Helm values -----------------------------------------------------------------------------------------------

def _obj(properties: dict, required: tuple = (), closed: bool = True) -> dict:
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": not closed}


_IMAGE = _obj({"repository": {"type": "string"}, "tag": {"type": ["string", "number"]},
               "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]}}, ("repository", "tag"))
_NAMED = {"type": "array", "items": _obj({"name": {"type": "string"}, "optional": {"type": "boolean"}}, ("name",))}
_ANY = {"type": "object"}
_TAG_LIMITS = {"type": "array", "items": _obj({"key": {"type": "string"}, "value": {}, "limit": {"type": "integer"}},
                                             ("key", "limit"))}

# The keys of the chart's values this project sets, from the chart's pydantic models (closed where the chart's
# model forbids extra keys: run launcher, K8sRunLauncher config, runK8sConfig, run coordinator, concurrency).
HELM_VALUES_SCHEMA = _obj({
    "dagsterWebserver": _obj({"replicaCount": {"type": "integer"}, "image": _IMAGE, "envConfigMaps": _NAMED,
                              "envSecrets": _NAMED, "resources": _ANY, "nodeSelector": _ANY}, closed=False),
    "dagster-user-deployments": _obj({
        "enabled": {"type": "boolean"}, "enableSubchart": {"type": "boolean"},
        "deployments": {"type": "array", "minItems": 1, "items": _obj({
            "name": {"type": "string"}, "image": _IMAGE,
            "dagsterApiGrpcArgs": {"type": "array", "items": {"type": "string"}},
            "codeServerArgs": {"type": "array", "items": {"type": "string"}}, "port": {"type": "integer"},
            "includeConfigInLaunchedRuns": _obj({"enabled": {"type": "boolean"}}),
            "env": {}, "envConfigMaps": _NAMED, "envSecrets": _NAMED, "resources": _ANY, "nodeSelector": _ANY,
            "tolerations": {"type": "array"}, "annotations": _ANY, "labels": _ANY,
        }, ("name", "image", "port"))},
    }, ("enabled", "deployments"), closed=False),
    "runLauncher": _obj({
        "type": {"enum": ["CeleryK8sRunLauncher", "K8sRunLauncher", "CustomRunLauncher"]},
        "config": _obj({"k8sRunLauncher": _obj({
            "image": _IMAGE, "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
            "jobNamespace": {"type": ["string", "null"]}, "loadInclusterConfig": {"type": "boolean"},
            "kubeconfigFile": {"type": ["string", "null"]}, "envConfigMaps": _NAMED, "envSecrets": _NAMED,
            "envVars": {"type": "array", "items": {"type": "string"}}, "volumeMounts": {"type": "array"},
            "volumes": {"type": "array"}, "labels": _ANY, "failPodOnRunFailure": {"type": "boolean"},
            "resources": _ANY, "schedulerName": {"type": "string"}, "securityContext": _ANY,
            "runK8sConfig": _obj({"containerConfig": _ANY, "podSpecConfig": _ANY, "podTemplateSpecMetadata": _ANY,
                                  "jobSpecConfig": _ANY, "jobMetadata": _ANY}),
        }, ("imagePullPolicy", "loadInclusterConfig"))}),
    }, ("type", "config")),
    "postgresql": _obj({
        "postgresqlScheme": {"type": "string"}, "image": _IMAGE, "enabled": {"type": "boolean"},
        "postgresqlHost": {"type": "string"}, "postgresqlUsername": {"type": "string"},
        "postgresqlPassword": {"type": "string"}, "postgresqlDatabase": {"type": "string"},
        "postgresqlParams": _ANY, "service": _obj({"port": {"type": "integer"}}, ("port",)),
    }, ("image", "enabled", "postgresqlHost", "postgresqlUsername", "postgresqlPassword", "postgresqlDatabase",
        "postgresqlParams", "service")),
    "generatePostgresqlPasswordSecret": {"type": "boolean"},
    "dagsterDaemon": _obj({
        "enabled": {"type": "boolean"},
        "runCoordinator": _obj({
            "enabled": {"type": "boolean"}, "type": {"enum": ["QueuedRunCoordinator", "CustomRunCoordinator"]},
            "config": _obj({"queuedRunCoordinator": _obj({
                "maxConcurrentRuns": {"type": "integer"}, "tagConcurrencyLimits": _TAG_LIMITS,
                "dequeueIntervalSeconds": {"type": "integer"}, "dequeueNumWorkers": {"type": "integer"},
                "dequeueUseThreads": {"type": "boolean"},
                "blockOpConcurrencyLimitedRuns": _obj({"enabled": {"type": "boolean"},
                                                       "opConcurrencySlotBuffer": {"type": "integer"}}),
            })}),
        }, ("enabled", "type", "config")),
        "runMonitoring": _obj({k: {"type": "integer"} for k in (
            "startTimeoutSeconds", "cancelTimeoutSeconds", "maxResumeRunAttempts", "pollIntervalSeconds",
            "freeSlotsAfterRunEndSeconds")} | {"enabled": {"type": "boolean"}}),
        "runRetries": _obj({"enabled": {"type": "boolean"}, "maxRetries": {"type": "integer"},
                            "retryOnAssetOrOpFailure": {"type": "boolean"}}),
    }, closed=False),
    "concurrency": _obj({
        "enabled": {"type": "boolean"},
        "pools": _obj({"defaultLimit": {"type": "integer"}, "granularity": {"enum": ["run", "op"]},
                       "opGranularityRunBuffer": {"type": "integer"}}),
        "runs": _obj({"maxConcurrentRuns": {"type": "integer"}, "tagConcurrencyLimits": _TAG_LIMITS}),
    }),
    "computeLogManager": _obj({"type": {"type": "string"}, "config": _ANY}, ("type",)),
    "telemetry": _obj({"enabled": {"type": "boolean"}}),
}, ("runLauncher", "postgresql", "dagsterDaemon"))


def helm_errors(values: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(HELM_VALUES_SCHEMA)
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(values)]
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    container = {"name": "run", "image": "x", **k8s["runK8sConfig"].get("containerConfig", {})}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "run"},
           "spec": {**k8s["runK8sConfig"].get("podSpecConfig", {}), "containers": [container]}}
    return errors + k8s_errors([pod])


def test_helm_values_match_the_chart():
    assert helm_errors(_load(INFRA / "helm" / "values.yaml")) == []


@pytest.mark.parametrize("plant", ["launcher", "pools"])
def test_a_misspelled_helm_key_fails(plant):
    values = _load(INFRA / "helm" / "values.yaml")
    if plant == "launcher":
        k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
        k8s["imagePullPolicyy"] = k8s.pop("imagePullPolicy")
    else:
        values["concurrency"]["pools"]["defaultLimt"] = values["concurrency"]["pools"].pop("defaultLimit")
    assert helm_errors(values)


def test_helm_values_and_the_instance_file_agree():
    """The chart renders the same queue, pools, monitoring and retries as infra/dagster/dagster.yaml."""
    values, instance = _load(INFRA / "helm" / "values.yaml"), _load(INFRA / "dagster" / "dagster.yaml")
    pools, runs = values["concurrency"]["pools"], values["concurrency"]["runs"]
    assert values["concurrency"]["enabled"]
    assert (pools["granularity"], pools["defaultLimit"]) == (instance["concurrency"]["pools"]["granularity"],
                                                             instance["concurrency"]["pools"]["default_limit"])
    assert runs["tagConcurrencyLimits"] == instance["concurrency"]["runs"]["tag_concurrency_limits"]
    daemon = values["dagsterDaemon"]
    assert daemon["runMonitoring"]["enabled"] and instance["run_monitoring"]["enabled"]
    assert daemon["runRetries"]["maxRetries"] == instance["run_retries"]["max_retries"]
    assert daemon["runRetries"]["retryOnAssetOrOpFailure"] == instance["run_retries"]["retry_on_asset_or_op_failure"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"


# --- compose -----------------------------------------------------------------------------------------------------

SERVICE_KEYS = {
    "annotations", "attach", "build", "cap_add", "cap_drop", "cgroup_parent", "command", "configs", "container_name",
    "cpu_count", "cpus", "depends_on", "deploy", "develop", "devices", "dns", "entrypoint", "env_file", "environment",
    "expose", "extends", "extra_hosts", "gpus", "group_add", "healthcheck", "hostname", "image", "init", "ipc",
    "labels", "links", "logging", "mem_limit", "network_mode", "networks", "platform", "ports", "privileged",
    "profiles", "pull_policy", "read_only", "restart", "runtime", "secrets", "security_opt", "shm_size",
    "stdin_open", "stop_grace_period", "stop_signal", "sysctls", "tmpfs", "tty", "ulimits", "user", "volumes",
    "working_dir",
}
COMPOSE_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"}, "services": {"type": "object", "minProperties": 1, "additionalProperties": {
            "type": "object",
            "propertyNames": {"anyOf": [{"enum": sorted(SERVICE_KEYS)}, {"pattern": "^x-"}]},
            "anyOf": [{"required": ["image"]}, {"required": ["build"]}],
            "properties": {
                "build": {"type": "object", "required": ["context"], "propertyNames": {"enum": [
                    "context", "dockerfile", "args", "target", "cache_from", "labels", "network", "ssh"]}},
                "healthcheck": {"type": "object", "propertyNames": {"enum": [
                    "test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"]}},
                "depends_on": {"type": "object", "additionalProperties": {
                    "type": "object", "properties": {"condition": {"enum": [
                        "service_started", "service_healthy", "service_completed_successfully"]}}}},
                "restart": {"enum": ["no", "always", "on-failure", "unless-stopped"]},
                "profiles": {"type": "array", "items": {"type": "string"}},
                "environment": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean",
                                                                                    "null"]}},
            }}},
        "volumes": {"type": "object"}, "networks": {"type": "object"}, "secrets": {"type": "object"},
        "configs": {"type": "object"},
    },
    "required": ["services"],
    "propertyNames": {"anyOf": [{"enum": ["name", "services", "volumes", "networks", "secrets", "configs"]},
                                {"pattern": "^x-"}]},
}


def compose_errors(compose: dict, base: Path = INFRA) -> list[str]:
    validator = jsonschema.Draft202012Validator(COMPOSE_SCHEMA)
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    services, volumes = compose.get("services", {}), set(compose.get("volumes") or {})
    for name, service in services.items():
        for target in service.get("depends_on", {}):
            if target not in services:
                errors.append(f"{name}: depends_on unknown service {target}")
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith((".", "/")):
                if not (base / source).exists():
                    errors.append(f"{name}: bind mount {source} does not exist")
            elif source not in volumes:
                errors.append(f"{name}: volume {source} is not declared")
        if "build" in service:
            context = (base / service["build"]["context"]).resolve()
            if not (context / service["build"].get("dockerfile", "Dockerfile")).is_file():
                errors.append(f"{name}: no Dockerfile {service['build'].get('dockerfile')} in {context}")
    return errors


def test_compose_file_is_valid():
    compose = _load(INFRA / "compose.yaml")
    assert compose_errors(compose) == []
    services = compose["services"]
    assert {"postgres", "minio", "mlflow", "code-location", "dagster-webserver", "dagster-daemon", "gateway",
            "vllm"} <= set(services)
    assert services["vllm"]["profiles"] == ["gpu"]
    assert [name for name, s in services.items() if "profiles" in s] == ["vllm"]
    assert "--enable-lora" in services["vllm"]["command"]
    assert services["code-location"]["environment"]["HOMEGROWN_ENV"] == "production"
    assert "postgres" in services["mlflow"]["depends_on"] and any("s3://" in a for a in services["mlflow"]["command"])


@pytest.mark.parametrize("plant", ["field", "depends_on", "dockerfile"])
def test_a_compose_error_fails(plant):
    compose = _load(INFRA / "compose.yaml")
    gateway = compose["services"]["gateway"]
    if plant == "field":
        gateway["enviroment"] = gateway.pop("environment")
    elif plant == "depends_on":
        gateway["depends_on"]["postgress"] = {"condition": "service_healthy"}
    else:
        gateway["build"]["dockerfile"] = "infra/docker/Dockerfile.gatway"
    assert compose_errors(compose)


# --- Dockerfiles and the ECS task definition ---------------------------------------------------------------------

def dockerfile_errors(text: str, context: Path = ROOT) -> list[str]:
    errors = []
    for line in re.findall(r"^COPY\s+(.+)$", text, flags=re.MULTILINE):
        parts = [p for p in line.split() if not p.startswith("--")]
        for source in parts[:-1]:
            if not (context / source).exists():
                errors.append(f"COPY source {source} is not in the build context")
    if not re.search(r"^(CMD|ENTRYPOINT)\s", text, flags=re.MULTILINE):
        errors.append("no CMD or ENTRYPOINT")
    return errors


DOCKERFILES = sorted([*INFRA.glob("Dockerfile*"), *(INFRA / "docker").glob("Dockerfile*")])


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_what_exists(path):
    assert dockerfile_errors(path.read_text()) == []


def test_a_dockerfile_copying_a_missing_folder_fails():
    text = (INFRA / "docker" / "Dockerfile.gateway").read_text().replace("COPY pipelines", "COPY pipeline")
    assert dockerfile_errors(text)


def ecs_errors(task_definition: dict) -> list[str]:
    import botocore.session
    from botocore.exceptions import ParamValidationError
    from botocore.validate import ParamValidator

    model = botocore.session.get_session().get_service_model("ecs")
    report = ParamValidator().validate(task_definition, model.operation_model("RegisterTaskDefinition").input_shape)
    try:
        if report.has_errors():
            raise ParamValidationError(report=report.generate_report())
    except ParamValidationError as exc:
        return [str(exc)]
    return []


def test_ecs_task_definition_validates():
    assert ecs_errors(json.loads((INFRA / "ecs" / "task-definition.json").read_text())) == []


def test_a_misspelled_ecs_field_fails():
    task = json.loads((INFRA / "ecs" / "task-definition.json").read_text())
    task["containerDefinitions"][0]["memmory"] = task["containerDefinitions"][0].pop("memory")
    assert ecs_errors(task)
