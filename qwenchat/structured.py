"""Structured output for the faces: the output constraint that `ask --schema SCHEMA` /
`--json-object` or the app's settings ask for, how it is shown to the model and named, and how a
reply is checked afterwards. Torch-free (the engine enforces it: engine/constrain.py).

SCHEMA is a JSON Schema given inline (it starts with `{`), a path to a file holding one, or
simonw/llm's concise form: fields separated by commas (or lines), each `name [type][: description]`
with type str (the default), int, float or bool, all required:

    'name, age int, bio: a short bio'
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any

from qwenchat.engine.records import JSON_OBJECT  # torch-free: the engine's name for any JSON object
from qwenchat.errors import UsageError

ANY_OBJECT_WORDS = ("json", JSON_OBJECT)  # what a SCHEMA may say for "any JSON object"
OFF_WORDS = ("off", "none")  # the app's setting: no constraint (a field named "off" is not meant)
_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
_TYPE_NAMES = _TYPES | {v: v for v in _TYPES.values()}  # JSON Schema's own names are taken too
_FIELD = re.compile(r"^(?P<name>[A-Za-z_][\w-]*)(?:\s+(?P<type>\w+))?\s*(?::\s*(?P<desc>.*))?$", re.S)


def constraint_from_flags(schema: str | None, json_object: bool, no_schema: bool = False) -> dict[str, Any] | str | None:
    """The constraint of `--schema` / `--json-object` (None: neither given; `--no-schema` asks for
    none, the caller drops a saved one)."""
    if schema is not None and json_object:
        raise UsageError("--schema and --json-object both given", "use one of them: a schema implies JSON")
    if no_schema and (schema is not None or json_object):
        raise UsageError("--no-schema given with --schema or --json-object", "use one of them")
    if json_object:
        return JSON_OBJECT
    if schema is None:
        return None
    word = schema.strip().lower()
    if word in OFF_WORDS:
        raise UsageError(f"--schema {schema.strip()} does not turn JSON output off",
                         "use --no-schema (it also drops the schema a continued conversation keeps)")
    return _constraint(schema, "--schema")


def parse_schema(value: str, name: str = "--schema") -> dict[str, Any]:
    """`name`: what the user typed it into, for the errors (the app's setting is not a flag)."""
    text = value.strip()
    if not text:
        raise UsageError(f"{name} is empty", "give a JSON schema, a file holding one, or fields like 'name, age int'")
    if text.startswith(("{", "[", '"')):
        return _json(text, name)
    path = Path(text).expanduser()
    if path.is_file():
        try:
            content = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read the schema file {path}: {e}", "check the path and its permissions") from None
        return _json(content, str(path))
    if text.endswith(".json") or "/" in text:
        raise UsageError(f"schema file {text} not found", "check the path, or give the schema inline")
    return concise_schema(text, name)


def concise_schema(text: str, name: str = "--schema") -> dict[str, Any]:
    """llm's concise form -> a JSON schema with every field required."""
    parts = [p.strip() for p in (text.splitlines() if "\n" in text else text.split(","))]
    properties: dict[str, Any] = {}
    for part in filter(None, parts):
        m = _FIELD.match(part)
        if m is None:
            raise UsageError(f"{name} field {part!r} is not 'name [type][: description]'",
                             f"e.g. {_flag(name)}'name, age int, bio: a short bio'")
        kind = (m["type"] or "str").lower()
        if kind not in _TYPE_NAMES:
            close = difflib.get_close_matches(kind, list(_TYPE_NAMES), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UsageError(f"{name} field {m['name']!r} has type {kind!r}", f"{hint}use one of {', '.join(_TYPES)}")
        prop: dict[str, Any] = {"type": _TYPE_NAMES[kind]}
        if m["desc"]:
            prop["description"] = m["desc"].strip()
        properties[m["name"]] = prop
    if not properties:
        raise UsageError(f"{name} names no fields", f"e.g. {_flag(name)}'name, age int'")
    return {"type": "object", "properties": properties, "required": list(properties)}


def _flag(name: str) -> str:
    return f"{name} " if name.startswith("-") else ""


def _json(text: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{where} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}",
                         "fix the JSON (a schema is a JSON object)") from None
    if not isinstance(value, dict):
        raise UsageError(f"{where} is JSON but not an object (a {type(value).__name__})",
                         'a schema is a JSON object, e.g. {"type": "object", "properties": {...}}')
    return value


def from_text(text: str) -> dict[str, Any] | str | None:
    """The app's setting: empty or `off` = none, `json` = any JSON object, else a schema (as
    --schema)."""
    text = text.strip()
    if not text or text.lower() in OFF_WORDS:
        return None
    return _constraint(text, "the JSON output schema")


def _constraint(text: str, name: str) -> dict[str, Any] | str:
    """A SCHEMA as typed (`json`, or what parse_schema takes) -> the constraint the engine can
    enforce; `name`: where it was typed, for the errors."""
    if text.strip().lower() in ANY_OBJECT_WORDS:
        return JSON_OBJECT
    return enforceable(parse_schema(text, name), name)


def enforceable(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """`schema` when the engine can enforce it (its grammar, checked without a model: about a
    millisecond), else a UsageError naming `name`: before a model loads, not after."""
    from qwenchat.engine.errors import ConstraintError
    from qwenchat.engine.schema_grammar import check_spec

    try:
        check_spec(schema)
    except ConstraintError as e:
        raise UsageError(f"{name}: {e.message}", e.hint) from None
    return schema


def to_text(constraint: dict[str, Any] | str | None) -> str:
    """The inverse of `from_text`, for editing."""
    if constraint is None:
        return ""
    return "json" if constraint == JSON_OBJECT else json.dumps(constraint, ensure_ascii=False)


def describe(constraint: dict[str, Any] | str | None) -> str:
    """A short name for the status bar ("" when off)."""
    if constraint is None:
        return ""
    return "JSON" if constraint == JSON_OBJECT else "JSON schema"


def instruction(constraint: dict[str, Any] | str) -> str:
    """What the model is told, after the message, so it writes what the constraint allows (the
    constraint guarantees the syntax; the model still has to know which fields mean what)."""
    if constraint == JSON_OBJECT:
        return "Reply with a JSON object only."
    return "Reply with JSON only, matching this JSON schema:\n" + json.dumps(constraint, ensure_ascii=False)


def parse_reply(text: str) -> tuple[bool, Any]:
    """(whether the reply is complete JSON, its value)."""
    try:
        return True, json.loads(text)
    except ValueError:
        return False, None
