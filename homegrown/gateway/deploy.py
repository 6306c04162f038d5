"""Deploying a model version: registry aliases, the gateway's models file, hot reload, smoke test, rollback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from homegrown.gateway.server import running_gateway, start_background
from homegrown.gateway.settings import GatewaySettings, ModelSpec, read_models_file, write_models_file
from homegrown.tracking import Tracker


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


def deploy_model(
    tracker: Tracker,
    version: str,
    gguf_path: str,
    *,
    smoke_prompt: str = "What do you serve?",
    start_timeout_s: float = 120,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Make ``version`` the champion: alias, models file, (re)load, smoke test; roll everything back on failure."""
    settings = GatewaySettings()
    name = model_name(version)
    previous_alias = tracker.alias_version("champion")
    previous_models = read_models_file(settings.models_file) if Path(settings.models_file).exists() else None

    write_models_file(settings.models_file, ModelSpec(name=name, gguf_path=str(gguf_path), version=str(version)),
                      previous_models.challenger if previous_models else None)
    previous_previous = tracker.alias_version("previous")
    tracker.set_alias("champion", str(version))
    if previous_alias and str(previous_alias["version"]) != str(version):
        tracker.set_alias("previous", str(previous_alias["version"]))

    api_key = settings.client_api_key()
    gateway = running_gateway()
    url = gateway["url"] if gateway and gateway.get("healthy") else ""
    try:
        if url:
            log(f"gateway running at {url}: hot-reloading {name}")
            _reload(url, settings)
        else:
            log("no gateway running: starting one in the background")
            url = start_background(settings, timeout_s=start_timeout_s)
        ok, detail, answer = smoke_test(url, api_key, name, smoke_prompt)
    except (RuntimeError, OSError, httpx.HTTPError) as exc:
        ok, detail, answer = False, f"loading {name} failed: {exc}", ""
    outcome = {"url": url, "model": name, "version": str(version), "api_key": api_key, "smoke_ok": ok,
               "smoke_detail": detail, "smoke_answer": answer, "rolled_back": False,
               "previous_version": previous_alias["version"] if previous_alias else None}
    if ok:
        log(f"{name} serves at {url}; smoke answer: {answer[:200]!r}")
        return outcome

    log(f"smoke test failed ({detail}): rolling back")
    if previous_models is not None:
        write_models_file(settings.models_file, previous_models.champion, previous_models.challenger)
    else:
        Path(settings.models_file).unlink(missing_ok=True)
    if previous_alias:
        tracker.set_alias("champion", str(previous_alias["version"]))
    else:
        tracker.delete_alias("champion")
    if previous_previous:
        tracker.set_alias("previous", str(previous_previous["version"]))
    elif previous_alias:
        tracker.delete_alias("previous")
    if url:
        try:
            _reload(url, settings)
        except (RuntimeError, httpx.HTTPError) as exc:
            log(f"reload after rollback failed: {exc}")
    outcome["rolled_back"] = True
    return outcome
