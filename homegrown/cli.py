"""The ``homegrown`` command: run the pipeline, inspect its state, serve and evaluate models."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from homegrown import paths
from homegrown.store import ArtifactStore, open_store

SPECIALISTS_GROUP = "specialists"
# Everything the loop runs: the optional specialists (``homegrown specialists``) are left out.
LOOP_SELECTION = f"* and not group:{SPECIALISTS_GROUP}"


def _store() -> ArtifactStore:
    return open_store()


INSTANCE_FILES = {"local": paths.PROJECT_ROOT / "dagster.yaml",
                  "production": paths.PROJECT_ROOT / "infra" / "dagster" / "dagster.yaml"}


def prepare_dagster_home() -> Path:
    """``DAGSTER_HOME`` (default ``<HOMEGROWN_HOME>/dagster``) holding the instance file of ``HOMEGROWN_ENV``:
    the project's SQLite instance locally, ``infra/dagster/dagster.yaml`` (Postgres, run queue) in production.

    An instance file that is not one of the project's (an operator's own) is left as it is."""
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or paths.home() / "dagster")
    dagster_home.mkdir(parents=True, exist_ok=True)
    target = dagster_home / "dagster.yaml"
    wanted = INSTANCE_FILES[paths.environment()]
    if not target.exists() or (_is_project_instance(target) and target.read_bytes() != wanted.read_bytes()):
        shutil.copyfile(wanted, target)
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    return dagster_home


def _is_project_instance(path: Path) -> bool:
    """Whether ``path`` is a copy of one of the project's instance files (of this or an earlier version)."""
    first = path.read_text(errors="replace").split("\n", 1)[0]
    return first.startswith(("# The Dagster instance of homegrown", "# The production Dagster instance of homegrown"))


def status() -> dict[str, Any]:
    """What the latest materialisations produced (paths, versions, counts): the pointers as stored (URIs on
    S3), nothing downloaded."""
    store = _store()
    out: dict[str, Any] = {"home": str(paths.home())}
    splits = store.pointer("dataset_splits")
    raw = store.pointer("raw_interactions")
    scored = store.pointer("scored_dataset")
    if splits or raw:
        out["dataset"] = {
            "version": splits and splits["version"],
            "splits": {s: p["jsonl"] for s, p in (splits or {}).get("paths", {}).items()},
            "rows": (splits or {}).get("rows", {}),
            "quarantined": (raw or {}).get("quarantined"),
            "input_lines": (raw or {}).get("input_lines"),
            "interactions": (raw or {}).get("interactions"),
            "superseded": (raw or {}).get("superseded"),
            "kept": (scored or {}).get("kept"),
        }
    adapter = store.pointer("lora_adapter")
    preference = store.pointer("preference_adapter")
    if adapter and preference and preference.get("tuned") \
            and str(preference.get("sft_model_version")) == str(adapter["model_version"]):
        adapter = {**adapter, **preference}  # the candidate is the preference-tuned adapter
    if adapter:
        merged = store.pointer("merged_model") or {}
        quantized = store.pointer("quantized_model") or {}
        out["model"] = {
            "version": adapter["model_version"],
            "mlflow_model_uri": adapter["mlflow_model_uri"],
            "adapter": adapter["adapter_dir"],
            "merged": merged.get("path"),
            "gguf": quantized.get("gguf", {}),
            "base_model": adapter["base_model"],
            "dataset_version": adapter["dataset_version"],
            "preference": adapter.get("method") if adapter.get("tuned") else None,
        }
    report = store.pointer("eval_report")
    if report:
        out["eval"] = {"report": report["report"], "metrics": report["metrics"], "promoted": report["promoted"],
                       "model_version": report["model_version"], "gate_failures": report["gate"].get("failures")}
    rollout = store.pointer("rollout_state")
    if rollout:
        out["rollout"] = {key: rollout.get(key) for key in ("action", "reason", "share_before", "share_after",
                                                            "decided_at")}
    specialists = store.pointer("specialist_adapters")
    if specialists:
        served = store.pointer("deployed_specialists") or {}
        out["specialists"] = {
            "general_model_version": specialists.get("general_model_version"),
            "dataset_version": specialists.get("dataset_version"),
            "trained": {s["example_type"]: {"gate_passed": s["gate_passed"], "lora_gguf": s["lora_gguf"],
                                            "versus_general": (s.get("versus_general") or {}).get("verdict")}
                        for s in specialists.get("specialists", [])},
            "served": sorted(served.get("adapters", {})),
            "served_by": served.get("url"),
        }
    deployed = store.pointer("deployed_endpoint")
    from homegrown.gateway.server import running_gateway
    from homegrown.gateway.settings import GatewaySettings

    gateway = running_gateway()
    if deployed or gateway:
        out["endpoint"] = {
            "url": (gateway or {}).get("url") or (deployed or {}).get("url"),
            "model": (deployed or {}).get("model"),
            "version": (deployed or {}).get("version"),
            "healthy": bool(gateway and gateway.get("healthy")),
            "api_key": GatewaySettings().client_api_key(),
        }
    return out


def run_pipeline(selection: str, run_config: str | None = None, raise_on_error: bool = True,
                 tags: dict[str, str] | None = None):
    """Materialise ``selection`` (a Dagster asset selection string) into the project's Dagster instance."""
    prepare_dagster_home()
    import dagster as dg
    import yaml

    from pipelines.definitions import defs

    config = yaml.safe_load(Path(run_config).read_text()) if run_config else None
    with warnings.catch_warnings():
        # "not group:..." resolves through AssetSelection.all(include_sources=...), a parameter Dagster marks beta.
        warnings.simplefilter("ignore", dg.BetaWarning)
        graph = defs.get_repository_def().asset_graph
        keys = dg.AssetSelection.from_string(selection).resolve(graph)
    if config and "ops" in config:
        selected = {key.to_user_string() for key in keys}
        config = {**config, "ops": {op: cfg for op, cfg in config["ops"].items() if op in selected}}
    assets = list(defs.assets)
    result = dg.materialize(assets, selection=list(keys), resources=defs.resources, run_config=config,
                            instance=dg.DagsterInstance.get(), raise_on_error=raise_on_error, tags=tags)
    if raise_on_error and not result.success:
        raise SystemExit("the pipeline run failed; see the Dagster run log")
    return result


def ask_endpoint(url: str, api_key: str, model: str | None, question: str) -> tuple[str, str]:
    """One question through the real ``openai`` client, the way the business's app would ask it."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{url.rstrip('/')}/v1", api_key=api_key, timeout=120, max_retries=1)
    response = client.chat.completions.create(model=model or "champion", max_tokens=128, temperature=0,
                                              messages=[{"role": "user", "content": question}])
    return response.model, response.choices[0].message.content or ""


def failed_steps(result: Any) -> list[str]:
    """The step keys of a Dagster run result that failed (a blocked promotion gate fails ``eval_report``)."""
    import dagster as dg

    return [e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]


def stage_times(result: Any) -> list[tuple[str, float, str]]:
    """``(stage, seconds, status)`` of each step of a Dagster run, in the order they started."""
    import dagster as dg

    stats = dg.DagsterInstance.get().get_run_step_stats(result.run_id)
    timed = [s for s in stats if s.start_time is not None]
    return [(s.step_key, round((s.end_time or time.time()) - s.start_time, 1), s.status.value.lower() if s.status
             else "?") for s in sorted(timed, key=lambda s: s.start_time)]


def print_stage_times(result: Any, total_s: float) -> None:
    """The run's stage times as a table, slowest marked, so a slow demo says where its minutes went."""
    rows = stage_times(result)
    if not rows:
        return
    print("\nstage times (s):")
    for stage, seconds, status in rows:
        print(f"  {stage:<24} {seconds:>7.1f}  {100 * seconds / max(total_s, 1e-9):>4.0f}%"
              + ("" if status == "success" else f"  ({status})"))


def ask_all(endpoint: dict[str, Any], questions: list[str]) -> None:
    """Send each question to the endpoint through the ``openai`` client and print the answer and model."""
    for question in questions:
        model, answer = ask_endpoint(endpoint["url"], endpoint["api_key"], endpoint.get("model"), question)
        print(f"\nQ: {question}\nA ({model}): {answer}")


CANDIDATE_STAGES = frozenset({"merged_model", "quantized_model", "eval_report"})


def cmd_demo(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = run_pipeline(args.select, args.config, raise_on_error=False)
    failed = failed_steps(result)
    failed_checks = [c.check_name for c in result.get_asset_check_evaluations() if not c.passed]
    info = status()
    # A candidate that a blocking check stopped (merge, GGUF parity or quantization, the promotion gate) is
    # an outcome, not a crash: the endpoint goes on serving the champion (or the base model).
    blocked = bool(failed) and bool(failed_checks) and set(failed) <= CANDIDATE_STAGES
    if failed:
        print(f"\nstopped at {', '.join(failed)}" +
              (f" (blocking checks failed: {', '.join(failed_checks)})" if failed_checks else ""))
        if not blocked:
            raise SystemExit("the pipeline failed; see the Dagster run log above")
    endpoint = info.get("endpoint")
    if blocked and (not endpoint or not endpoint.get("healthy")):
        # The candidate was not promoted: the gateway still serves, with the current champion (or, before
        # any promotion, the base model), which is what the business's app would be talking to.
        from homegrown.gateway.server import start_background
        from homegrown.gateway.settings import GatewaySettings

        print("the candidate was not promoted; starting the gateway with the current champion (or the base model)")
        start_background(GatewaySettings(), timeout_s=180)
        info = status()
        endpoint = info.get("endpoint")
    print(f"\n== homegrown {args.command} ==")
    print(json.dumps({k: v for k, v in info.items() if k in ("dataset", "model")}, indent=2))
    if "eval" in info:
        print("\neval report:", info["eval"]["report"])
        for name, headline in info["eval"]["metrics"].items():
            shown = {k: round(v, 3) for k, v in headline.items() if isinstance(v, (int, float)) and k in (
                "fact_accuracy", "hallucination_rate", "token_f1", "json_validity", "tool_exact_match",
                "latency_p50_s", "privacy_leaks")}
            print(f"  {name:>12}: {shown}")
        print("  promoted:", info["eval"]["promoted"], "" if info["eval"]["promoted"] else info["eval"]["gate_failures"])
    if endpoint and endpoint.get("url"):
        ask_all(endpoint, args.ask)
        print(f"\nendpoint:   {endpoint['url']}/v1  (api key {endpoint['api_key']})")
        # the savings of the traffic just sent (the report inside the pipeline run saw only the smoke test)
        roi = run_pipeline("roi_report", None, raise_on_error=False)
        report = _store().latest("roi_report") if roi.success else None
        if report:
            totals = report["totals"]
            print(f"ROI:        {totals['requests']} requests; ${totals['actual_usd']:.4f} spent against "
                  f"${totals['all_premium_usd']:.4f} all on the premium API; net savings "
                  f"${totals['net_savings_usd']:.4f} (training included); report {report['dir']}")
    print("Dagster UI: `make ui` (or `homegrown ui`), then http://127.0.0.1:3000")
    print("MLflow UI:  `make mlflow-ui`, then http://127.0.0.1:5000")
    print_stage_times(result, time.perf_counter() - started)
    print(f"finished in {time.perf_counter() - started:.0f} s")
    return 0


def cmd_next_batch(args: argparse.Namespace) -> int:
    """The retrain loop on the demo: a later day of logs arrives (with its feedback), the hourly curation
    scores it, the retrain sensor is evaluated exactly as the Dagster daemon would, and when it asks for a
    run, the retrain job runs here (with the demo's run config) and ends at the promotion gate and the
    deployed endpoint."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    prepare_dagster_home()
    import dagster as dg

    from homegrown.demo.generate import generate_demo_logs
    from pipelines.sensors import retrain_on_new_examples

    started = time.perf_counter()
    folder = paths.demo_input_dir()
    if not folder.is_dir():
        raise SystemExit(f"no demo logs in {folder}: run `homegrown demo` first")
    batch = args.batch or len(list(folder.glob("assistant-*.jsonl")))
    written = generate_demo_logs(folder, seed=0, batch=batch, scale=args.scale)
    print(f"wrote day {batch} of the demo logs to {folder}: {written['lines']} lines, {written['interactions']} interactions")
    before = status().get("model", {}).get("version")

    run_pipeline("*scored_dataset")  # raw_interactions, synthetic_examples, scored_dataset: the curation
    instance = dg.DagsterInstance.get()
    decision = retrain_on_new_examples(dg.build_sensor_context(instance=instance))
    if isinstance(decision, dg.SkipReason):
        print(f"the retrain sensor skipped: {decision.skip_message}")
        return 0
    print(f"the retrain sensor requested a run ({decision.run_key}); running the retrain job")
    tags = {**decision.tags, "dagster/run_key": decision.run_key, "dagster/sensor_name": "retrain_on_new_examples"}
    result = run_pipeline(LOOP_SELECTION, args.config, raise_on_error=False, tags=tags)
    info = status()
    gate = info.get("eval", {})
    after = info.get("model", {}).get("version")
    print(f"\ncandidate model version {after} (was {before}); promoted: {gate.get('promoted')}")
    if not gate.get("promoted"):
        print("  gate failures:", gate.get("gate_failures"))
    deployed = _store().latest("deployed_endpoint") or {}
    if gate.get("promoted") and deployed.get("rollout") == "staged":
        print(f"  staged rollout: {deployed.get('model')} answers {deployed.get('canary_share'):.0%} of the "
              "conversations as the challenger; the staged_rollout sensor (the Dagster daemon, `make ui`) steps "
              "it up or rolls it back on live outcomes")
    endpoint = info.get("endpoint") or {}
    print("endpoint:", json.dumps(endpoint, default=str))
    if endpoint.get("url") and endpoint.get("healthy"):
        ask_all(endpoint, args.ask)
    print(f"finished in {time.perf_counter() - started:.0f} s")
    if failed_steps(result) not in ([], ["eval_report"]):
        raise SystemExit("the retrain failed before or after the promotion gate; see the Dagster run log above")
    return 0


def cmd_specialists(args: argparse.Namespace) -> int:
    """Train one adapter per example type on the current splits, gate each on its slice against the general
    candidate, serve the passed ones beside the champion, and ask each one question through the endpoint."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    if _store().pointer("quantized_model") is None:
        raise SystemExit("no general candidate yet: run `homegrown demo` (or the retrain job) first")
    result = run_pipeline(f"group:{SPECIALISTS_GROUP}", args.config, raise_on_error=False)
    failed = failed_steps(result)
    if "specialist_adapters" in failed:
        raise SystemExit("specialist_adapters failed; see the Dagster run log above")
    trained = _store().latest("specialist_adapters")
    if trained:
        from homegrown.specialists import summary_table

        print("\n== specialists (each on its own test slice) ==")
        print(summary_table(trained["specialists"]))
        for item in trained["specialists"]:
            print(f"  {item['example_type']}: gate {'passed' if item['gate_passed'] else 'blocked'}; against the "
                  f"general model: {item['versus_general']['verdict']}"
                  + ("" if item["gate_passed"] else f" ({'; '.join(item['gate']['failures'][:3])})"))
    deployed = _store().latest("deployed_specialists")
    if deployed and "deployed_specialists" not in failed:
        print(f"\nserving {', '.join(sorted(deployed['adapters']))} as {deployed['model']} at {deployed['url']}/v1; "
              "a request declares its type with metadata={'example_type': ...} or the X-Example-Type header")
        for example_type, answer in sorted(deployed["answers"].items()):
            print(f"  {example_type}: {answer[:160]!r}")
    elif "deployed_specialists" in failed:
        print("\nno specialist is served: none passed its gate, or the smoke test failed (see the run log)")
    print_stage_times(result, time.perf_counter() - started)
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    """Download what a registered version serves from the tracking server (MLFLOW_TRACKING_URI) and, with
    --serve, serve it from this machine's gateway: a machine that never ran the pipeline serves the champion."""
    from mlflow.exceptions import MlflowException

    from homegrown.tracking import tracker_from_env

    tracker = tracker_from_env()
    try:
        if args.part:
            folder = tracker.download_model(args.uri, args.dest or paths.subdir("models", "registry", "pulled"),
                                            args.part)
            print(f"downloaded {args.part} of {args.uri} to {folder}")
            return 0
        gguf, version = tracker.pull_gguf(args.uri, args.dest)
    except (MlflowException, FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"cannot pull {args.uri} from {tracker.tracking_uri}: {exc}") from exc
    print(f"{args.uri} is version {version['version']}; its served file: {gguf}")
    if not args.serve:
        return 0
    from homegrown.gateway.deploy import serve_pulled

    outcome = serve_pulled(version["version"], gguf)
    if not outcome["smoke_ok"]:
        raise SystemExit(f"the gateway did not serve it: {outcome['smoke_detail']}")
    print(f"serving {outcome['model']} at {outcome['url']}/v1; smoke answer: {outcome['smoke_answer'][:160]!r}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    info = status()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key}: {json.dumps(value, indent=2) if isinstance(value, dict) else value}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    prepare_dagster_home()
    cmd = [sys.executable, "-m", "dagster", "dev", "-m", "pipelines.definitions", "-p", str(args.port)]
    return subprocess.call(cmd, cwd=paths.PROJECT_ROOT)


def cmd_eval(args: argparse.Namespace) -> int:
    from homegrown.data.ingest import load_interactions
    from homegrown.evaluation.evaluate import attach_logged_answers, evaluate_models, load_test_examples
    from homegrown.tracking import REGISTERED_MODEL, tracker_from_env
    from homegrown.training.base import embedded_gguf_path

    store = _store()
    splits = store.require_latest("dataset_splits")
    spec = args.model
    if spec.isdigit() or spec.startswith("models:/"):
        tracker = tracker_from_env()
        uri = spec if spec.startswith("models:/") else f"models:/{REGISTERED_MODEL}/{spec}"
        version = tracker.resolve_model_uri(uri)
        spec = tracker.local_gguf(version) or version["tags"].get("merged_path")
        if not spec:
            raise SystemExit(f"model version {version['version']} has no GGUF or merged model recorded")
    examples = load_test_examples(args.test or splits["paths"]["test"]["parquet"], args.limit or None)
    models = {"model": spec}
    if not args.no_base:
        models["base"] = str(embedded_gguf_path())
    raw = store.latest("raw_interactions")
    if raw and args.incumbent:
        attach_logged_answers(examples, load_interactions(raw["db_path"]))
        models["incumbent"] = "incumbent"
    out_dir = Path(args.out) if args.out else paths.subdir("eval-by-hand", time.strftime("%Y%m%d-%H%M%S"))
    from resources import TeacherResource

    knowledge = Path(args.knowledge) if args.knowledge else TeacherResource().knowledge_path()
    outcome = evaluate_models(models, examples, out_dir, knowledge_path=knowledge, candidate="model", base=None if args.no_base else "base",
                              max_tokens=args.max_tokens, api_key=args.api_key)
    print(json.dumps(outcome.summary(), indent=2, default=str))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from homegrown.gateway.server import serve
    from homegrown.gateway.settings import GatewaySettings

    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    serve(GatewaySettings(**overrides))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from homegrown.gateway.server import stop_background

    stopped = stop_background()
    print("stopped the background gateway" if stopped else "no background gateway was running")
    return 0


def cmd_lineage(args: argparse.Namespace) -> int:
    from homegrown.lineage import interaction_lineage, model_lineage
    from homegrown.tracking import tracker_from_env

    if args.model:
        info = model_lineage(_store(), tracker_from_env(), args.model)
        if not args.all_ids:
            for split in info["splits"].values():
                ids = split["interaction_ids"]
                split["interaction_ids"] = ids[:20] + ([f"... {len(ids) - 20} more (--all-ids)"] if len(ids) > 20 else [])
    elif args.interaction:
        info = interaction_lineage(_store(), tracker_from_env(), args.interaction)
    else:
        raise SystemExit("give an interaction id or --model VERSION")
    print(json.dumps(info, indent=2, default=str))
    return 0


def ingestion_state_db() -> Path | None:
    """The ingestion state database of the latest ``raw_interactions`` (or its default place), if it exists."""
    store = _store()
    raw = store.latest("raw_interactions")
    path = Path(raw["db_path"]) if raw else store.root / "raw_interactions" / "state" / "interactions.sqlite"
    return path if path.exists() else None


def cmd_forget(args: argparse.Namespace) -> int:
    from homegrown.data.forget import FORGET_LOG, forget
    from homegrown.gateway.settings import GatewaySettings

    state_db = Path(args.state_db) if args.state_db else ingestion_state_db()
    entry = forget(org_id=args.org, conversation_id=args.conversation, log_db_url=GatewaySettings().log_db_url,
                   state_db=state_db, forget_log=paths.home() / FORGET_LOG, by=args.by)
    gateway, state = entry.get("gateway_log", {}), entry.get("ingestion_state") or {}
    print(f"gateway log: {gateway.get('interactions', 0)} interactions, {gateway.get('feedback_events', 0)} "
          f"feedback events, {gateway.get('export_lines', 0)} export lines removed")
    print(f"ingestion state: {state.get('interactions', 0)} interactions, {state.get('feedback', 0)} feedback "
          f"fields, {state.get('quarantined', 0)} quarantined lines removed"
          + ("; organisation added to the opt-out list" if state.get("opted_out") else "")
          + ("" if state_db else " (no ingestion state found)"))
    print(f"record appended to {paths.home() / FORGET_LOG}")
    return 0


def cmd_retention(args: argparse.Namespace) -> int:
    from homegrown.gateway.logstore import LogStore
    from homegrown.gateway.settings import GatewaySettings

    settings = GatewaySettings()
    days = settings.log_retention_days if args.days is None else args.days
    action = args.action or settings.retention_action
    store = LogStore(settings.log_db_url)
    try:
        result = store.apply_retention(days, action)
    finally:
        store.close()
    print(json.dumps(result, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="homegrown", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the whole pipeline on the embedded default")
    demo.add_argument("--select", default=LOOP_SELECTION,
                      help="Dagster asset selection (default: the whole loop, without the optional specialists)")
    demo.add_argument("--config", default=str(paths.PROJECT_ROOT / "pipelines" / "demo_config.yaml"),
                      help="Dagster run config (YAML); the default trains briefly enough for a laptop")
    demo.add_argument("--ask", nargs="*", default=["Do you serve wagyu beef?", "How much is the lobster upgrade?"],
                      help="questions sent to the deployed endpoint at the end")
    demo.set_defaults(func=cmd_demo)

    run = sub.add_parser("run", help="run the whole pipeline on $HOMEGROWN_INPUT with the default recipe (no config)")
    run.add_argument("--select", default=LOOP_SELECTION,
                     help="Dagster asset selection (default: the whole loop, without the optional specialists)")
    run.add_argument("--config", default=None, help="optional Dagster run config (YAML); default: none")
    run.add_argument("--ask", nargs="*", default=[], help="questions sent to the deployed endpoint at the end")
    run.set_defaults(func=cmd_demo)

    nb = sub.add_parser("next-batch", help="demo retrain loop: add a later day of logs, curate, ask the sensor, retrain")
    nb.add_argument("--batch", type=int, default=0, help="which day to write (default: the next one)")
    nb.add_argument("--scale", type=float, default=0.3,
                    help="size of the new day relative to the first (0.3: ~270 lines, ~150 new good examples)")
    nb.add_argument("--config", default=str(paths.PROJECT_ROOT / "pipelines" / "demo_config.yaml"),
                    help="run config of the retrain (default: the demo's)")
    nb.add_argument("--ask", nargs="*", default=["How much is the lobster upgrade?"],
                    help="questions sent to the endpoint at the end")
    nb.set_defaults(func=cmd_next_batch)

    spec = sub.add_parser("specialists", help="after a demo or retrain: one adapter per example type, gated on its "
                                              "slice, served from one base beside the champion")
    spec.add_argument("--config", default=str(paths.PROJECT_ROOT / "pipelines" / "specialists_config.yaml"),
                      help="run config (default: two types of the demo, time-capped for a laptop)")
    spec.set_defaults(func=cmd_specialists)

    pull = sub.add_parser("pull", help="download a registered model version (models:/homegrown-assistant@champion) "
                          "from MLflow; --serve serves it from this machine's gateway")
    pull.add_argument("uri", nargs="?", default="models:/homegrown-assistant@champion",
                      help="models:/<name>@<alias> or models:/<name>/<version>")
    pull.add_argument("--dest", help="folder to download into (default <HOMEGROWN_HOME>/models/registry/v<N>, "
                      "or .../registry/pulled with --part)")
    pull.add_argument("--part", choices=["gguf", "merged", "adapter"],
                      help="download this part of the model artifacts instead of the served GGUF")
    pull.add_argument("--serve", action="store_true", help="serve the pulled GGUF as this gateway's champion")
    pull.set_defaults(func=cmd_pull)

    st = sub.add_parser("status", help="show the latest dataset, model, eval, specialists and endpoint")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(func=cmd_status)

    ui = sub.add_parser("ui", help="open the Dagster UI (dagster dev) on the project's instance")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=cmd_ui)

    ev = sub.add_parser("eval", help="evaluate any model on the test split (the eval_report outside the pipeline)")
    ev.add_argument("--model", required=True, help="registry version, models:/ URI, GGUF/HF path or http(s) URL#model")
    ev.add_argument("--test", help="a test split Parquet (default: the latest dataset's)")
    ev.add_argument("--limit", type=int, default=0, help="evaluate on the first N examples only")
    ev.add_argument("--max-tokens", type=int, default=1024, help="cap per answer (page tasks get all of it, others ~1.5x their reference)")
    ev.add_argument("--knowledge", help="the business's knowledge file (default: knowledge.json beside $HOMEGROWN_INPUT; "
                         "the demo's without an input)")
    ev.add_argument("--api-key", help="key for an endpoint URL (default: HOMEGROWN_EVAL_API_KEY / OPENAI_API_KEY)")
    ev.add_argument("--no-base", action="store_true", help="do not evaluate the base model beside it")
    ev.add_argument("--incumbent", action="store_true", help="also score the logged incumbent answers")
    ev.add_argument("--out", help="report folder")
    ev.set_defaults(func=cmd_eval)

    serve = sub.add_parser("serve", help="run the gateway in the foreground")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=cmd_serve)

    stop = sub.add_parser("stop", help="stop the background gateway")
    stop.set_defaults(func=cmd_stop)

    lin = sub.add_parser("lineage", help="where an interaction went, or what a model version was trained on")
    lin.add_argument("interaction", nargs="?", help="an interaction id")
    lin.add_argument("--model", help="a registered model version")
    lin.add_argument("--all-ids", action="store_true", help="list every interaction id (with --model)")
    lin.set_defaults(func=cmd_lineage)

    fg = sub.add_parser("forget", help="remove an organisation's or a conversation's rows from the gateway log, its "
                                       "exports and the ingestion state, and keep them out of future datasets")
    target = fg.add_mutually_exclusive_group(required=True)
    target.add_argument("--org", help="organisation id")
    target.add_argument("--conversation", help="conversation id")
    fg.add_argument("--state-db", help="ingestion state database (default: the latest raw_interactions')")
    fg.add_argument("--by", help="who asks (recorded in the forget log; default: the OS user)")
    fg.set_defaults(func=cmd_forget)

    ret = sub.add_parser("retention", help="delete or anonymise gateway log rows older than the retention period")
    ret.add_argument("--days", type=int, help="default: HOMEGROWN_LOG_RETENTION_DAYS (30)")
    ret.add_argument("--action", choices=["delete", "anonymise"], help="default: HOMEGROWN_RETENTION_ACTION (delete)")
    ret.set_defaults(func=cmd_retention)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
