"""The tokenizer of an HF-format model directory, and a streaming detokenizer.

Contract:
- `Tokenizer.from_dir` reads `tokenizer.json` (required) and `tokenizer_config.json` (optional;
  special-token names) with the `tokenizers` library, never transformers. Unreadable or
  inconsistent files raise `TokenizerError` naming the file.
- `encode` / `decode` give the same ids and text as transformers' fast tokenizer with
  `add_special_tokens=False` (Qwen2 adds no BOS) and `clean_up_tokenization_spaces` off
  (transformers ignores that flag for BPE tokenizers anyway).
- `encode_chat` encodes a rendered chat so that text a person typed never becomes a control
  token (an added token marked special), while a normal conversation gets exactly the ids of
  `tokenizer(rendered, add_special_tokens=False)`. The rule is spelled out on the method.
- `StreamDecoder` turns ids into text one id at a time; the concatenation of its outputs equals
  `decode(all_ids)` exactly and no output ends in half a UTF-8 character.

The module knows nothing about models, templates' syntax, storage or the UI.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as _HFTokenizer

from qwenchat.engine.errors import TemplateError, TokenizerError

SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "pad_token", "unk_token")
REPLACEMENT = "\ufffd"  # what a lossy UTF-8 decode writes for incomplete or invalid bytes


@dataclass(frozen=True)
class _Match:
    """One occurrence of an added token's text in a string."""

    start: int
    end: int
    token_id: int
    special: bool


class Tokenizer:
    """A byte-level BPE tokenizer loaded from `tokenizer.json`."""

    def __init__(self, backend: _HFTokenizer, special_tokens: dict[str, str | None], source: Path):
        self._backend = backend
        # `encode_special_tokens` is a mutable flag on the backend: toggle it only under this lock.
        self._lock = threading.Lock()
        self.special_tokens = special_tokens
        self.vocab_size: int = backend.get_vocab_size(with_added_tokens=True)
        added = backend.get_added_tokens_decoder()
        self.control_ids: frozenset[int] = frozenset(i for i, t in added.items() if t.special)
        self._control_texts = tuple(t.content for i, t in added.items() if t.special)
        # Longest first, so the regex finds the same leftmost-longest matches as the backend.
        by_length = sorted(added.items(), key=lambda item: -len(item[1].content))
        self._added_re = re.compile("|".join(re.escape(t.content) for _, t in by_length) or "(?!)")
        self._added_ids = {t.content: (i, t.special) for i, t in added.items()}
        eos = special_tokens.get("eos_token")
        self.eos_token_id: int | None = None if eos is None else backend.token_to_id(eos)
        if eos is not None and self.eos_token_id is None:
            raise TokenizerError(
                f"{source / 'tokenizer_config.json'}: eos_token {eos!r} is not in the vocabulary",
                "fix eos_token in tokenizer_config.json, or re-download the model",
            )

    @classmethod
    def from_dir(cls, model_dir: Path) -> Tokenizer:
        model_dir = Path(model_dir)
        backend = _load_backend(model_dir / "tokenizer.json")
        config_path = model_dir / "tokenizer_config.json"
        config = _read_json(config_path) if config_path.is_file() else {}
        if not isinstance(config, dict):
            raise TokenizerError(f"{config_path}: expected a JSON object", "re-download the model")
        return cls(backend, _special_tokens(config, config_path), model_dir)

    # -- ids <-> text -------------------------------------------------------------------------

    def backend_json(self) -> str:
        """The whole tokenizer as tokenizer.json text (for libraries that read the vocabulary)."""
        return self._backend.to_str()

    def token_id(self, token: str) -> int | None:
        return self._backend.token_to_id(token)

    def encode(self, text: str) -> list[int]:
        """Ids of `text`; special-token text (as a chat template writes it) becomes control ids."""
        return self._encode(text, plain=False)

    def encode_plain(self, text: str) -> list[int]:
        """Ids of `text` with special-token text encoded as ordinary characters."""
        return self._encode(text, plain=True)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        # Ids past the tokenizer (the model's padded embedding rows) decode to nothing.
        return self._backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def _encode(self, text: str, plain: bool) -> list[int]:
        with self._lock:
            self._backend.encode_special_tokens = plain
            try:
                return self._backend.encode(text, add_special_tokens=False).ids
            finally:
                self._backend.encode_special_tokens = False

    # -- chat ---------------------------------------------------------------------------------

    def encode_chat(self, rendered: str, contents: list[str]) -> list[int]:
        """Ids of a rendered chat in which only the template's own special-token text is control.

        `contents` are the message contents (what people and the model wrote), in order. Rule:
        1. Find where each content sits in `rendered`: exactly, from the spans a
           `template.RenderedChat` records; otherwise by searching forward from the previous
           content (a content with special-token text must then occur once, verbatim or
           stripped, or TemplateError is raised: guessing could turn typed text into control).
        2. Find the special tokens in `rendered` the way the tokenizer does. If none overlaps a
           content, encode `rendered` whole: ids identical to transformers.
        3. Otherwise a special token counts as control only outside every content; `rendered`
           is cut at those tokens alone and each piece is encoded with special tokens disabled.
           Pieces are as long as possible, so ids differ from a whole-text encoding only where
           typed special-token text is (as text) instead of being a control id.
        """
        text = str(rendered)
        spans = _recorded_spans(rendered, contents)
        if spans is None:
            spans = self._search_spans(text, contents)
        if not any(_overlaps(m, spans) for m in self._matches(text) if m.special):
            return self.encode(text)
        return self._encode_guarded(text, spans)

    def _encode_guarded(self, text: str, spans: list[tuple[int, int]]) -> list[int]:
        """Cut `text` at the special tokens outside `spans`; encode the pieces as plain text."""
        matches = [m for m in self._matches(text) if m.special]
        ids: list[int] = []
        start = 0
        for m in matches:
            if _overlaps(m, spans):
                continue  # typed by someone: stays inside a piece encoded as text
            ids += self.encode_plain(text[start : m.start]) if m.start > start else []
            ids.append(m.token_id)
            start = m.end
        return ids + (self.encode_plain(text[start:]) if start < len(text) else [])

    def _matches(self, text: str) -> list[_Match]:
        out = []
        for m in self._added_re.finditer(text):
            token_id, special = self._added_ids[m.group()]
            out.append(_Match(m.start(), m.end(), token_id, special))
        return out

    def _has_control_text(self, text: str) -> bool:
        return any(t in text for t in self._control_texts)

    def _search_spans(self, text: str, contents: list[str]) -> list[tuple[int, int]]:
        """Spans of the contents holding special-token text, found by forward search."""
        spans = []
        pos = 0
        for index, content in enumerate(contents):
            if not isinstance(content, str) or not self._has_control_text(content):
                continue  # cannot produce control ids by itself; its place does not matter
            for candidate in (content, content.strip()):
                at = text.find(candidate, pos)
                if at >= 0 and text.find(candidate, at + 1) < 0:
                    spans.append((at, at + len(candidate)))
                    pos = at + len(candidate)
                    break
            else:
                raise TemplateError(
                    f"message {index + 1} contains special-token text, and the chat template "
                    "changed or repeated it, so it cannot be kept apart from the template's own "
                    "control tokens",
                    "remove text such as '<|im_end|>' from the message",
                )
        return spans


class StreamDecoder:
    """Incremental detokenizer: `push` ids one at a time, `flush` at the end.

    Prefix-offset technique: keep a small window of ids; `_read` splits it into context ids
    (already emitted, decoded only so their text can be subtracted) and pending ids. While the
    window's text ends in U+FFFD the last character may still be incomplete, so it is held back.
    Each call decodes only the window, so the cost per token stays constant.
    """

    # A UTF-8 character needs at most 3 more bytes; more pending ids than this while the text
    # still ends in U+FFFD means invalid bytes, so the window is cut at a provably clean point.
    MAX_PENDING = 8

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self._ids: list[int] = []  # the window
        self._read = 0  # window[:_read] is context, window[_read:] is pending
        self._context_len = 0  # len(decode(window[:_read]))

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip)

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        text = self._decode(self._ids)
        if text.endswith(REPLACEMENT):
            if len(self._ids) - self._read > self.MAX_PENDING:
                return self._cut(text)
            return ""
        out = text[self._context_len :]
        # The ids just emitted become the next context; older ones are dropped.
        self._ids = self._ids[self._read :]
        self._read = len(self._ids)
        self._context_len = len(self._decode(self._ids))
        return out

    def flush(self) -> str:
        out = self._decode(self._ids)[self._context_len :]
        self._ids, self._read, self._context_len = [], 0, 0
        return out

    def _cut(self, text: str) -> str:
        """Emit text up to a cut that later ids cannot change, keeping the window short.

        A cut before id `c` is clean when decoding both sides separately gives `text`, and at
        least 3 characters (so at least 3 bytes) follow it: those bytes already decide whether
        a character broken at the cut completes, so no later id can change that answer.
        """
        for cut in range(len(self._ids) - 1, self._read, -1):
            after = self._decode(self._ids[cut:])
            if len(after) < 3:
                continue
            before = self._decode(self._ids[:cut])
            if before + after == text:
                out = before[self._context_len :]
                self._ids, self._read, self._context_len = self._ids[cut:], 0, 0
                return out
        return ""  # only ids that decode to nothing; keep holding


# -- loading helpers ----------------------------------------------------------------------------


def _load_backend(path: Path) -> _HFTokenizer:
    """The tokenizers backend of `tokenizer.json`, parsed once (by the Rust side: a second
    parse in Python only to validate it cost about 0.25 s per start for Qwen2's 5 MB file)."""
    text = _read_text(path)
    try:
        return _HFTokenizer.from_str(text)
    except Exception as exc:  # the Rust side raises plain Exception with a serde message
        _read_json(path, text)  # invalid JSON gets its own, clearer message
        raise TokenizerError(
            f"{path}: not a tokenizer the tokenizers library can load ({exc})",
            "re-download the model's tokenizer.json",
        ) from exc


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise TokenizerError(f"{path}: file not found", "download the model again (it needs tokenizer.json)")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _invalid_json(path, exc) from exc


def _read_json(path: Path, text: str | None = None) -> Any:
    """The parsed JSON of `path` (or of its already read `text`)."""
    try:
        return json.loads(path.read_text(encoding="utf-8") if text is None else text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _invalid_json(path, exc) from exc


def _invalid_json(path: Path, exc: Exception) -> TokenizerError:
    return TokenizerError(f"{path}: not valid JSON ({exc})", "re-download the model's tokenizer files")


def _special_tokens(config: dict[str, Any], path: Path) -> dict[str, str | None]:
    """bos/eos/pad/unk as strings; some files store them as {"content": ...} objects."""
    tokens: dict[str, str | None] = {}
    for key in SPECIAL_TOKEN_KEYS:
        value = config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        if value is not None and not isinstance(value, str):
            raise TokenizerError(f"{path}: {key} must be a string, got {value!r}", f"fix {key} in the file")
        tokens[key] = value
    return tokens


def _recorded_spans(rendered: str, contents: list[str]) -> list[tuple[int, int]] | None:
    """Spans a RenderedChat recorded for exactly these contents, else None (duck-typed so the
    tokenizer does not import the template module)."""
    recorded = getattr(rendered, "content_spans", None)
    if recorded is None or getattr(rendered, "contents", None) != tuple(contents):
        return None
    return [span for span in recorded if span is not None]


def _overlaps(m: _Match, spans: list[tuple[int, int]]) -> bool:
    return any(m.start < end and start < m.end for start, end in spans)
