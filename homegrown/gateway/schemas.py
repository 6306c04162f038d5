"""Request and response schemas of the gateway's HTTP API (OpenAI's shapes, plus feedback)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)


class ContentPart(BaseModel):
    """One part of a message's content list; only text parts can be served by a text model."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """An OpenAI chat message. ``developer`` is OpenAI's newer name for ``system``."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    @field_validator("content")
    @classmethod
    def _text_only(cls, value: str | list[ContentPart] | None) -> str | list[ContentPart] | None:
        if isinstance(value, list):
            for part in value:
                if part.type != "text" or part.text is None:
                    raise ValueError(f"content parts of type {part.type!r} are not supported; send text")
        return value

    def text(self) -> str:
        """The content as one string (text parts joined)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content)

    def to_log(self) -> dict[str, Any]:
        """The message as the interaction format stores it (content a string, system for developer)."""
        out: dict[str, Any] = {
            "role": "system" if self.role == "developer" else self.role,
            "content": self.text(),
        }
        if self.tool_calls:
            out["tool_calls"] = self.tool_calls
        if self.tool_call_id:
            out["tool_call_id"] = self.tool_call_id
        if self.name:
            out["name"] = self.name
        return out


class JsonSchemaFormat(BaseModel):
    """``response_format.json_schema``: the schema the answer must follow."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str = Field(default="response", min_length=1, max_length=64)
    description: str | None = None
    json_schema: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        import jsonschema

        from homegrown.gateway.grammar_limits import check_json_schema

        check_json_schema(value, "response_format")  # first: a hostile schema must not reach the validator
        try:
            jsonschema.Draft202012Validator.check_schema(value)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"response_format.json_schema.schema is not a valid JSON schema: {exc.message}") from exc
        return value


class ResponseFormat(BaseModel):
    """OpenAI's ``response_format``: plain text, any JSON object, or JSON following a schema."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_when_needed(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type json_schema needs a json_schema object with a schema")
        return self

    def to_openai(self) -> dict[str, Any]:
        """The dict an OpenAI-compatible API (and ``grammar_for_response_format``) takes."""
        return self.model_dump(exclude_none=True, by_alias=True)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``. Unknown OpenAI parameters are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    metadata: dict[str, Any] | None = None
    user: str | None = None

    @model_validator(mode="after")
    def _supported(self) -> ChatCompletionRequest:
        if self.n != 1:
            raise ValueError("n > 1 is not supported; send one request per answer")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError("stop accepts at most 4 sequences")
        self._check_tools()
        self._check_messages()
        return self

    def _check_messages(self) -> None:
        """The checks the local backend's prompt renderer makes (tool calls only on assistant messages, each
        with a function name and JSON-object arguments), made here so a malformed conversation is a 400."""
        from homegrown.training.chat import to_training_messages

        to_training_messages([message.to_log() for message in self.messages], self.tools)

    def _check_tools(self) -> None:
        import jsonschema

        from homegrown.gateway.grammar_limits import check_json_schema
        from homegrown.training.chat import tool_choice_mode, tool_name

        names = [tool_name(tool) for tool in self.tools or []]
        if len(set(names)) != len(names):
            raise ValueError(f"tool names must be unique, got {names}")
        for tool in self.tools or []:
            parameters = tool["function"].get("parameters")
            if parameters is None:
                continue
            if not isinstance(parameters, dict):
                raise ValueError(f"tool {tool_name(tool)!r}: parameters must be a JSON schema object")  # noqa: TRY004
            check_json_schema(parameters, f"tool {tool_name(tool)!r}")
            try:
                jsonschema.Draft202012Validator.check_schema(parameters)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"tool {tool_name(tool)!r}: parameters is not a valid JSON schema: {exc.message}") \
                    from exc
        tool_choice_mode(self.tools, self.tool_choice)

    def requested_max_tokens(self) -> int | None:
        """``max_completion_tokens`` (the newer name) or ``max_tokens``, whichever was sent."""
        return self.max_completion_tokens or self.max_tokens

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def prompt_text(self) -> str:
        """All message text, for the rule router."""
        return "\n".join(message.text() for message in self.messages)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[dict[str, Any]] | None = None


class Choice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: str | None
    logprobs: None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


FEEDBACK_FIELDS = ("thumbs", "outcome", "edit_ratio", "customer_rating", "led_to_booking", "admin_correction")


class FeedbackRequest(BaseModel):
    """``POST /v1/feedback``: feedback on one answer, by its response id (``chatcmpl-…``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    feedback_for: str = Field(
        min_length=1, validation_alias=AliasChoices("feedback_for", "id", "response_id")
    )
    created_at: datetime | None = Field(
        default=None, description="honoured from admin keys only (never in the future); else the server's clock"
    )
    thumbs: Literal[1, -1] | None = None
    outcome: Literal["accepted", "accepted_with_edits", "rejected", "abandoned", "regenerated"] | None = None
    edit_ratio: float | None = Field(default=None, ge=0.0, le=1.0)
    customer_rating: StrictInt | None = Field(default=None, ge=1, le=5)
    led_to_booking: StrictBool | None = None
    admin_correction: str | None = Field(default=None, min_length=1)

    @field_validator("thumbs", mode="before")
    @classmethod
    def _thumbs_is_int(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("thumbs must be 1 or -1, not a boolean")  # noqa: TRY004 (pydantic reports ValueError)
        return value

    @field_validator("created_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("created_at needs a timezone (e.g. a trailing 'Z')")
        return value

    @model_validator(mode="after")
    def _something(self) -> FeedbackRequest:
        if not self.fields():
            raise ValueError(f"give at least one feedback field: {', '.join(FEEDBACK_FIELDS)}")
        return self

    def fields(self) -> dict[str, Any]:
        """The feedback fields that were given."""
        return {name: getattr(self, name) for name in FEEDBACK_FIELDS if getattr(self, name) is not None}


class FeedbackResponse(BaseModel):
    id: int
    object: Literal["feedback"] = "feedback"
    feedback_for: str
    created_at: str


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorBody
