"""Jobs: curating new logs (cheap, hourly), the data half, and the whole retrain."""

import dagster as dg

GPU_TAG = {"homegrown/gpu": "true"}

# On Kubernetes (infra/helm/values.yaml) the K8sRunLauncher reads this tag: the retrain's run pod goes to the
# GPU node pool and gets one GPU. Elsewhere it is inert. The one-GPU limit itself is the `gpu` pool on the assets.
K8S_GPU_NODE_TAG = {"dagster-k8s/config": {
    "pod_spec_config": {"node_selector": {"homegrown.io/node-pool": "gpu"},
                        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
    "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}},
}}

curate_job = dg.define_asset_job(
    "curate_job",
    selection=dg.AssetSelection.assets("raw_interactions", "synthetic_examples", "scored_dataset"),
    description="Read new logs and score them, so the retrain sensor can count new good examples.",
)

data_job = dg.define_asset_job(
    "data_job",
    selection=dg.AssetSelection.assets("dataset_splits").upstream(),
    description="From the raw logs to stable train/validation/test splits.",
)

# Optional stages, run on request: not part of the retrain loop.
SPECIALISTS = dg.AssetSelection.groups("specialists")

retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=dg.AssetSelection.all() - SPECIALISTS,
    tags={**GPU_TAG, **K8S_GPU_NODE_TAG},
    description="The whole loop: data, LoRA, preference tuning, merge, GGUF, eval and gate, deployment.",
)

specialists_job = dg.define_asset_job(
    "specialists_job",
    selection=SPECIALISTS,
    tags={**GPU_TAG, **K8S_GPU_NODE_TAG},
    description="One adapter per example type on the current splits, each gated on its slice against the "
                "general candidate, and the passed ones served from one base by the gateway.",
)
