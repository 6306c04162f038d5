"""The gateway's FastAPI app: OpenAI-compatible chat completions with routing, fallback, shadow and logging.

Routes: ``POST /v1/chat/completions``, ``GET /v1/models``, ``POST /v1/feedback``, ``GET /health``,
``GET /metrics`` and ``POST /admin/reload``. Every error has OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from homegrown.gateway.admission import LOGGED_FLAG, AdmissionMiddleware, Unlogged
from homegrown.gateway.backends import (
    Backend,
    BackendError,
    BackendPool,
    Completion,
    Lease,
    PromptTooLong,
    StreamChunk,
)
from homegrown.gateway.budgets import BudgetKeeper, fallback_records_since
from homegrown.gateway.limits import LimitExceeded, check_request
from homegrown.gateway.logstore import LogStore, UnknownInteraction, iso_utc, start_retention, utc_now_iso
from homegrown.gateway.routing import NoRouteError, RouteDecision, choose_route, fallback_chain, is_unusable
from homegrown.gateway.schemas import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    ErrorBody,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    ModelCard,
    ModelList,
    ResponseMessage,
    Usage,
)
from homegrown.gateway.settings import FALLBACK, SPECIALIST, SPECIALIST_KEY, GatewaySettings, key_id
from homegrown.gateway.spool import LogSpool
from homegrown.gateway.trust import example_type_for
from homegrown.gateway.worker import WorkerDied
from homegrown.training.chat import merge_tool_call_deltas

log = logging.getLogger(__name__)


def _no_backend(fallbacks: list[str]) -> GatewayError:
    return GatewayError(502, "no backend could answer: " + "; ".join(fallbacks or ["none available"]),
                        type_="api_error", code="backend_unavailable")


class GatewayError(Exception):
    """An error answered to the client in OpenAI's shape."""

    def __init__(
        self,
        status_code: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status_code = status_code
        self.headers = headers or {}
        self.body = ErrorResponse(error=ErrorBody(message=message, type=type_, param=param, code=code))


def _error_response(
    status_code: int, message: str, type_: str, code: str | None = None, param: str | None = None
) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(message=message, type=type_, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status_code)


class GatewayMetrics:
    """Prometheus metrics in a registry of their own (several apps can live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "homegrown_gateway_requests",
            "Chat completion requests",
            ["route", "backend", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "homegrown_gateway_request_latency_seconds",
            "Time to the whole answer",
            ["route"],
            registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.fallbacks = Counter(
            "homegrown_gateway_fallbacks",
            "Requests answered by a later backend in the chain",
            ["from_route", "reason"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "homegrown_gateway_tokens", "Tokens processed", ["backend", "kind"], registry=self.registry
        )
        self.shadow = Counter(
            "homegrown_gateway_shadow_requests",
            "Shadow answers",
            ["route", "status"],
            registry=self.registry,
        )
        self.feedback = Counter(
            "homegrown_gateway_feedback_events", "Feedback events", registry=self.registry
        )


@dataclass
class Caller:
    """The authenticated client: its key, the organisation its requests are logged under, and its role
    (``app``, ``reviewer`` or ``admin``; see ``GatewaySettings.key_grants``)."""

    api_key: str
    org_id: str | None
    role: str = "app"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_trusted(self) -> bool:
        """Whether this caller's corrections may change training data (reviewer and admin keys)."""
        return self.role in ("reviewer", "admin")

    def provenance(self) -> dict[str, str]:
        """Where a logged row came from: ``{"source": "gateway", "key_id", "role"}`` (no secret)."""
        return {"source": "gateway", "key_id": key_id(self.api_key), "role": self.role}


@dataclass
class Answer:
    """What came back from the chain of backends, for the response and the log."""

    role: str
    backend: Backend
    completion: Completion
    unusable: str | None = None
    fallbacks: list[str] = field(default_factory=list)


class Gateway:
    """The request logic behind the routes: routing, fallback, shadow, logging and metrics."""

    def __init__(self, settings: GatewaySettings, pool: BackendPool, store: LogStore):
        self.settings = settings
        self.pool = pool
        self.store = store
        self.metrics = GatewayMetrics()
        self.key_grants = settings.key_grants()
        self.key_orgs = {key: grant.org for key, grant in self.key_grants.items()}
        self.admin_keys = {key for key, grant in self.key_grants.items() if grant.role == "admin"}
        self.roles_by_key_id = {key_id(key): grant.role for key, grant in self.key_grants.items()}
        self.started = int(time.time())
        self._shadow_runner = ThreadPoolExecutor(max_workers=2, thread_name_prefix="shadow")
        self.budgets = BudgetKeeper(settings)
        self.spool = LogSpool(settings.log_spool_dir)
        self._retention: threading.Event | None = None

    def start(self) -> None:
        """At start-up: move rows a failed database left in the spool, rebuild today's premium spend."""
        try:
            self.spool.drain(self._store_row, self._has_row)
            self.budgets.seed(fallback_records_since(self.store, utc_now_iso()[:10]))
        except Exception:  # the gateway must come up even when the log is down; the spool keeps retrying
            log.exception("start-up work on the log failed")
        self.spool.start(self._store_row, self._has_row)
        if self.settings.log_retention_days:
            self._retention = start_retention(
                self.store, self.settings.log_retention_days, self.settings.retention_action)

    def close(self) -> None:
        self._shadow_runner.shutdown(wait=True)
        self.spool.stop()
        if self._retention is not None:
            self._retention.set()

    # -- the answer ------------------------------------------------------------------------------------

    def cost(self, role: str, prompt_tokens: int, completion_tokens: int) -> float:
        s = self.settings
        if role == FALLBACK:
            usd = prompt_tokens / 1000 * s.fallback_usd_per_1k_prompt_tokens
            usd += completion_tokens / 1000 * s.fallback_usd_per_1k_completion_tokens
        else:
            usd = (prompt_tokens + completion_tokens) / 1000 * s.local_usd_per_1k_tokens
        return round(usd, 8)

    def answer(
        self, pool: BackendPool, body: ChatCompletionRequest, decision: RouteDecision, asked_max: bool,
        caller_key: str = "",
    ) -> Answer:
        """Try the chain of backends until one gives a usable answer (the last one's answer is taken as is).

        ``asked_max``: the client set the token limit, so stopping there is not a defect.
        """
        chain = fallback_chain(decision, pool.roles())
        fallbacks: list[str] = []
        last_error: BackendError | None = None
        for position, role in enumerate(chain):
            is_last = position == len(chain) - 1
            if role == FALLBACK and (refusal := self.budgets.fallback_refusal(caller_key)):
                fallbacks.append(f"{role} refused: {refusal}")
                continue
            try:
                with pool.lease(role) as backend:
                    try:
                        completion = backend.complete(body)
                    except WorkerDied as exc:
                        # the model worker died under this request (killed, out of memory): the supervisor
                        # restarts it, and the request is asked once more before falling back
                        log.warning("the model worker of %s died (%s); asking once more", role, exc)
                        self.metrics.fallbacks.labels(role, exc.kind).inc()
                        completion = backend.complete(body)
            except KeyError:
                continue  # swapped out since the decision
            except PromptTooLong as exc:
                if not self.settings.fallback_for_long_prompts:
                    raise GatewayError(400, str(exc), code="context_length_exceeded", param="messages") from exc
                fallbacks.append(f"{role} {exc.kind}: {exc}")
                self.metrics.fallbacks.labels(role, exc.kind).inc()
                last_error = exc
                continue
            except Exception as exc:
                if not isinstance(exc, BackendError):
                    log.exception("backend %s crashed", role)
                kind = getattr(exc, "kind", "crash")
                fallbacks.append(f"{role} {kind}: {exc}")
                self.metrics.fallbacks.labels(role, kind).inc()
                last_error = exc if isinstance(exc, BackendError) else BackendError(str(exc))
                continue
            text = completion.text if not completion.tool_calls else ""
            unusable = is_unusable(text, completion.finish_reason, max_tokens_requested=asked_max)
            if unusable and not is_last:
                fallbacks.append(f"{role} unusable: {unusable}")
                self.metrics.fallbacks.labels(role, "unusable").inc()
                continue
            return Answer(role, backend, completion, unusable, fallbacks)
        if isinstance(last_error, PromptTooLong) and len(fallbacks) == 1:
            raise GatewayError(400, str(last_error), code="context_length_exceeded", param="messages")
        if fallbacks and all(" refused: " in reason for reason in fallbacks):
            raise GatewayError(429, fallbacks[0].split(" refused: ", 1)[1], type_="rate_limit_error",
                               code="budget_exceeded")
        raise _no_backend(fallbacks)

    def open_stream(
        self, pool: BackendPool, body: ChatCompletionRequest, decision: RouteDecision, caller_key: str = ""
    ) -> tuple[str, Lease, Iterator[StreamChunk], StreamChunk, list[str]]:
        """Start streaming from the first backend of the chain that produces a first chunk.

        Once a chunk has gone to the client there is no switching, so the fallback covers failures before
        the first chunk only.
        """
        fallbacks: list[str] = []
        for role in fallback_chain(decision, pool.roles()):
            if role == FALLBACK and (refusal := self.budgets.fallback_refusal(caller_key)):
                fallbacks.append(f"{role} refused: {refusal}")
                continue
            try:
                lease = pool.acquire(role)
            except KeyError:
                continue
            chunks = lease.backend.stream(body)
            try:
                try:
                    first = next(chunks, StreamChunk(finish_reason="stop"))
                except WorkerDied as exc:  # before the first chunk nothing was sent: ask the new worker once more
                    log.warning("the model worker of %s died (%s); asking once more", role, exc)
                    self.metrics.fallbacks.labels(role, exc.kind).inc()
                    chunks = lease.backend.stream(body)
                    first = next(chunks, StreamChunk(finish_reason="stop"))
            except PromptTooLong as exc:
                chunks.close()
                lease.release()
                if not self.settings.fallback_for_long_prompts:
                    raise GatewayError(400, str(exc), code="context_length_exceeded", param="messages") from exc
                fallbacks.append(f"{role} {exc.kind}: {exc}")
                continue
            except Exception as exc:
                chunks.close()
                lease.release()
                if not isinstance(exc, BackendError):
                    log.exception("backend %s crashed", role)
                kind = getattr(exc, "kind", "crash")
                fallbacks.append(f"{role} {kind}: {exc}")
                self.metrics.fallbacks.labels(role, kind).inc()
                continue
            except BaseException:
                chunks.close()
                lease.release()
                raise
            return role, lease, chunks, first, fallbacks
        if fallbacks and all(" refused: " in reason for reason in fallbacks):
            raise GatewayError(429, fallbacks[0].split(" refused: ", 1)[1], type_="rate_limit_error",
                               code="budget_exceeded")
        raise _no_backend(fallbacks)

    # -- the log ---------------------------------------------------------------------------------------

    def build_record(
        self,
        ctx: RequestContext,
        body: ChatCompletionRequest,
        *,
        role: str | None,
        backend: Backend | None,
        text: str | None,
        tool_calls: list[dict[str, Any]] | None,
        finish_reason: str | None,
        prompt_tokens: int,
        completion_tokens: int,
        fallbacks: list[str],
        unusable: str | None,
        error: str | None = None,
    ) -> dict[str, Any]:
        messages = [message.to_log() for message in body.messages]
        if role is not None:
            answer: dict[str, Any] = {"role": "assistant", "content": text or ""}
            if tool_calls:
                answer = {"role": "assistant", "content": text or None, "tool_calls": tool_calls}
            messages.append(answer)
        latency_ms = round((time.perf_counter() - ctx.started) * 1000, 1)
        request_meta = {k: v for k, v in (body.metadata or {}).items() if k != "conversation_id"}
        metadata: dict[str, Any] = {
            **request_meta,
            "latency_ms": latency_ms,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "cost_estimate_usd": self.cost(role, prompt_tokens, completion_tokens) if role else 0.0,
            "route": role,
            "routing_reason": ctx.decision.reason if not fallbacks else "fallback: " + "; ".join(fallbacks),
            "primary_route": ctx.decision.primary,
            "backend": f"{backend.kind}:{backend.name}" if backend else None,
            "shadow_route": ctx.decision.shadow,
            "shadow_answer": None,
            "requested_model": body.model,
            "finish_reason": finish_reason,
            "stream": body.stream,
        }
        if body.user:
            metadata["user"] = body.user
        if unusable:
            metadata["unusable"] = unusable
        if error:
            metadata["error"] = error
        example_type = example_type_for(ctx.example_type, body.tools)
        if example_type != ctx.example_type:
            metadata["requested_example_type"] = ctx.example_type
        return {
            "id": ctx.id,
            "conversation_id": ctx.conversation_id,
            "created_at": ctx.created_at,
            "org_id": ctx.org_id,
            "example_type": example_type,
            "model": backend.name if backend else None,
            "messages": messages,
            "tools": body.tools,
            # Who sent it; set last so that a caller's metadata cannot claim another origin.
            "metadata": {**metadata, "provenance": {
                "source": "gateway", "key_id": ctx.key_id, "role": self.roles_by_key_id.get(ctx.key_id, "app")}},
        }

    def record_failure(self, ctx: RequestContext, body: ChatCompletionRequest, exc: GatewayError) -> None:
        """Log a request that no backend could answer (stored with status ``error``, never exported)."""
        record = self.build_record(
            ctx, body, role=None, backend=None, text=None, tool_calls=None, finish_reason=None, prompt_tokens=0,
            completion_tokens=0, fallbacks=[], unusable=None, error=exc.body.error.message,
        )
        self.record_outcome(record, "error", ctx)

    def record_outcome(self, record: dict[str, Any], status: str, ctx: RequestContext | None = None) -> None:
        """Count and store a request; an answer that cannot teach anything (see :func:`training_defect`)
        is stored with status ``error``, so it never reaches training data.

        Never raises: a row the database refuses goes to the disk spool (and into the database later), so
        a log failure never turns an answer into an error.
        """
        meta = record["metadata"]
        defect = training_defect(record) if status == "ok" and meta["route"] else None
        if defect:
            status = "error"
            meta["error"] = defect
        route = meta["route"] or "none"
        backend = record["model"] or "none"
        self.metrics.requests.labels(route, backend, status).inc()
        self.metrics.latency.labels(route).observe(meta["latency_ms"] / 1000)
        self.metrics.tokens.labels(backend, "prompt").inc(meta["prompt_tokens"])
        self.metrics.tokens.labels(backend, "completion").inc(meta["completion_tokens"])
        if ctx is not None:
            self.budgets.charge(ctx.key_id, meta["route"], meta["prompt_tokens"] + meta["completion_tokens"],
                                meta["cost_estimate_usd"])
        self._store_row(record, status, spool_on_failure=True)
        if ctx is not None:
            ctx.state[LOGGED_FLAG] = True

    def _store_row(self, record: dict[str, Any], status: str, spool_on_failure: bool = False) -> None:
        if not spool_on_failure:
            self.store.log_interaction(record, status=status)
            return
        try:
            self.store.log_interaction(record, status=status)
        except Exception as exc:  # noqa: BLE001 - any database failure: keep the row on disk instead
            log.warning("log write for %s failed (%s); spooled to disk", record.get("id"), exc)
            try:
                self.spool.write(record, status)
            except OSError:
                log.exception("the log spool refused %s too; the row is only in this log line: %s",
                              record.get("id"), json.dumps(record, default=str)[:4000])

    def _has_row(self, interaction_id: str) -> bool:
        return self.store.get_interaction(interaction_id) is not None

    async def log_unlogged(self, request: Unlogged) -> None:
        """One row for a chat request that ended before the handler logged it (refused, invalid, unauthorised)."""
        import anyio

        authorization = request.headers.get("authorization", "")
        key = authorization.partition(" ")[2].strip()
        known = key in self.key_orgs
        rid = f"req-{uuid.uuid4().hex}"
        record = {
            "id": rid,
            "conversation_id": rid,
            "created_at": utc_now_iso(),
            "org_id": self.key_orgs.get(key) if known else None,
            "example_type": "chat",
            "model": None,
            "messages": [],
            "tools": None,
            "metadata": {
                "route": None, "latency_ms": request.latency_ms, "prompt_tokens": 0, "completion_tokens": 0,
                "cost_estimate_usd": 0.0, "http_status": request.status, "error": request.error_message(),
                "rejected": True,
                "provenance": {"source": "gateway", "key_id": key_id(key) if known else None,
                               "role": self.key_grants[key].role if known else "unauthenticated"},
            },
        }
        self.metrics.requests.labels("none", "none", str(request.status)).inc()
        await anyio.to_thread.run_sync(self._store_row, record, "error", True)

    def start_shadow(
        self,
        pool: BackendPool,
        body: ChatCompletionRequest,
        role: str,
        interaction_id: str,
        primary_answer: str,
    ) -> None:
        """Ask the shadow backend too, in the background, and add its answer to the stored record."""
        self._shadow_runner.submit(self._run_shadow, pool, body, role, interaction_id, primary_answer)

    def _run_shadow(
        self,
        pool: BackendPool,
        body: ChatCompletionRequest,
        role: str,
        interaction_id: str,
        primary_answer: str,
    ) -> None:
        started = time.perf_counter()
        try:
            try:
                with pool.lease(role) as backend:
                    name = backend.name
                    completion = backend.complete(body.model_copy(update={"stream": False}))
            except (KeyError, BackendError) as exc:
                self.metrics.shadow.labels(role, "error").inc()
                self.store.update_interaction(interaction_id, {}, {"shadow_error": str(exc)})
                return
            self.metrics.shadow.labels(role, "ok").inc()
            self.store.update_interaction(
                interaction_id,
                {"teacher_response": primary_answer,
                 "student_response": answer_text(completion.text, completion.tool_calls)},
                {
                    "shadow_answer": answer_text(completion.text, completion.tool_calls),
                    "shadow_model": name,
                    "shadow_latency_ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
        except Exception:  # runs in a worker thread: report, never disturb the answered request
            log.exception("shadow request %s on %s failed", interaction_id, role)


def training_defect(record: dict[str, Any]) -> str | None:
    """Why a logged answer must not become a training example: empty, or a tool call whose arguments do not
    parse (cut by ``max_tokens``); None when it may."""
    answer = record["messages"][-1]
    calls = answer.get("tool_calls") or []
    if not calls and not (answer.get("content") or "").strip():
        return "empty answer"
    for call in calls:
        try:
            arguments = json.loads((call.get("function") or {}).get("arguments") or "")
        except json.JSONDecodeError:
            arguments = None
        if not isinstance(arguments, dict):
            return "a tool call's arguments are not a JSON object"
    return None


def answer_text(text: str, tool_calls: list[dict[str, Any]] | None) -> str:
    """An answer as one string (tool calls written as the model writes them), for shadow comparisons."""
    from homegrown.training.chat import render_tool_call

    parts = [text] if text else []
    for call in tool_calls or []:
        try:
            parts.append(render_tool_call(call))
        except ValueError:
            parts.append(json.dumps(call, ensure_ascii=False))
    return "\n".join(parts)


@dataclass
class RequestContext:
    id: str
    created: int
    created_at: str
    conversation_id: str
    org_id: str | None
    example_type: str
    decision: RouteDecision
    started: float
    max_tokens_requested: bool
    key_id: str = ""
    state: dict[str, Any] = field(default_factory=dict)  # the ASGI scope's state: marks the request as logged


# -- dependencies ------------------------------------------------------------------------------------------


def get_gateway(request: Request) -> Gateway:
    return request.app.state.gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


def get_pool(gateway: GatewayDep) -> BackendPool:
    return gateway.pool


PoolDep = Annotated[BackendPool, Depends(get_pool)]


def get_caller(
    gateway: GatewayDep,
    authorization: Annotated[str | None, Header()] = None,
    x_org_id: Annotated[str | None, Header()] = None,
) -> Caller:
    """The caller behind ``Authorization: Bearer <key>``.

    The organisation comes from the key. ``X-Org-Id`` is honoured only for an admin key bound to no
    organisation (an operator acting for a tenant); from any other key it is ignored.
    """
    if not authorization:
        raise GatewayError(401, "missing API key: send 'Authorization: Bearer <key>'", code="invalid_api_key")
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or key not in gateway.key_grants:
        raise GatewayError(401, "invalid API key", code="invalid_api_key")
    grant = gateway.key_grants[key]
    org = grant.org or (x_org_id if grant.role == "admin" else None)
    return Caller(api_key=key, org_id=org, role=grant.role)


CallerDep = Annotated[Caller, Depends(get_caller)]


def require_admin(caller: CallerDep) -> Caller:
    if not caller.is_admin:
        raise GatewayError(
            403, "this API key may not call admin routes", type_="permission_error", code="forbidden"
        )
    return caller


AdminDep = Annotated[Caller, Depends(require_admin)]


# -- routes ------------------------------------------------------------------------------------------------

chat_router = APIRouter(tags=["chat"])
models_router = APIRouter(tags=["models"])
feedback_router = APIRouter(tags=["feedback"])
ops_router = APIRouter(tags=["operations"])


@chat_router.post("/v1/chat/completions", response_model=None)
def chat_completions(
    body: ChatCompletionRequest,
    caller: CallerDep,
    gateway: GatewayDep,
    pool: PoolDep,
    request: Request,
    x_example_type: Annotated[str | None, Header()] = None,
    x_conversation_id: Annotated[str | None, Header()] = None,
) -> dict[str, Any] | StreamingResponse:
    """Answer a chat completion (``stream: true`` for server-sent events), log it, maybe shadow it."""
    settings = gateway.settings
    caller_key = key_id(caller.api_key)
    wait = gateway.budgets.retry_after(caller_key)
    if wait is not None:
        raise GatewayError(429, f"this key sends more than {settings.rate_limit_per_minute} requests a minute",
                           type_="rate_limit_error", code="rate_limit_exceeded",
                           headers={"Retry-After": str(max(1, round(wait)))})
    try:
        check_request(body, settings)
    except LimitExceeded as exc:
        raise GatewayError(400, exc.message, code=exc.code, param=exc.param) from exc
    pinned = pool.role_for_model(body.model)
    if pinned == FALLBACK and not (caller.is_admin or caller.api_key in settings.fallback_pin_keys):
        raise GatewayError(403, "this API key may not ask for the premium model by name", type_="permission_error",
                           code="forbidden", param="model")
    requested = body.requested_max_tokens()
    # One token limit goes to the backends (an upstream would otherwise get both names and pick the larger).
    body = body.model_copy(update={"max_tokens": requested or settings.max_tokens_default,
                                   "max_completion_tokens": None})

    response_id = f"chatcmpl-{uuid.uuid4().hex}"
    meta_conversation = (body.metadata or {}).get("conversation_id")
    conversation_id = str(meta_conversation or x_conversation_id or response_id)
    declared = x_example_type or (body.metadata or {}).get(SPECIALIST_KEY)
    example_type = str(declared or "chat")
    # Routed on the type the log will record (a request with tools is a tool_invocation whatever it declares),
    # and only when the request declared one or offered tools: undeclared traffic stays with the champion.
    served_type = example_type_for(example_type, body.tools) if declared or body.tools else None
    try:
        decision = choose_route(
            conversation_id,
            settings,
            pool.roles(),
            prompt=body.prompt_text(),
            pinned=pinned,
            example_type=served_type,
            specialist_types=pool.specialist_types(),
        )
    except NoRouteError as exc:
        raise GatewayError(503, str(exc), type_="api_error", code="no_backend") from exc
    if SPECIALIST in (decision.primary, pinned):
        # The specialist picks its adapter from the request's metadata: the header's type travels there too.
        body = body.model_copy(update={"metadata": {**(body.metadata or {}), SPECIALIST_KEY: served_type}})
    now = time.time()
    ctx = RequestContext(
        id=response_id,
        created=int(now),
        created_at=utc_now_iso(),
        conversation_id=conversation_id,
        org_id=caller.org_id,
        example_type=example_type,
        decision=decision,
        started=time.perf_counter(),
        max_tokens_requested=requested is not None,
        key_id=caller_key,
        state=request.scope.setdefault("state", {}),
    )
    if body.stream:
        return _stream_answer(gateway, pool, body, ctx)

    try:
        answer = gateway.answer(pool, body, decision, ctx.max_tokens_requested, caller_key)
    except GatewayError as exc:
        gateway.record_failure(ctx, body, exc)
        raise
    completion = answer.completion
    finish_reason = completion.finish_reason
    record = gateway.build_record(
        ctx,
        body,
        role=answer.role,
        backend=answer.backend,
        text=completion.text,
        tool_calls=completion.tool_calls,
        finish_reason=finish_reason,
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        fallbacks=answer.fallbacks,
        unusable=answer.unusable,
    )
    gateway.record_outcome(record, "ok", ctx)
    if decision.shadow and decision.shadow != answer.role:
        gateway.start_shadow(pool, body, decision.shadow, response_id,
                             answer_text(completion.text, completion.tool_calls))
    response = ChatCompletionResponse(
        id=response_id,
        created=ctx.created,
        model=answer.backend.name,
        choices=[
            Choice(
                message=ResponseMessage(
                    content=(completion.text or None) if completion.tool_calls else completion.text,
                    tool_calls=completion.tool_calls,
                ),
                finish_reason=finish_reason,
            )
        ],
        usage=Usage(
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            total_tokens=completion.prompt_tokens + completion.completion_tokens,
        ),
    )
    return response.model_dump(exclude_none=True)


def _sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


def _stream_answer(
    gateway: Gateway, pool: BackendPool, body: ChatCompletionRequest, ctx: RequestContext
) -> StreamingResponse:
    try:
        role, lease, chunks, first, fallbacks = gateway.open_stream(pool, body, ctx.decision, ctx.key_id)
    except GatewayError as exc:
        gateway.record_failure(ctx, body, exc)
        raise
    backend = lease.backend
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk_event(delta: dict[str, Any], finish_reason: str | None) -> bytes:
        return _sse(
            {
                "id": ctx.id,
                "object": "chat.completion.chunk",
                "created": ctx.created,
                "model": backend.name,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
        )

    parts: list[str] = []
    calls: list[dict[str, Any]] = []
    last = first
    logged = False

    def finish(error: str | None) -> None:
        """Release the model and write the one log row of this request (before ``[DONE]`` when it completes)."""
        nonlocal logged
        if logged:
            return
        logged = True
        try:
            chunks.close()
        except Exception:  # a backend that fails to close must not cost the log row
            log.exception("closing the stream of %s failed", ctx.id)
        lease.release()
        text = "".join(parts)
        usage = _usage(last)
        finish_reason = last.finish_reason
        if calls and finish_reason == "stop":
            finish_reason = "tool_calls"
        record = gateway.build_record(
            ctx,
            body,
            role=role,
            backend=backend,
            text=text,
            tool_calls=calls or None,
            finish_reason=finish_reason,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            fallbacks=fallbacks,
            unusable=is_unusable(text, finish_reason, max_tokens_requested=ctx.max_tokens_requested),
            error=error,
        )
        gateway.record_outcome(record, "ok" if error is None else "error", ctx)
        if error is None and ctx.decision.shadow and ctx.decision.shadow != role:
            gateway.start_shadow(pool, body, ctx.decision.shadow, ctx.id, answer_text(text, calls))

    def events() -> Iterator[bytes]:
        nonlocal last
        try:
            yield chunk_event({"role": "assistant", "content": ""}, None)
            current: StreamChunk | None = first
            while current is not None:
                if current.text:
                    parts.append(current.text)
                    yield chunk_event({"content": current.text}, None)
                if current.tool_calls:
                    merge_tool_call_deltas(calls, current.tool_calls)
                    yield chunk_event({"tool_calls": current.tool_calls}, None)
                last = current
                if current.finish_reason is not None:
                    break
                current = next(chunks, None)
            finish_reason = last.finish_reason or "stop"
            if calls and finish_reason == "stop":
                finish_reason = "tool_calls"
            yield chunk_event({}, finish_reason)
            if include_usage:
                usage = _usage(last)
                yield _sse(
                    {
                        "id": ctx.id,
                        "object": "chat.completion.chunk",
                        "created": ctx.created,
                        "model": backend.name,
                        "choices": [],
                        "usage": usage.model_dump(),
                    }
                )
            finish(None)
            yield _sse("[DONE]")
        except GeneratorExit:
            finish("the client disconnected before the answer was complete")
            raise
        except Exception as exc:
            if not isinstance(exc, BackendError):
                log.exception("stream %s failed", ctx.id)
            finish(str(exc) or type(exc).__name__)
            yield _sse(
                ErrorResponse(
                    error=ErrorBody(message=str(exc), type="api_error", code="backend_error")
                ).model_dump()
            )
        finally:
            finish("the stream ended early")

    async def guarded() -> AsyncIterator[bytes]:
        """The events, with the sync generator closed (model released, row written) however the stream ends:
        a client that disconnects cancels this task, and the ``finally`` still runs."""
        import anyio

        iterator = events()
        try:
            while True:
                item = await anyio.to_thread.run_sync(next, iterator, None)
                if item is None:
                    break
                yield item
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(iterator.close)
                # a generator closed before its first step never ran its ``finally``
                await anyio.to_thread.run_sync(finish, "the client disconnected before the answer began")

    return StreamingResponse(
        guarded(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Request-Id": ctx.id},
    )


def _usage(chunk: StreamChunk) -> Usage:
    prompt = chunk.prompt_tokens or 0
    completion = chunk.completion_tokens or 0
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


@models_router.get("/v1/models")
def list_models(caller: CallerDep, gateway: GatewayDep, pool: PoolDep) -> dict[str, Any]:
    """The loaded models; ``owned_by`` says the role (``homegrown:champion`` …)."""
    cards = [
        ModelCard(id=info["name"], created=gateway.started, owned_by=f"homegrown:{role}")
        for role, info in pool.describe().items()
    ]
    return ModelList(data=cards).model_dump()


@feedback_router.post("/v1/feedback")
def post_feedback(body: FeedbackRequest, caller: CallerDep, gateway: GatewayDep) -> dict[str, Any]:
    """Record feedback on an answer by its response id; 404 when the id is unknown to this caller.

    The event carries its provenance (key id and role). Its time is the server's clock: ``created_at`` is
    honoured only from an admin key (to backfill corrections made elsewhere) and never in the future; from
    other keys it is ignored (the response says which time was used). A correction from an app key is
    stored but does not change training data (the quality policy trusts reviewer and admin corrections).
    """
    created_at = None
    if body.created_at is not None and caller.is_admin:
        if body.created_at.timestamp() > time.time() + 300:
            raise GatewayError(400, "created_at is in the future", param="created_at")
        created_at = iso_utc(body.created_at)
    try:
        seq, created = gateway.store.add_feedback(
            body.feedback_for, body.fields(), created_at, org_id=caller.org_id, provenance=caller.provenance()
        )
    except UnknownInteraction as exc:
        raise GatewayError(
            404, f"no answer with id {body.feedback_for!r}", code="not_found", param="feedback_for"
        ) from exc
    gateway.metrics.feedback.inc()
    return FeedbackResponse(id=seq, feedback_for=body.feedback_for, created_at=created).model_dump()


def _optional_caller(gateway: Gateway, authorization: str | None) -> Caller | None:
    """The caller when a valid key came with the request, else None (for routes that answer both)."""
    if not authorization:
        return None
    try:
        return get_caller(gateway, authorization)
    except GatewayError:
        return None


@ops_router.get("/health")
async def health(request: Request, authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
    """Liveness. Without a key only the status and the model names; with one, what is loaded and why not.

    It runs on the event loop and takes no dependency that needs a worker thread, so a gateway busy answering
    still answers here.
    """
    gateway: Gateway = request.app.state.gateway
    pool = gateway.pool
    models = pool.describe()
    local = [role for role in models if role != FALLBACK]
    status = "ok" if local else ("degraded" if models else "unavailable")
    out: dict[str, Any] = {"status": status, "models": {role: {"name": info["name"]} for role, info in models.items()}}
    if _optional_caller(gateway, authorization) is None:
        return out
    admission = getattr(request.app.state, "admission", None)
    out.update({
        "models": models,
        "errors": pool.errors,
        "canary_share": gateway.settings.canary_share,
        "shadow": gateway.settings.shadow,
        "admission": {"admitted": admission.admitted, "capacity": admission.capacity, "refused": admission.refused}
        if admission else None,
    })
    return out


@ops_router.get("/metrics")
async def metrics(request: Request, authorization: Annotated[str | None, Header()] = None) -> Response:
    """Prometheus metrics (a valid key is needed unless ``HOMEGROWN_PUBLIC_METRICS`` is on)."""
    gateway: Gateway = request.app.state.gateway
    if not gateway.settings.public_metrics:
        get_caller(gateway, authorization)
    return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@ops_router.post("/admin/reload")
def reload_models(caller: AdminDep, gateway: GatewayDep, pool: PoolDep) -> dict[str, Any]:
    """Re-read models.json and hot-swap the models that changed; requests in flight finish on the old ones."""
    try:
        result = pool.reload(gateway.settings)
    except (OSError, ValueError, RuntimeError) as exc:
        raise GatewayError(
            400, f"reload failed, the models in service are unchanged: {exc}", code="reload_failed"
        ) from exc
    return {"status": "ok", **result, "models": pool.describe()}


# -- the app -----------------------------------------------------------------------------------------------


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    parts = []
    param = None
    for error in exc.errors():
        loc = [str(item) for item in error.get("loc", ()) if item not in ("body",)]
        if param is None and loc:
            param = loc[0]
        where = ".".join(loc) or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts), param


def create_app(
    settings: GatewaySettings, pool: BackendPool | None = None, store: LogStore | None = None
) -> FastAPI:
    """The gateway app. Without ``pool`` the models of ``settings`` are loaded now; without ``store`` the log
    database of ``settings`` is opened. What the app creates it closes at shutdown."""
    owns_pool = pool is None
    owns_store = store is None
    pool = pool if pool is not None else BackendPool.from_settings(settings)
    store = store if store is not None else LogStore(settings.log_db_url)
    gateway = Gateway(settings, pool, store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gateway.start()
        yield
        gateway.close()
        if owns_pool:
            pool.close()
        if owns_store:
            store.close()

    app = FastAPI(
        title="homegrown gateway",
        summary="OpenAI-compatible gateway in front of the business's models",
        lifespan=lifespan,
    )
    app.state.gateway = gateway

    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        return JSONResponse(exc.body.model_dump(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return _error_response(400, message, "invalid_request_error", code="invalid_request", param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return _error_response(exc.status_code, str(exc.detail), "invalid_request_error", code=code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return _error_response(500, "internal error in the gateway", "server_error")

    for router in (chat_router, models_router, feedback_router, ops_router):
        app.include_router(router)
    app.add_middleware(
        AdmissionMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_concurrent=settings.max_concurrent_requests,
        queue_size=settings.queue_size,
        retry_after_s=settings.retry_after_s,
        on_unlogged=gateway.log_unlogged,
    )
    return app
