"""The model's chat template, rendered in a sandbox exactly as transformers renders it.

Contract:
- `ChatTemplate.from_dir` takes the template from `chat_template.jinja`, else from
  `tokenizer_config.json`'s `chat_template` (a string, or a list of {"name", "template"}: the one
  named "default", else the first). No template gives None; a broken one gives TemplateError.
- `render` output is byte-identical to transformers' `apply_chat_template(..., tokenize=False)`:
  same jinja2 environment (sandboxed, trim_blocks, lstrip_blocks, loopcontrols), same `tojson`,
  `raise_exception`, `strftime_now`, `dict` and `namespace`, the special tokens as variables.
- Templates are untrusted code from the Hub. Every failure (syntax, `raise_exception`, a render
  error, a sandbox violation) surfaces as TemplateError, never as a traceback or code execution.
- A render has limits (`template_limits`): `max_seconds` of time, and strings (the output
  included) of at most 10 million characters plus twice the size of what it was given. A
  template that crosses one is stopped with a TemplateError naming its file and the limit.
- `render` returns a `RenderedChat`: a plain `str` that also records where each message's content
  landed, so `Tokenizer.encode_chat` can tell typed text from the template's control tokens.

The module knows nothing about token ids, models, storage or the UI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError

from qwenchat.engine import template_limits as limits
from qwenchat.engine.errors import TemplateError
from qwenchat.engine.template_sandbox import RaisedByTemplate, environment

# Noncharacters (reserved for internal use by Unicode) that bracket contents in the span render.
_OPEN, _CLOSE = "\ufdd0", "\ufdd1"


class RenderedChat(str):
    """A rendered chat; `content_spans[i]` is where `contents[i]` sits in it (None: empty)."""

    contents: tuple[Any, ...]
    content_spans: tuple[tuple[int, int] | None, ...] | None


class ChatTemplate:
    """A compiled chat template."""

    def __init__(
        self, source: str, origin: str, special_tokens: dict[str, str | None], max_seconds: float = limits.RENDER_SECONDS
    ) -> None:
        self.source = source
        self.origin = origin  # file the template came from, for error messages
        self.max_seconds = max_seconds
        # transformers passes only the special tokens that are set: `{{ bos_token }}` with no
        # bos token must render as "", not "None".
        self._special = {k: v for k, v in special_tokens.items() if v is not None}
        try:
            self._compiled = environment().from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(
                f"{origin}: the chat template has a syntax error on line {exc.lineno}: {exc.message}",
                "fix the template, or re-download the model",
            ) from None
        except limits.LimitExceeded as exc:  # a constant folded while compiling
            raise _limit_error(origin, exc) from None

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
        # What the template is given sets its size limit: measured once for both renders.
        given = limits.text_size((plain, extra), float("inf"))  # type: ignore[arg-type]
        text = self._render(plain, add_generation_prompt, extra, given)
        rendered = RenderedChat(text)
        rendered.contents = tuple(m.get("content", "") for m in messages)
        rendered.content_spans = self._content_spans(plain, text, add_generation_prompt, extra, given)
        return rendered

    def _render(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool, extra: dict[str, Any], given: int
    ) -> str:
        """`given`: the size of what the template is given, which sets its size limit."""
        # Same argument layout as transformers: extra kwargs override special tokens.
        extra = _plain(extra)
        tools, documents = extra.pop("tools", None), extra.pop("documents", None)
        try:
            with limits.active(limits.Budget.start(self.max_seconds, given)):
                return self._compiled.render(
                    messages=messages,
                    tools=tools,
                    documents=documents,
                    add_generation_prompt=add_generation_prompt,
                    **{**self._special, **extra},
                )
        except limits.LimitExceeded as exc:
            raise _limit_error(self.origin, exc) from None
        except RaisedByTemplate as exc:
            raise TemplateError(
                f"the chat template refused the conversation: {exc}",
                "change the conversation (for example the order of roles) to what the model expects",
            ) from None
        except SecurityError as exc:
            raise TemplateError(
                f"{self.origin}: the chat template tried an unsafe operation and was stopped: {exc}",
                "do not use this template; re-download the model from a trusted source",
            ) from None
        except MemoryError:
            raise _limit_error(self.origin, limits.LimitExceeded("it ran out of memory")) from None
        except Exception as exc:  # noqa: BLE001 - any failure of untrusted template code
            raise TemplateError(
                f"{self.origin}: the chat template failed: {type(exc).__name__}: {exc}",
                "fix the template, or check that the messages have the fields it needs",
            ) from None

    def _content_spans(
        self, messages: list[dict[str, Any]], text: str, add_generation_prompt: bool, extra: dict[str, Any], given: int
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
            marked_text = self._render(bracketed, add_generation_prompt, extra, given)
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


def _limit_error(origin: str, exc: limits.LimitExceeded) -> TemplateError:
    return TemplateError(
        f"{origin}: the chat template was stopped: {exc}",
        "the template is broken or hostile: fix it, or re-download the model from a trusted source",
    )


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
