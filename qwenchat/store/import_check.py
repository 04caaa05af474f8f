"""Checking an import completely before anything is written: the file's encoding and JSON, then
every field of every conversation and message (type, size, timestamps parseable and not in the
future, ids, parents, the head), with an error naming the first bad field by its JSON path
(`$.conversations[0].messages[3].prompt_tokens`). What passes is returned normalized (timestamps
in the stored form), ready to insert; the history is never touched by a file that fails.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from qwenchat.errors import StoreError
from qwenchat.store.records import ROLES, STATUSES

FORMAT_ONE = "qwenchat.conversation"
FORMAT_ALL = "qwenchat.export"
FORMAT_VERSION = 1
HINT = "import a file written by `qwenchat history export ID --format json` or `--all`"


@dataclass(frozen=True)
class Limits:
    """What one import may hold; far above anything qwenchat itself writes."""

    file_bytes: int = 512 * 1024 * 1024
    text_chars: int = 16 * 1024 * 1024  # one message, system prompt
    name_chars: int = 1000  # a title, a model name
    messages: int = 1_000_000  # in the whole file
    tokens: int = 10**9  # a token count
    nesting: int = 64  # depth of settings and meta objects
    clock_skew: timedelta = timedelta(minutes=5)  # how far "now" may differ between machines


LIMITS = Limits()


def bad(why: str) -> StoreError:
    return StoreError(f"not a qwenchat export: {why}", HINT)


# --------------------------------------------------------------------------- the file


def parse(raw: bytes, source: str, limits: Limits = LIMITS) -> Any:
    """The JSON value in `raw` (UTF-8, an optional BOM); a StoreError for anything else."""
    if len(raw) > limits.file_bytes:
        raise StoreError(f"{source} is {len(raw):,} bytes, more than an import may hold "
                         f"({limits.file_bytes:,})", "split the export into smaller files")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise StoreError(f"{source} is not UTF-8 text (byte {e.start} is {raw[e.start:e.start + 1]!r})",
                         HINT + "; re-save the file as UTF-8") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise StoreError(f"{source} is not valid JSON ({e.msg}, line {e.lineno})", HINT) from None
    except RecursionError:
        raise bad(f"{source} nests arrays or objects too deeply") from None


# --------------------------------------------------------------------------- the document


def validate(data: Any, now: datetime | None = None, limits: Limits = LIMITS) -> list[dict[str, Any]]:
    """The conversations of an export, each checked and normalized; raises on the first bad field."""
    check = _Checker(now or datetime.now(timezone.utc), limits)
    if not isinstance(data, dict):
        raise bad("the top level is not a JSON object")
    fmt = data.get("format")
    if fmt == FORMAT_ONE:
        items, paths = [data], ["$"]
    elif fmt == FORMAT_ALL:
        items = data.get("conversations")
        if not isinstance(items, list):
            raise bad("$.conversations is not a list")
        paths = [f"$.conversations[{i}]" for i in range(len(items))]
    elif fmt is None:
        raise bad("$.format is missing")
    else:
        raise bad(f"unknown format {_show(fmt)} at $.format")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise bad(f"unsupported version {_show(version)} at $.version (this qwenchat reads {FORMAT_VERSION})")
    if sum(len(i.get("messages") or []) for i in items if isinstance(i, dict)
           and isinstance(i.get("messages"), list)) > limits.messages:
        raise bad(f"more than {limits.messages:,} messages")
    return [check.conversation(item, path) for item, path in zip(items, paths)]


class _Checker:
    def __init__(self, now: datetime, limits: Limits) -> None:
        self.latest = now + limits.clock_skew
        self.limits = limits

    def conversation(self, item: Any, path: str) -> dict[str, Any]:
        if not isinstance(item, dict):
            raise bad(f"{path} is not an object")
        if item.get("format", FORMAT_ONE) != FORMAT_ONE:
            raise bad(f"{path}.format is {_show(item.get('format'))}, expected {FORMAT_ONE!r}")
        self.optional_int(item, "id", path)
        out = dict(item)
        out["title"] = self.text(item, "title", path, self.limits.name_chars, optional=True)
        out["model"] = self.text(item, "model", path, self.limits.name_chars, optional=True) or ""
        out["system_prompt"] = self.text(item, "system_prompt", path, self.limits.text_chars, optional=True)
        out["settings"] = self.obj(item, "settings", path)
        out["created_at"] = self.time(item, "created_at", path)
        out["updated_at"] = self.time(item, "updated_at", path)
        messages = item.get("messages", [])
        if not isinstance(messages, list):
            raise bad(f"{path}.messages is {_kind(messages)}, expected a list")
        out["messages"] = [self.message(m, f"{path}.messages[{i}]") for i, m in enumerate(messages)]
        self.tree(out, path)
        return out

    def message(self, m: Any, path: str) -> dict[str, Any]:
        if not isinstance(m, dict):
            raise bad(f"{path} is {_kind(m)}, expected an object")
        if not _is_int(m.get("id")):
            raise bad(f"{path}.id is {_kind(m.get('id'))}, expected an integer")
        self.optional_int(m, "parent_id", path)
        if m.get("role") not in ROLES:
            raise bad(f"{path}.role is {_show(m.get('role'))}, expected one of {', '.join(ROLES)}")
        if m.get("status", "complete") not in STATUSES:
            raise bad(f"{path}.status is {_show(m.get('status'))}, expected one of {', '.join(STATUSES)}")
        out = dict(m)
        out["content"] = self.text(m, "content", path, self.limits.text_chars)
        out["created_at"] = self.time(m, "created_at", path)
        out["finished_at"] = self.time(m, "finished_at", path, optional=True)
        for key in ("prompt_tokens", "completion_tokens"):
            n = self.optional_int(m, key, path)
            if n is not None and not 0 <= n <= self.limits.tokens:
                raise bad(f"{path}.{key} is {n}, expected 0 to {self.limits.tokens:,}")
        out["meta"] = self.obj(m, "meta", path)
        return out

    def tree(self, conv: dict[str, Any], path: str) -> None:
        """Unique ids, known parents, no cycles, a head among the messages."""
        by_id: dict[int, dict[str, Any]] = {}
        for i, m in enumerate(conv["messages"]):
            if m["id"] in by_id:
                raise bad(f"{path}.messages[{i}].id: message id {m['id']} appears twice")
            by_id[m["id"]] = m
        for i, m in enumerate(conv["messages"]):
            parent = m.get("parent_id")
            if parent is not None and parent not in by_id:
                raise bad(f"{path}.messages[{i}].parent_id: message {m['id']} has an unknown parent {parent}")
        for m in conv["messages"]:
            seen, cur = set(), m
            while cur is not None:
                if cur["id"] in seen:
                    raise bad(f"{path}.messages: message {cur['id']} is its own ancestor")
                seen.add(cur["id"])
                parent = cur.get("parent_id")
                cur = by_id[parent] if parent is not None else None
        head = self.optional_int(conv, "head_id", path)
        if head is not None and head not in by_id:
            raise bad(f"{path}.head_id: head {head} is not one of the messages")

    # -- fields ----------------------------------------------------------------------------------
    def text(self, d: dict[str, Any], key: str, path: str, limit: int, optional: bool = False) -> str | None:
        value = d.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise bad(f"{path}.{key} is {_kind(value)}, expected a string" + (" or null" if optional else ""))
        if len(value) > limit:
            raise bad(f"{path}.{key} is {len(value):,} characters long, more than {limit:,}")
        return value

    def optional_int(self, d: dict[str, Any], key: str, path: str) -> int | None:
        value = d.get(key)
        if value is not None and not _is_int(value):
            raise bad(f"{path}.{key} is {_kind(value)}, expected an integer or null")
        return value

    def obj(self, d: dict[str, Any], key: str, path: str) -> dict[str, Any]:
        value = d.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise bad(f"{path}.{key} is {_kind(value)}, expected an object")
        if _depth(value) > self.limits.nesting:
            raise bad(f"{path}.{key} nests more than {self.limits.nesting} levels deep")
        return value

    def time(self, d: dict[str, Any], key: str, path: str, optional: bool = False) -> str | None:
        value = d.get(key)
        if value is None:
            if optional:
                return None
            raise bad(f"{path}.{key} is missing (a timestamp is required)")
        if not isinstance(value, str):
            raise bad(f"{path}.{key} is {_kind(value)}, expected an ISO 8601 timestamp")
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise bad(f"{path}.{key} is {_show(value)}, not an ISO 8601 timestamp") from None
        if when.tzinfo is None:
            raise bad(f"{path}.{key} is {_show(value)}, a timestamp without a time zone")
        if when > self.latest:
            raise bad(f"{path}.{key} is {value}, in the future")
        # the stored form (UTC, microseconds) sorts as text; a file we wrote keeps its exact bytes
        return when.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _depth(value: Any) -> int:
    """How deeply `value` nests lists and objects, found without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict | list):
            deepest = max(deepest, d)
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
             dict: "an object", type(None): "null"}
    name = names.get(type(value), type(value).__name__)
    return name if isinstance(value, dict | list) or value is None else f"{name} ({_show(value)})"


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, dict | list) else _kind(value)
    return text if len(text) <= 40 else text[:37] + "..."
