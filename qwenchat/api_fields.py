"""The OpenAI API's names for our generation options, written once: `qwenchat serve` reads
requests by them (server/options.py) and a remote engine writes its requests by them
(remote/fields.py).

temperature, top_p, seed, max_tokens and stop are OpenAI's own; top_k, min_p and
repetition_penalty are the extensions vLLM, llama.cpp and `qwenchat serve` accept. A structured
output constraint travels as `response_format`. Torch-free.
"""

from __future__ import annotations

from typing import Any

from qwenchat.structured import JSON_OBJECT

# GenerateOptions field -> its API field (`stop` and `constraint` have shapes of their own)
API_FIELDS: dict[str, str] = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "repetition_penalty": "repetition_penalty",
    "seed": "seed",
    "max_new_tokens": "max_tokens",
}
# other API names a request may use for an option (OpenAI's newer name for max_tokens)
API_ALIASES: dict[str, str] = {"max_completion_tokens": "max_new_tokens"}


def option_of_field() -> dict[str, str]:
    """API field -> GenerateOptions field, aliases included."""
    return {api: option for option, api in API_FIELDS.items()} | API_ALIASES


def response_format(constraint: dict[str, Any] | str) -> dict[str, Any]:
    """The response_format asking for `constraint` ("json_object" or a JSON schema)."""
    if constraint == JSON_OBJECT:
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": "reply", "schema": constraint, "strict": True}}


def constraint_of(fmt: dict[str, Any] | None) -> dict[str, Any] | str | None:
    """The constraint a response_format asks for (None: plain text); ValueError naming the
    problem for one we cannot serve."""
    kind = (fmt or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return JSON_OBJECT
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise ValueError("response_format json_schema needs json_schema.schema, a JSON Schema object")
        return schema
    raise ValueError(f"response_format type {kind!r} is not supported: use text, json_object or json_schema")
