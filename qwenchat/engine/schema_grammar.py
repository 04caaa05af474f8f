"""The grammar of an output constraint (a JSON schema, or any JSON object), checked without a
vocabulary: cheap (about a millisecond), torch-free, so the faces can refuse a bad schema before a
model loads. constrain.py compiles the same grammar against the model's vocabulary.
"""

from __future__ import annotations

import json
from typing import Any

from qwenchat.engine.errors import ConstraintError, SettingsError
from qwenchat.engine.records import JSON_OBJECT
# Whitespace between JSON tokens: at most one line break and an indent, so pretty-printed JSON
# fits but a model cannot spend its whole budget on blank lines.
_WHITESPACE = r"(\r?\n)?[\x20\x09]{0,24}"
_COMPILE_OPTIONS = {"whitespace_pattern": _WHITESPACE, "lenient": False}
_UNSUPPORTED = ("Unimplemented keys", "Unknown format")


def check_spec(spec: object) -> str:
    """The llguidance grammar of a constraint spec, or SettingsError naming what is wrong.
    Needs no vocabulary, so it is cheap enough to run on every settings change."""
    llguidance = import_llguidance()
    if spec == JSON_OBJECT:
        schema: dict[str, Any] = {"type": "object"}
    elif isinstance(spec, dict):
        schema = spec
    else:
        raise ConstraintError(
            f"the output constraint must be a JSON schema (a JSON object) or {JSON_OBJECT!r}, "
            f"got {type(spec).__name__}",
            'give a schema such as {"type": "object", "properties": {...}}',
        )
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=_COMPILE_OPTIONS)
    except (ValueError, TypeError) as e:
        raise ConstraintError(f"invalid JSON schema: {e}", "check it with a JSON Schema validator") from None
    problem = llguidance.LLMatcher.validate_grammar(grammar)
    if problem:
        raise _schema_error(problem)
    return grammar


def _schema_error(problem: str) -> ConstraintError:
    problem = problem.strip().splitlines()[0]
    if any(problem.startswith(p) for p in _UNSUPPORTED):
        return ConstraintError(
            f"the JSON schema uses something structured output cannot enforce: {problem}",
            "remove or rewrite that part of the schema (not, if/then/else, propertyNames and "
            "unknown formats are not supported)",
        )
    return ConstraintError(f"invalid JSON schema: {problem}", "fix the schema (see json-schema.org)")


def import_llguidance() -> Any:
    try:
        import llguidance
    except ImportError:
        raise SettingsError(
            "structured output needs the llguidance package, which is not installed",
            "pip install llguidance (it is a dependency of qwenchat: reinstall qwenchat)",
        ) from None
    return llguidance
