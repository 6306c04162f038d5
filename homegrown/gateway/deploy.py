"""Deploying a model version: registry aliases, the gateway's models file, hot reload, smoke test, rollback.

Two ways in: ``immediate`` makes the version the champion at once; ``staged`` starts it as the challenger on a
share of the traffic (``canary_share`` in ``models.json``), and :mod:`homegrown.rollout` then steps the share
up, promotes it or rolls it back on live outcomes. ``auto`` is staged when a champion already serves and
immediate on the first deploy, when there is nothing to compare with.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from homegrown.gateway.logstore import utc_now_iso
from homegrown.gateway.server import running_gateway, start_background
from homegrown.gateway.settings import (
    SPECIALIST_KEY,
    GatewaySettings,
    ModelsFile,
    ModelSpec,
    RolloutMarker,
    read_models_file,
)
from homegrown.gateway.vllm import VllmError, VllmServer, serve_merged, stop_merged, stop_unused_merged
from homegrown.tracking import Tracker

ROLLOUT_MODES = ("auto", "staged", "immediate")
ALIASES = ("champion", "previous", "challenger")


def model_name(version: str | int) -> str:
    return f"homegrown-v{version}"


def smoke_test(url: str, api_key: str, expected_model: str, prompt: str, timeout_s: float = 120) -> tuple[bool, str, str]:
    """One request through the real ``openai`` client: is there an answer, and from the expected model?"""
    from openai import OpenAI

    client = OpenAI(base_url=f"{url.rstrip('/')}/v1", api_key=api_key, timeout=timeout_s, max_retries=0)
    try:
        response = client.chat.completions.create(
            model=expected_model, messages=[{"role": "user", "content": prompt}], max_tokens=64, temperature=0)
    except Exception as exc:  # noqa: BLE001 - any failure of the request fails the smoke test
        return False, f"request failed: {exc}", ""
    answer = (response.choices[0].message.content or "").strip()
    if not answer:
        return False, "empty answer", ""
    if response.model != expected_model:
        return False, f"answered by {response.model!r}, expected {expected_model!r}", answer
    return True, "ok", answer


def _reload(url: str, settings: GatewaySettings) -> None:
    key = settings.admin_api_key()
    response = httpx.post(f"{url.rstrip('/')}/admin/reload", headers={"Authorization": f"Bearer {key}"}, timeout=120)
    if response.status_code != 200:
        raise RuntimeError(f"gateway reload failed ({response.status_code}): {response.text[:500]}")


def reload_gateway(settings: GatewaySettings, url: str | None = None) -> str | None:
    """``POST /admin/reload`` to ``url``, or else to the background gateway if one runs; returns the URL
    reloaded, or None when no gateway runs (it reads ``models.json`` when it starts)."""
    url = url or _running_url() or None
    if url:
        _reload(url, settings)
    return url


def _running_url() -> str:
    """The URL of the healthy background gateway, or "" when none runs."""
    gateway = running_gateway()
    return gateway["url"] if gateway and gateway.get("healthy") else ""


def _reload_or_start(settings: GatewaySettings, url: str, start_timeout_s: float, log: Callable[[str], None],
                     what: str) -> str:
    """Hot-reload the gateway at ``url`` (it re-reads ``models.json``), or start one in the background when
    ``url`` is empty; returns the URL that serves."""
    if url:
        log(f"gateway running at {url}: hot-reloading {what}")
        _reload(url, settings)
        return url
    log("no gateway running: starting one in the background")
    return start_background(settings, timeout_s=start_timeout_s)


def resolve_rollout(rollout: str, version: str | int, current: ModelsFile | None) -> str:
    """``staged`` or ``immediate`` for a deploy of ``version``; ``auto`` is staged when another version is champion."""
    if rollout not in ROLLOUT_MODES:
        raise ValueError(f"rollout must be one of {', '.join(ROLLOUT_MODES)}, got {rollout!r}")
    champion = current.champion if current else None
    serves_another = champion is not None and champion.version != str(version)
    if rollout == "staged" and not serves_another:
        raise ValueError("a staged rollout needs another champion in models.json to compare with; "
                         "deploy the first model with rollout='immediate'")
    if rollout == "auto":
        return "staged" if serves_another else "immediate"
    return rollout


def deploy_model(
    tracker: Tracker,
    version: str,
    gguf_path: str | None,
    *,
    rollout: str = "immediate",
    canary_share: float = 0.1,
    gateway_url: str | None = None,
    smoke_prompt: str = "What do you serve?",
    start_timeout_s: float = 120,
    log: Callable[[str], None] = print,
    adapter_dir: str | None = None,
    vllm_url: str | None = None,
    vllm_merged_dir: str | None = None,
) -> dict[str, Any]:
    """Deploy ``version``: models file, aliases, (re)load, smoke test; roll everything back on failure.

    Served by the gateway's llama.cpp from ``gguf_path``, or with ``vllm_url`` by that vLLM server: the
    adapter at ``adapter_dir`` is loaded there at runtime as ``homegrown-v<version>`` and the gateway's entry
    points at it (unloaded again on rollback). With ``vllm_merged_dir`` a vLLM server of its own serves the
    merged weights as ``homegrown-v<version>`` (:func:`homegrown.gateway.vllm.serve_merged`; stopped on
    rollback, and servers no ``models.json`` entry names any more are stopped after a deploy).

    ``rollout="immediate"``: the version becomes the champion (alias ``champion``; the one before becomes
    ``previous``). ``"staged"``: it becomes the challenger on ``canary_share`` of the conversations (alias
    ``challenger``), and the champion keeps its alias until :mod:`homegrown.rollout` promotes it. ``"auto"``:
    see :func:`resolve_rollout`. ``gateway_url``: a gateway that runs elsewhere, to reload; by default the
    background gateway, started when none runs.
    """
    if not 0.0 < canary_share < 1.0:
        raise ValueError(f"canary_share must be between 0 and 1 (exclusive), got {canary_share}")
    settings = GatewaySettings()
    name = model_name(version)
    path = Path(settings.models_file)
    previous_models = read_models_file(path) if path.exists() else None
    mode = resolve_rollout(rollout, version, previous_models)
    saved_aliases = {alias: tracker.alias_version(alias) for alias in ALIASES}
    vllm: VllmServer | None = None
    merged_server = ""
    if vllm_merged_dir:
        try:
            served = serve_merged(name, vllm_merged_dir, timeout_s=max(start_timeout_s, 300))
        except (RuntimeError, FileNotFoundError, OSError) as exc:
            log(f"vLLM did not start for the merged weights of {name}: {exc}")
            return {"url": "", "model": name, "version": str(version), "api_key": "", "smoke_ok": False,
                    "smoke_detail": f"vLLM did not start for the merged weights: {str(exc)[:1000]}",
                    "smoke_answer": "", "rolled_back": False, "rollout": mode, "canary_share": None,
                    "previous_version": None, "target": "vllm-merged"}
        merged_server = served.url
        spec = ModelSpec(name=name, base_url=served.openai_url, model=name, version=str(version))
    elif vllm_url:
        if not adapter_dir:
            raise ValueError("a vLLM deployment loads the candidate's adapter at runtime: give adapter_dir")
        vllm = VllmServer(vllm_url)
        try:
            vllm.load_adapter(name, adapter_dir)
        except (VllmError, httpx.HTTPError) as exc:
            log(f"vLLM at {vllm.url} did not load {name}: {exc}")
            return {"url": "", "model": name, "version": str(version), "api_key": "", "smoke_ok": False,
                    "smoke_detail": f"vLLM did not load the adapter: {exc}", "smoke_answer": "",
                    "rolled_back": False, "rollout": mode, "canary_share": None, "previous_version": None,
                    "target": "vllm"}
        spec = ModelSpec(name=name, base_url=vllm.openai_url, model=name, version=str(version))
    else:
        spec = ModelSpec(name=name, gguf_path=str(gguf_path), version=str(version))
    current = previous_models or ModelsFile()
    now = utc_now_iso()
    if mode == "staged":
        current.model_copy(update={
            "challenger": spec, "canary_share": canary_share,
            "rollout": RolloutMarker(started_at=now, step_started_at=now)}).write(path)
        tracker.set_alias("challenger", str(version))
    else:
        # A rollout in progress goes on against the new champion, from a fresh window.
        marker = current.rollout.model_copy(update={"step_started_at": now}) if current.rollout else None
        current.model_copy(update={"champion": spec, "rollout": marker}).write(path)
        previous_alias = saved_aliases["champion"]
        tracker.set_alias("champion", str(version))
        if previous_alias and str(previous_alias["version"]) != str(version):
            tracker.set_alias("previous", str(previous_alias["version"]))

    api_key = settings.client_api_key()
    url = gateway_url or _running_url()
    try:
        url = _reload_or_start(settings, url, start_timeout_s, log,
                               f"{name} as the {'challenger' if mode == 'staged' else 'champion'}")
        ok, detail, answer = smoke_test(url, api_key, name, smoke_prompt)
    except (RuntimeError, OSError, httpx.HTTPError) as exc:
        ok, detail, answer = False, f"loading {name} failed: {exc}", ""
    champion = saved_aliases["champion"]
    outcome = {"url": url, "model": name, "version": str(version), "api_key": api_key, "smoke_ok": ok,
               "smoke_detail": detail, "smoke_answer": answer, "rolled_back": False, "rollout": mode,
               "canary_share": canary_share if mode == "staged" else None,
               "previous_version": champion["version"] if champion else None,
               "target": "vllm-merged" if merged_server else "vllm" if vllm else "llama.cpp"}
    if ok:
        log(f"{name} serves at {url}" + (f" on {canary_share:.0%} of the conversations" if mode == "staged" else "")
            + f"; smoke answer: {answer[:200]!r}")
        stop_unused_merged_servers(path, log)
        return outcome

    log(f"smoke test failed ({detail}): rolling back")
    if previous_models is not None:
        previous_models.write(path)
    else:
        path.unlink(missing_ok=True)
    restore_aliases(tracker, saved_aliases)
    if url:
        try:
            _reload(url, settings)
        except (RuntimeError, httpx.HTTPError) as exc:
            log(f"reload after rollback failed: {exc}")
    if vllm is not None:
        try:
            vllm.unload_adapter(name)
        except (VllmError, httpx.HTTPError) as exc:
            log(f"unloading {name} from vLLM after the rollback failed: {exc}")
    if merged_server:
        stop_merged(merged_server)
    outcome["rolled_back"] = True
    return outcome


def stop_unused_merged_servers(models_path: Path, log: Callable[[str], None] = print) -> None:
    """Stop the merged-weights vLLM servers that no entry of the models file points at any more."""
    current = read_models_file(models_path) if models_path.exists() else ModelsFile()
    urls = {spec.base_url for spec in (current.champion, current.challenger, current.specialist)
            if spec is not None and spec.base_url}
    for name in stop_unused_merged(urls):
        log(f"stopped the vLLM server of {name}: no longer served")


def serve_pulled(version: str, gguf_path: Path | str, *, start_timeout_s: float = 120,
                 smoke_prompt: str = "What do you serve?", log: Callable[[str], None] = print) -> dict[str, Any]:
    """Serve a version pulled from the registry as this machine's champion: the models file's champion entry,
    reload (or start) the gateway, smoke test; the entry before is put back when the smoke test fails. The
    registry's aliases are left as they are: this machine serves what the registry says, it does not decide."""
    settings = GatewaySettings()
    name = model_name(version)
    path = Path(settings.models_file)
    previous = read_models_file(path) if path.exists() else None
    spec = ModelSpec(name=name, gguf_path=str(gguf_path), version=str(version))
    (previous or ModelsFile()).model_copy(update={"champion": spec}).write(path)
    api_key = settings.client_api_key()
    url = _running_url()
    try:
        url = _reload_or_start(settings, url, start_timeout_s, log, f"{name} as the champion")
        ok, detail, answer = smoke_test(url, api_key, name, smoke_prompt)
    except (RuntimeError, OSError, httpx.HTTPError) as exc:
        ok, detail, answer = False, f"loading {name} failed: {exc}", ""
    if not ok:
        if previous is not None:
            previous.write(path)
        else:
            path.unlink(missing_ok=True)
        if url:
            with contextlib.suppress(RuntimeError, httpx.HTTPError):
                _reload(url, settings)
    return {"url": url, "model": name, "version": str(version), "smoke_ok": ok, "smoke_detail": detail,
            "smoke_answer": answer, "rolled_back": not ok}


def restore_aliases(tracker: Tracker, saved: dict[str, dict[str, Any] | None]) -> None:
    """Put registry aliases back as ``saved`` (alias -> ``alias_version`` result) had them; None deletes."""
    for alias, before in saved.items():
        now = tracker.alias_version(alias)
        if before is not None:
            if now is None or str(now["version"]) != str(before["version"]):
                tracker.set_alias(alias, str(before["version"]))
        elif now is not None:
            tracker.delete_alias(alias)


def smoke_requests_for(test_parquet: Path | str, example_types: list[str]) -> dict[str, dict[str, Any]]:
    """One request per type for the deployment's smoke test: the first test example of the type (by id), as
    the app would send it: its messages but the last, and its tools."""
    import json

    import pandas as pd

    frame = pd.read_parquet(test_parquet).sort_values("example_id")
    out: dict[str, dict[str, Any]] = {}
    for example_type in example_types:
        rows = frame[frame[SPECIALIST_KEY].fillna("chat").astype(str) == example_type]
        if rows.empty:
            raise ValueError(f"the test split has no {example_type} example to smoke-test its specialist with")
        row = rows.iloc[0]
        messages = json.loads(row["messages"]) if isinstance(row["messages"], str) else list(row["messages"])
        tools = row.get("tools")
        if isinstance(tools, str):
            tools = json.loads(tools) if tools.strip() else None
        elif not hasattr(tools, "__len__"):
            tools = None  # missing in this row (NaN)
        out[example_type] = {"messages": [dict(m) for m in messages[:-1]],
                             "tools": [dict(t) for t in tools] if tools is not None and len(tools) else None}
    return out


def deploy_specialists(
    base_gguf: str,
    adapters: dict[str, str],
    smoke_requests: dict[str, dict[str, Any]],
    *,
    name: str,
    gateway_url: str | None = None,
    start_timeout_s: float = 120,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Serve ``adapters`` (example type -> llama.cpp LoRA file) over ``base_gguf`` as the gateway's
    ``specialist`` role, then send each type one request through the real ``openai`` client
    (``smoke_requests[type]``: ``messages`` and ``tools``, the type declared in ``metadata``): every one must be
    answered by the specialist. On failure the previous ``specialist`` entry is restored."""
    missing = sorted(set(adapters) - set(smoke_requests))
    if missing:
        raise ValueError(f"no smoke example for the specialist types {missing}")
    settings = GatewaySettings()
    path = Path(settings.models_file)
    previous_models = read_models_file(path) if path.exists() else None
    if previous_models is None or previous_models.champion is None:
        raise ValueError("specialists serve beside a general champion, which answers every other request: "
                         "deploy a model first (deployed_endpoint)")
    spec = ModelSpec(name=name, gguf_path=str(base_gguf), adapters={k: str(v) for k, v in adapters.items()})
    previous_specialist = previous_models.specialist
    previous_models.model_copy(update={"specialist": spec}).write(path)

    api_key = settings.client_api_key()
    url = gateway_url or _running_url()
    answers: dict[str, str] = {}
    try:
        url = _reload_or_start(settings, url, start_timeout_s, log, f"the specialists {sorted(adapters)}")
        ok, detail = True, "ok"
        for example_type, request in sorted(smoke_requests.items()):
            if example_type not in adapters:
                continue
            good, why, answer = _smoke_specialist(url, api_key, name, example_type, request, SPECIALIST_KEY)
            answers[example_type] = answer
            if not good:
                ok, detail = False, f"{example_type}: {why}"
                break
    except (RuntimeError, OSError, httpx.HTTPError) as exc:
        ok, detail = False, f"loading the specialists failed: {exc}"
    outcome = {"url": url, "model": name, "adapters": dict(adapters), "api_key": api_key, "smoke_ok": ok,
               "smoke_detail": detail, "answers": answers, "rolled_back": False}
    if ok:
        log(f"{name} serves {', '.join(sorted(adapters))} at {url}")
        return outcome
    log(f"specialist smoke test failed ({detail}): restoring the previous specialists")
    # Only the specialist entry goes back: a rollout or a deployment may have moved the rest meanwhile.
    read_models_file(path).model_copy(update={"specialist": previous_specialist}).write(path)
    if url:
        try:
            _reload(url, settings)
        except (RuntimeError, httpx.HTTPError) as exc:
            log(f"reload after rollback failed: {exc}")
    outcome["rolled_back"] = True
    return outcome


def _smoke_specialist(url: str, api_key: str, expected_model: str, example_type: str, request: dict[str, Any],
                      key: str, timeout_s: float = 120) -> tuple[bool, str, str]:
    """One request of ``example_type`` through the real ``openai`` client: answered, by the specialist?"""
    import json

    from openai import OpenAI

    client = OpenAI(base_url=f"{url.rstrip('/')}/v1", api_key=api_key, timeout=timeout_s, max_retries=0)
    tools = request.get("tools") or None
    try:
        response = client.chat.completions.create(
            model="homegrown", messages=request["messages"], max_tokens=96, temperature=0,
            metadata={key: example_type}, **({"tools": tools} if tools else {}))
    except Exception as exc:  # noqa: BLE001 - any failure of the request fails the smoke test
        return False, f"request failed: {exc}", ""
    message = response.choices[0].message
    answer = (message.content or "").strip() or json.dumps(
        [call.model_dump() for call in message.tool_calls or []])
    if answer in ("", "[]"):
        return False, "empty answer", ""
    if response.model != expected_model:
        return False, f"answered by {response.model!r}, expected the specialist {expected_model!r}", answer
    return True, "ok", answer
