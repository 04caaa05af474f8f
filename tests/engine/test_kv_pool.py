"""CachePool: recent conversations' KV caches put aside and brought back, within a byte budget."""

from __future__ import annotations

import pytest
import torch

from qwenchat.engine.chat import ChatEngine
from qwenchat.engine.generate import prefill
from qwenchat.engine.kv_pool import CachePool

A = [{"role": "system", "content": "You answer in French."}, {"role": "user", "content": "Hello there, how are you?"}]
B = [{"role": "system", "content": "Be brief and precise."}, {"role": "user", "content": "What is the capital of France?"}]
C = [{"role": "system", "content": "Write code only."}, {"role": "user", "content": "def add(a, b): return a + b"}]


@pytest.fixture
def engine(tiny_model) -> ChatEngine:
    return ChatEngine.load(tiny_model, device="cpu", quantize="none", max_context=512)


def feed(engine: ChatEngine, pool: CachePool, ids: list[int]) -> tuple[torch.Tensor, int]:
    """Prefill `ids` as the engine would with the pool in front: (last logits, tokens reused)."""
    reused = min(pool.prepare(engine.cache, ids), len(ids) - 1)
    engine.cache.trim(reused)
    return prefill(engine.model, engine.cache, ids[reused:]), reused


def next_turn(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    return messages + [{"role": "assistant", "content": "Fine, thanks."}, {"role": "user", "content": "And then?"}]


def token_bytes(engine: ChatEngine) -> int:
    k = engine.cache.k
    return 2 * k.shape[0] * k.shape[2] * k.shape[4] * k.element_size()  # keys and values, all layers


def test_taking_turns_reuses_each_conversation_with_the_same_logits(engine):
    pool = CachePool()
    ids_a, ids_b = engine.encode_chat(A), engine.encode_chat(B)
    feed(engine, pool, ids_a)
    feed(engine, pool, ids_b)
    ids_a2 = engine.encode_chat(next_turn(A))
    assert engine.cache.common_prefix(ids_a2) < len(ids_a) // 2  # without the pool: B's cache, little reuse
    got, reused = feed(engine, pool, ids_a2)
    assert reused >= len(ids_a) - 1  # A's whole first prompt came back
    assert pool.conversations == [ids_b]  # and B waits in the pool
    engine.cache.reset()
    expected = prefill(engine.model, engine.cache, ids_a2)
    assert (got - expected).abs().max().item() < 1e-4 * max(1.0, expected.abs().max().item())
    _, reused_b = feed(engine, pool, engine.encode_chat(next_turn(B)))
    assert reused_b >= len(ids_b) - 1  # B did not evict A, nor A B


def test_least_recently_used_goes_first_within_the_budget(engine):
    ids = [engine.encode_chat(m) for m in (A, B, C)]
    pool = CachePool(budget_bytes=token_bytes(engine) * (max(map(len, ids)) + 5))  # room for one
    for each in ids:
        feed(engine, pool, each)
    assert pool.conversations == [ids[1]]  # A (oldest) is out; C is the working cache
    assert pool.nbytes <= pool.budget


def test_an_earlier_state_of_the_same_conversation_is_superseded(engine):
    pool = CachePool()
    ids_a = engine.encode_chat(A)
    feed(engine, pool, ids_a)
    pool.put_aside(engine.cache)
    engine.cache.trim(len(ids_a))
    ids_a2 = engine.encode_chat(next_turn(A))
    feed(engine, pool, ids_a2)
    pool.put_aside(engine.cache)
    assert pool.conversations == [engine.cache.tokens]  # the longer one only


def test_a_conversation_over_the_budget_is_not_kept_and_zero_keeps_none(engine):
    ids_a = engine.encode_chat(A)
    for budget in (0, token_bytes(engine) * (len(ids_a) - 1)):
        pool = CachePool(budget_bytes=budget)
        feed(engine, pool, ids_a)
        feed(engine, pool, engine.encode_chat(B))
        assert len(pool) == 0
    with pytest.raises(ValueError):
        CachePool(budget_bytes=-1)
