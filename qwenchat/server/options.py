"""A request's sampling fields -> `GenerateOptions` on top of the server's defaults.

Ranges are checked by the rules of `qwenchat.config` (the ones the config file and the command
line use), so the API accepts exactly what `ask --temperature ...` accepts. OpenAI fields we do
not implement are refused with a 400 when set to anything but their neutral value: presence and
frequency penalties (use `repetition_penalty`), n > 1, logprobs, logit_bias, tools.
`response_format` json_object and json_schema become the engine's output constraint."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from qwenchat.api_fields import constraint_of, option_of_field
from qwenchat.config import OPTION_NAMES, parse_value
from qwenchat.engine.records import GenerateOptions
from qwenchat.errors import ConfigError
from qwenchat.server.errors import APIError
from qwenchat.server.schemas import ChatRequest, CompletionRequest, Sampling

# API field -> (settings key whose rule checks it, GenerateOptions field)
_SETTINGS_KEY = {option: key for key, option in OPTION_NAMES.items()}
SAMPLING = {api: (_SETTINGS_KEY.get(option, option), option) for api, option in option_of_field().items()}
MAX_STOPS = 16


def generate_options(req: Sampling, base: GenerateOptions) -> GenerateOptions:
    refuse_unsupported(req)
    changes: dict[str, Any] = {}
    for field, (key, target) in SAMPLING.items():
        value = getattr(req, field, None)
        if value is None:
            continue
        try:
            changes[target] = parse_value(key, value, source="request")
        except ConfigError as e:
            raise APIError(400, f"{field} is {value!r}; {e.hint or e.message}", param=field, code="invalid_value") from None
    if isinstance(req, ChatRequest):
        changes["constraint"] = _constraint(req.response_format)
    return replace(base, **changes, stop=_stops(req.stop) or base.stop)


def _constraint(response_format: dict[str, Any] | None) -> dict[str, Any] | str | None:
    """OpenAI's response_format -> GenerateOptions.constraint (the engine checks the schema and
    answers an unsupported keyword with a 400 naming it)."""
    try:
        return constraint_of(response_format)
    except ValueError as e:
        raise APIError(400, str(e), param="response_format", code="invalid_value") from None


def refuse_unsupported(req: Sampling) -> None:
    if req.n not in (None, 1):
        _refuse("n", "this server generates one choice per request: send n = 1 (or leave it out)")
    for field in ("presence_penalty", "frequency_penalty"):
        if getattr(req, field) not in (None, 0):
            _refuse(field, f"{field} is not supported: leave it at 0 and use repetition_penalty (1 = off, 1.1 = mild)")
    if req.logprobs not in (None, False, 0) or req.top_logprobs:
        _refuse("logprobs", "log probabilities are not supported: leave logprobs out")
    if req.logit_bias:
        _refuse("logit_bias", "logit_bias is not supported: leave it out")
    if isinstance(req, ChatRequest):
        if req.tools or req.functions:
            _refuse("tools", "tool calling is not supported: leave tools out")
    if isinstance(req, CompletionRequest):
        if req.echo:
            _refuse("echo", "echo is not supported: leave it out")
        if req.suffix:
            _refuse("suffix", "suffix (fill in the middle) is not supported: leave it out")
        if req.best_of not in (None, 1):
            _refuse("best_of", "best_of is not supported: leave it out")


def _refuse(param: str, message: str) -> None:
    raise APIError(400, message, param=param, code="unsupported_parameter")


def _stops(stop: str | list[str] | None) -> tuple[str, ...]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOPS:
        _refuse("stop", f"stop has {len(stops)} strings; at most {MAX_STOPS}")
    if any(s == "" for s in stops):
        raise APIError(400, "stop strings must not be empty", param="stop", code="invalid_value")
    return tuple(stops)
