"""Structured output for the faces: the output constraint that `ask --schema SCHEMA` /
`--json-object` or the app's settings ask for, how it is shown to the model and named, and how a
reply is checked afterwards. Torch-free (the engine enforces it: engine/constrain.py).

SCHEMA is a JSON Schema given inline (it starts with `{`), a path to a file holding one, or
simonw/llm's concise form: fields separated by commas (or lines), each `name [type][: description]`
with a one-word name and type str (the default), int, float or bool, all required:

    'name, age int, bio: a short bio'

A description holding a comma needs the form with one field a line (a newline after each).
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

from qwenchat.engine.records import JSON_OBJECT  # torch-free: the engine's name for any JSON object
from qwenchat.errors import QwenchatError, UsageError
from qwenchat.paths import user_path

ANY_OBJECT_WORDS = ("json", JSON_OBJECT)  # what a SCHEMA may say for "any JSON object"
OFF_WORDS = ("off", "none")  # the app's setting: no constraint (a field named "off" is not meant)
_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
_TYPE_NAMES = _TYPES | {v: v for v in _TYPES.values()}  # JSON Schema's own names are taken too
_TYPO = 0.65  # how close an unknown type must be to a type's name to be taken for a typo of it:
# 'integr' -> integer (0.92), 'itn' -> int (0.67), but 'name' (0.6 to number) in 'my name' is a word
_EXPECTED = "a JSON Schema file, the schema inline (a JSON object), or fields like 'name, age int'"
_COMMA_HINT = {  # by where the schema was typed: a flag can hold lines, the app's one-line field cannot
    True: "write one field a line (a newline after each), e.g. --schema $'bio: short, plain\\nage int' in bash or zsh",
    False: "give a JSON schema to keep commas in a description, "
           'e.g. {"type": "object", "properties": {"bio": {"type": "string", "description": "short, plain"}}}',
}
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
        raise UsageError(f"{name} is empty", f"give {_EXPECTED}")
    if text.startswith(("{", "[", '"')):
        return _json(text, name)
    path = user_path(text)
    if path.is_file():
        try:
            content = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read the schema file {path}: {e}", "check the path and its permissions") from None
        return _json(content, str(path))
    if _names_a_file(text):
        if path.is_dir():
            raise UsageError(f"{text} is a directory, not a schema file", f"give {_EXPECTED}")
        raise UsageError(f"schema file {text} not found", "check the path, or give the schema inline")
    return concise_schema(value, name)  # unstripped: a trailing newline keeps a one-field form per line


def _names_a_file(text: str) -> bool:
    """Whether a SCHEMA that is no file was meant as one (else it is the concise form, whose
    descriptions may hold a '/': 'url: a link, https://...')."""
    return text.endswith(".json") or ("/" in text and not any(c in text for c in ",:\n"))


def concise_schema(text: str, name: str = "--schema") -> dict[str, Any]:
    """llm's concise form -> a JSON schema with every field required."""
    one_line = "\n" not in text
    parts = [p.strip() for line in (text.split(",") if one_line else text.splitlines()) for p in _fields(line)]
    parts = [p for p in parts if p]
    properties: dict[str, Any] = {}
    for i, part in enumerate(parts):
        m = _FIELD.match(part)
        kind = (m["type"] or "str").lower() if m else None
        if kind not in _TYPE_NAMES:
            after_description = one_line and any(":" in p for p in parts[:i])
            raise _field_error(part, kind, name, after_description)
        prop: dict[str, Any] = {"type": _TYPE_NAMES[kind]}
        if m["desc"]:
            prop["description"] = m["desc"].strip()
        if m["name"] in properties:  # JSON has one value a key: the second silently replaced the first
            raise UsageError(f"{name} names the field {m['name']!r} twice", "give each field once, or rename one")
        properties[m["name"]] = prop
    if not properties:
        raise UsageError(f"{name} names no fields", f"e.g. {_flag(name)}'name, age int'")
    return {"type": "object", "properties": properties, "required": list(properties)}


def _fields(line: str) -> list[str]:
    """A line of the form with one field a line, or of the comma form among them ('name, age int'
    with a newline after it, as a script may pass it): a line that is no field by itself but
    splits at its commas into fields is read that way."""
    if "," not in line or _FIELD.match(line.strip()):
        return [line]
    return line.split(",")


def _field_error(part: str, kind: str | None, name: str, after_description: bool) -> UsageError:
    """Why `part` is no field: its type `kind` is unknown (None: it is not even
    `name [type][: description]`). `after_description`: it follows a description on one line,
    so most likely that description's comma split it off ('bio: short, plain spoken')."""
    close = difflib.get_close_matches(kind, list(_TYPE_NAMES), n=1, cutoff=_TYPO) if kind else []
    if close:  # 'age integr'
        return UsageError(f"{name} field {part!r} has type {kind!r}",
                          f"did you mean {close[0]!r}? use one of {', '.join(_TYPES)}")
    if after_description:
        return UsageError(f"{name}: {part!r} is not a field; on one line commas separate fields, "
                          "so a description cannot hold a comma", _COMMA_HINT[name.startswith("-")])
    words = part.partition(":")[0].split()
    if len(words) > 1 and all(_FIELD.match(w) for w in words):  # 'my name', 'my name int'
        return _one_word_error(part, words, name)
    if kind is not None:
        return UsageError(f"{name} field {part!r} has type {kind!r}", f"use one of {', '.join(_TYPES)}")
    return UsageError(f"{name} field {part!r} is not 'name [type][: description]'",
                      f"e.g. {_flag(name)}'name, age int, bio: a short bio'")


def _one_word_error(part: str, words: list[str], name: str) -> UsageError:
    """`part`'s name is `words` (the last one perhaps a type): the fix joins them with '_'."""
    typed = words[-1].lower() in _TYPE_NAMES
    joined = "_".join(words[:-1]) + f" {words[-1]}" if typed else "_".join(words)
    problem = "" if typed else f", and {words[-1]!r} is not a type"
    fixed = joined + "".join(part.partition(":")[1:])  # the description as it was
    return UsageError(f"{name} field {part!r}: a field name is one word{problem}",
                      f"join the words: {fixed!r}; a type after the name is one of {', '.join(_TYPES)}")


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
    """The inverse of `from_text`, for editing: the concise form when it says the same schema
    ('name, age int' came back as 130 characters of JSON in a one-line field), else JSON."""
    if constraint is None:
        return ""
    if constraint == JSON_OBJECT:
        return "json"
    concise = _concise_text(constraint)
    return concise if concise is not None else json.dumps(constraint, ensure_ascii=False)


_SHORT_TYPES = {long: short for short, long in _TYPES.items()}


def _concise_text(schema: Any) -> str | None:
    """'name, age int, bio: a short bio' for a schema of that form, checked by reading it back."""
    props = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(props, dict) or not props:
        return None
    parts = []
    for key, prop in props.items():
        kind = prop.get("type") if isinstance(prop, dict) else None
        kind = _SHORT_TYPES.get(kind) if isinstance(kind, str) else None  # ["string", "null"]: JSON only
        if kind is None:
            return None
        part = key if kind == "str" else f"{key} {kind}"
        if "description" in prop:
            part += f": {prop['description']}"
        parts.append(part)
    text = ", ".join(parts)
    try:
        return text if from_text(text) == schema else None
    except QwenchatError:  # a description with a comma, a name the form cannot hold
        return None


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
