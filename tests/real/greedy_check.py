"""Whether a model's greedy reply is a given one, from one forward pass over the prompt and the
reply instead of generating with the model token by token.

`chosen[i]` is the model's greedy choice after the prompt and the reply's first i tokens (the
logits at position len(prompt) - 1 + i). If every choice is the reply's next token, then token by
token the model's own greedy generation makes this same reply; where the reply stopped before its
limit, the choice after it must be a stop token too. The verdict is the generated one's up to
the order of float sums (one pass over all positions against one position at a time).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence


def first_disagreement(chosen: Sequence[int], reply: Sequence[int], stop_ids: Collection[int] = (),
                       limit: int | None = None) -> int | None:  # fmt: skip
    """The first position where the model would not have made `reply` (None: it would have).
    `limit`: the reply's token budget; a shorter reply must end where the model chooses a stop."""
    for i, token in enumerate(reply):
        if chosen[i] != token:
            return i
    stopped = limit is not None and len(reply) < limit
    return len(reply) if stopped and chosen[len(reply)] not in stop_ids else None
