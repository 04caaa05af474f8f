"""What `ask` says about a reply besides its text: the `--json` object and the `-u` usage lines.

Both say only what is true of the model that answered. A local engine knows its device, dtype,
how much of the prompt it prefilled and how fast; for a model on a server the client knows the
server, the model, the server's token usage (cached tokens when it reports them) and what it
measured itself: time to the first token and the decode rate. Nothing is made up for the rest.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qwenchat.engine.records import Reply
    from qwenchat.session import ChatSession, ModelInfo, Turn

# what only the local engine measures: the prefill (a client sees it only inside the time to
# the first token, with the network)
LOCAL_ONLY = ("prefilled_tokens", "prefill_s", "prefill_tok_s")


def json_object(session: "ChatSession", turn: "Turn", extra: dict[str, Any]) -> dict[str, Any]:
    reply, info = turn.reply, session.model_info
    usage = asdict(reply.usage)
    timings = {"load_s": round(info.load_s, 4), **{k: round(v, 4) for k, v in asdict(reply.timings).items()}}
    # dtype: the activations'; precision: what the weights compute in ("int8" on a CPU by default)
    where: dict[str, Any] = {"device": info.device, "dtype": info.dtype, "precision": info.precision}
    if info.server is not None:
        usage = _without_local(usage)
        timings = _without_local(timings)
        where = {"device": info.device, "server": info.server, "model_id": model_id(info)}
    return {
        "text": reply.text,
        "finish_reason": reply.finish_reason,
        "model": session.model_label,
        **where,
        "usage": usage,
        "timings": timings,
        "dropped_messages": reply.dropped_messages,
        "conversation_id": turn.conversation_id,
        "message_id": turn.message_id,
        **extra,
    }


def print_json(session: "ChatSession", turn: "Turn", extra: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(json_object(session, turn, extra), ensure_ascii=False) + "\n")
    sys.stdout.flush()


def usage_lines(reply: "Reply", info: "ModelInfo") -> str:
    u, t = reply.usage, reply.timings
    first = f"first token {t.ttft_s:.2f}s"
    if reply.finish_reason == "cancelled" and not u.completion_tokens:
        first = f"stopped before the first token, at {t.ttft_s:.2f}s"
    if info.server is not None:
        window = f"context window {info.context_window}" if info.context_window else "context window not reported"
        return (
            f"server: {info.server}, model {model_id(info)} ({window})\n"
            f"tokens: prompt {u.prompt_tokens} (cached {u.cached_tokens}), completion {u.completion_tokens};"
            f" finish: {reply.finish_reason}\n"
            f"time: connect {info.load_s:.2f}s, {first}, decode {t.decode_tok_s:.1f} tok/s\n"
        )
    return (
        f"model: {info.label} on {info.device}, {precision(info)}\n"
        + "".join(f"  {line}\n" for line in info.placement_reason.splitlines())  # device, weights, kernels: why
        + f"tokens: prompt {u.prompt_tokens} (cached {u.cached_tokens}, prefilled {u.prefilled_tokens}),"
        f" completion {u.completion_tokens}; finish: {reply.finish_reason}\n"
        f"time: load {info.load_s:.2f}s, {first}, prefill {t.prefill_tok_s:.1f} tok/s,"
        f" decode {t.decode_tok_s:.1f} tok/s\n"
    )


def precision(info: "ModelInfo") -> str:
    """What the model computes in, as loaded: "int4 weights (float32 activations)", or "float32"
    when the weights are not quantized (info.precision is then the dtype)."""
    if info.precision == info.dtype:
        return info.dtype
    return f"{info.precision} weights ({info.dtype} activations)"


def print_usage(reply: "Reply", info: "ModelInfo") -> None:
    sys.stderr.write(usage_lines(reply, info))


def model_id(info: "ModelInfo") -> str:
    """The server's id of the model: what follows '#' in a remote model's label."""
    return info.label.partition("#")[2] or info.label


def _without_local(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k not in LOCAL_ONLY}
