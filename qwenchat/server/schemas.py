"""The request bodies of /v1/chat/completions and /v1/completions, as the OpenAI reference
defines them, validated with pydantic: a wrong type, a missing field or an unknown role is a 400
naming the field (`param`). Value ranges of the sampling fields are checked in `options`, by the
same rules as the config file and the command line. Fields we do not implement are refused
when set to anything but their neutral value, never silently ignored; purely informational ones
(`user`, `metadata`, ...) are accepted and ignored."""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError, model_validator

from qwenchat.server.errors import APIError

Number = StrictFloat  # strict: accepts ints, refuses "0.5" and true


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: StrictStr


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    # null for an assistant's turn: what OpenAI accepts, and clients replay history that way
    content: Union[StrictStr, list[TextPart], None]
    name: StrictStr | None = None

    @model_validator(mode="after")
    def _content_unless_assistant(self) -> "ChatMessage":
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a {self.role} message needs content (null is for an assistant's turn only)")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content)

    def engine_role(self) -> str:
        return "system" if self.role == "developer" else self.role  # the newer name for system


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: StrictBool = False


class Sampling(BaseModel):
    """The fields both endpoints share."""

    model_config = ConfigDict(extra="ignore")
    model: StrictStr | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    max_tokens: StrictInt | None = None
    temperature: Number | None = None
    top_p: Number | None = None
    top_k: StrictInt | None = None
    min_p: Number | None = None
    repetition_penalty: Number | None = None
    seed: StrictInt | None = None
    stop: Union[StrictStr, list[StrictStr], None] = None
    n: StrictInt | None = None
    presence_penalty: Number | None = None
    frequency_penalty: Number | None = None
    logit_bias: dict[str, Any] | None = None
    logprobs: Any = None
    top_logprobs: StrictInt | None = None


class ChatRequest(Sampling):
    messages: list[ChatMessage]
    max_completion_tokens: StrictInt | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    # vLLM's way (which qwenchat's remote engine uses) to extend the last assistant message
    continue_final_message: StrictBool | None = None
    add_generation_prompt: StrictBool | None = None


class CompletionRequest(Sampling):
    prompt: Union[StrictStr, list[StrictStr]]
    echo: StrictBool | None = None
    suffix: StrictStr | None = None
    best_of: StrictInt | None = None


class TokenizeRequest(BaseModel):
    """vLLM's POST /tokenize: a prompt, or messages through the chat template (which is how
    qwenchat's own client counts a conversation for its context meter)."""

    model_config = ConfigDict(extra="ignore")
    model: StrictStr | None = None
    prompt: StrictStr | None = None
    messages: list[ChatMessage] | None = None

    @model_validator(mode="after")
    def _one_of_them(self) -> "TokenizeRequest":
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("send either prompt or messages")
        return self


def parse(model: type[BaseModel], data: dict[str, Any]) -> Any:
    """`data` as `model`, or a 400 naming the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        # the deepest error: for a union (content as text or parts) it names the part at fault
        err = max(e.errors(), key=lambda x: len(x.get("loc", ())))
        param = _param(err.get("loc", ()))
        # a check of the whole body (TokenizeRequest: prompt or messages) names no field
        raise APIError(400, _message(err, param), param=param or None, code="invalid_value") from None


def _param(loc: tuple[Any, ...]) -> str:
    # drop pydantic's union-branch names ("str", "list[TextPart]") so the path reads like the JSON
    parts = [p for p in loc if isinstance(p, int) or not any(c in str(p) for c in "[]") and p not in _BRANCHES]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


_BRANCHES = {"str", "int", "float", "bool", "dict", "list", "function-after", "union", "literal"}


def _message(err: dict[str, Any], param: str) -> str:
    kind, msg = err.get("type", ""), err.get("msg", "invalid value")
    if kind == "missing":
        return f"'{param}' is required"
    if kind == "value_error":  # a check of our own: its message says it all
        said = msg.removeprefix("Value error, ")
        return f"{param}: {said}" if param else said
    if kind == "literal_error" and param.endswith(".role"):
        return f"{param}: unknown role {err.get('input')!r}; use system, user or assistant"
    if kind == "literal_error" and param.endswith(".type"):
        return f"{param}: content parts of type {err.get('input')!r} are not supported; send text parts"
    return f"{param}: {msg} (got {_short(err.get('input'))})"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
