"""The model's chat template, rendered in a sandbox exactly as transformers renders it.

Contract:
- `ChatTemplate.from_dir` takes the template from `chat_template.jinja`, else from
  `tokenizer_config.json`'s `chat_template` (a string, or a list of {"name", "template"}: the one
  named "default", else the first). No template gives None; a broken one gives TemplateError.
- `render` output is byte-identical to transformers' `apply_chat_template(..., tokenize=False)`:
  same jinja2 environment (sandboxed, trim_blocks, lstrip_blocks, loopcontrols), same `tojson`,
  `raise_exception`, `strftime_now`, `dict` and `namespace`, the special tokens as variables.
- Templates are untrusted code from the Hub. Every failure (syntax, `raise_exception`, a render
  error, a sandbox violation, an absurdly large string) surfaces as TemplateError, never as a
  traceback or code execution.
- `render` returns a `RenderedChat`: a plain `str` that also records where each message's content
  landed, so `Tokenizer.encode_chat` can tell typed text from the template's control tokens.

The module knows nothing about token ids, models, storage or the UI.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from qwenchat.engine.errors import TemplateError

# Noncharacters (reserved for internal use by Unicode) that bracket contents in the span render.
_OPEN, _CLOSE = "\ufdd0", "\ufdd1"
_MAX_SEQUENCE = 10_000_000  # refuse `'x' * 10**12` before it eats all memory


class RenderedChat(str):
    """A rendered chat; `content_spans[i]` is where `contents[i]` sits in it (None: empty)."""

    contents: tuple[Any, ...]
    content_spans: tuple[tuple[int, int] | None, ...] | None


class _RaisedByTemplate(Exception):
    """raise_exception() was called: the template refuses the conversation."""


class ChatTemplate:
    """A compiled chat template."""

    def __init__(self, source: str, origin: str, special_tokens: dict[str, str | None]) -> None:
        self.source = source
        self.origin = origin  # file the template came from, for error messages
        # transformers passes only the special tokens that are set: `{{ bos_token }}` with no
        # bos token must render as "", not "None".
        self._special = {k: v for k, v in special_tokens.items() if v is not None}
        try:
            self._compiled = _environment().from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(
                f"{origin}: the chat template has a syntax error on line {exc.lineno}: {exc.message}",
                "fix the template, or re-download the model",
            ) from None

    @classmethod
    def from_dir(cls, model_dir: Path, special_tokens: dict[str, str | None]) -> ChatTemplate | None:
        model_dir = Path(model_dir)
        jinja_path = model_dir / "chat_template.jinja"
        if jinja_path.is_file():
            try:
                source = jinja_path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise TemplateError(f"{jinja_path}: cannot read ({exc})", "re-download the model") from None
            return cls(source, str(jinja_path), special_tokens)
        config_path = model_dir / "tokenizer_config.json"
        source = _template_from_config(config_path)
        return None if source is None else cls(source, str(config_path), special_tokens)

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True, **extra: Any) -> RenderedChat:
        if not messages:
            raise TemplateError("cannot render an empty conversation", "add a message first")
        plain = _plain_messages(messages)
        text = self._render(plain, add_generation_prompt, extra)
        rendered = RenderedChat(text)
        rendered.contents = tuple(m.get("content", "") for m in messages)
        rendered.content_spans = self._content_spans(plain, text, add_generation_prompt, extra)
        return rendered

    def _render(self, messages: list[dict[str, Any]], add_generation_prompt: bool, extra: dict[str, Any]) -> str:
        # Same argument layout as transformers: extra kwargs override special tokens.
        extra = _plain(extra)
        tools, documents = extra.pop("tools", None), extra.pop("documents", None)
        try:
            return self._compiled.render(
                messages=messages,
                tools=tools,
                documents=documents,
                add_generation_prompt=add_generation_prompt,
                **{**self._special, **extra},
            )
        except _RaisedByTemplate as exc:
            raise TemplateError(
                f"the chat template refused the conversation: {exc}",
                "change the conversation (for example the order of roles) to what the model expects",
            ) from None
        except SecurityError as exc:
            raise TemplateError(
                f"{self.origin}: the chat template tried an unsafe operation and was stopped: {exc}",
                "do not use this template; re-download the model from a trusted source",
            ) from None
        except Exception as exc:  # noqa: BLE001 - any failure of untrusted template code
            raise TemplateError(
                f"{self.origin}: the chat template failed: {type(exc).__name__}: {exc}",
                "fix the template, or check that the messages have the fields it needs",
            ) from None

    def _content_spans(
        self, messages: list[dict[str, Any]], text: str, add_generation_prompt: bool, extra: dict[str, Any]
    ) -> tuple[tuple[int, int] | None, ...] | None:
        """Render again with every non-empty string content bracketed by noncharacters, and read
        the spans off the brackets. None when the template treats the bracketed contents
        differently (strips, splits, repeats them), so the spans would not be trustworthy."""
        contents = [m.get("content") for m in messages]
        marked = [isinstance(c, str) and c != "" for c in contents]
        if any(isinstance(c, str) and (_OPEN in c or _CLOSE in c) for c in contents):
            return None
        bracketed = [
            {**m, "content": _OPEN + m["content"] + _CLOSE} if mark else m for m, mark in zip(messages, marked)
        ]
        try:
            marked_text = self._render(bracketed, add_generation_prompt, extra)
        except TemplateError:
            return None
        found = _read_brackets(marked_text)
        expected = [c for c, mark in zip(contents, marked) if mark]
        if found is None or found[0] != text or [text[a:b] for a, b in found[1]] != expected:
            return None
        spans = iter(found[1])
        # Content positions in the message list; messages were filtered only by value, not count.
        by_message = [next(spans) if mark else None for mark in marked]
        return tuple(by_message)


# -- environment ---------------------------------------------------------------------------------


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` (transformers' assistant-mask tag) renders its body."""

    tags: ClassVar[set[str]] = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body, lineno=lineno)


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, plus a size cap on `*` and `**` so a template cannot exhaust memory."""

    intercepted_binops = frozenset(["*", "**"])

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        # jinja returns an Undefined that only fails when used, so `{{ f.__globals__ }}` would
        # quietly print "". A template that reaches for internals is hostile: stop it at once.
        raise SecurityError(f"access to attribute {attribute!r} of a {type(obj).__name__!r} object is unsafe")

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > 1000:
            raise SecurityError("exponent too large")
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                sized = isinstance(seq, (str, list, tuple)) and isinstance(count, int)
                if sized and len(seq) * count > _MAX_SEQUENCE:
                    raise SecurityError("sequence too large")
        return super().call_binop(context, operator, left, right)


def _raise_exception(message: str) -> None:
    raise _RaisedByTemplate(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False) -> str:
    # transformers' filter: plain json.dumps, not jinja's HTML-escaping one.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _TemplateDict:
    """`dict(...)` without exposing the dict type itself (as transformers does)."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    """`namespace(...)` that refuses underscore names, so no dunder can be stored (as transformers)."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # jinja's trick: `self` may be a key
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise SecurityError(f"namespace attribute {name!r} starts with an underscore")


def _environment() -> _Sandbox:
    env = _Sandbox(trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    return env


# -- inputs ---------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A copy made of JSON types only (as transformers does): subclasses of str/int/float lose
    their extra methods, and any other object becomes an inert "<TypeName>" placeholder."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return f"<{type(value).__name__}>"


_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def _plain_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as transformers hands them to the template: None values dropped, plain types,
    reasoning copied under the names templates read."""
    out = []
    for message in messages:
        m = _plain({k: v for k, v in message.items() if v is not None})
        reasoning = next((m[k] for k in _REASONING_FIELDS if m.get(k) is not None), None)
        if reasoning is not None:
            m = {"thinking": reasoning, **m, "reasoning_content": reasoning}
        out.append(m)
    return out


def _read_brackets(marked: str) -> tuple[str, list[tuple[int, int]]] | None:
    """Remove the brackets; return the text and the bracketed spans in it, None if unbalanced."""
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    length, open_at = 0, None
    pos = 0
    while True:
        i = min((j for j in (marked.find(_OPEN, pos), marked.find(_CLOSE, pos)) if j >= 0), default=-1)
        chunk = marked[pos:] if i < 0 else marked[pos:i]
        parts.append(chunk)
        length += len(chunk)
        if i < 0:
            break
        if (marked[i] == _OPEN) == (open_at is not None):
            return None  # nested or unopened bracket
        if marked[i] == _OPEN:
            open_at = length
        else:
            spans.append((open_at, length))
            open_at = None
        pos = i + 1
    return (None if open_at is not None else ("".join(parts), spans))


def _template_from_config(path: Path) -> str | None:
    """tokenizer_config.json's chat_template: a string, or named templates (default, else first)."""
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TemplateError(f"{path}: not valid JSON ({exc})", "re-download the model's tokenizer files") from None
    value = config.get("chat_template") if isinstance(config, dict) else None
    if isinstance(value, list):
        entries = [t for t in value if isinstance(t, dict)]
        named = {t.get("name"): t.get("template") for t in entries}
        if len(entries) != len(value) or not all(isinstance(k, str) and isinstance(v, str) for k, v in named.items()):
            raise TemplateError(
                f"{path}: chat_template is a list, but not of {{'name': ..., 'template': ...}} objects",
                "fix chat_template in the file, or re-download the model",
            )
        value = named.get("default", next(iter(named.values()), None))
    if value is not None and not isinstance(value, str):
        raise TemplateError(f"{path}: chat_template must be a string or a list, got {type(value).__name__}", "fix the file")
    return value or None
