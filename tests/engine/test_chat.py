"""ChatEngine: KV-cache reuse across turns, context fitting, stops, cancellation, seeds."""

from __future__ import annotations

import threading

import pytest
import torch

from qwenchat.engine.chat import ChatEngine, GenerateOptions
from qwenchat.engine.errors import ContextOverflowError, SettingsError, TemplateError
from qwenchat.engine.generate import Chunk, Reply, prefill


def run(engine: ChatEngine, events) -> tuple[list[str], Reply]:
    chunks, reply = [], None
    for ev in events:
        if isinstance(ev, Chunk):
            chunks.append(ev.text)
        else:
            reply = ev
    assert reply is not None
    return chunks, reply


@pytest.fixture
def engine(tiny_model) -> ChatEngine:
    return ChatEngine.load(tiny_model, device="cpu")


def fresh_logits(engine: ChatEngine, ids: list[int]) -> torch.Tensor:
    engine.cache.reset()
    return prefill(engine.model, engine.cache, ids)


def reused_logits(engine: ChatEngine, ids: list[int]) -> tuple[torch.Tensor, int]:
    common = min(engine.cache.common_prefix(ids), len(ids) - 1)
    engine.cache.trim(common)
    return prefill(engine.model, engine.cache, ids[common:]), common


TURN1 = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there!"}]


@pytest.mark.parametrize("change", ["next_turn", "edit", "regenerate"])
def test_reuse_path_gives_the_same_logits_as_a_fresh_prefill(engine, change):
    _, first = run(engine, engine.chat(TURN1, GenerateOptions(max_new_tokens=12, seed=0)))
    convo = TURN1 + [{"role": "assistant", "content": first.text}]
    if change == "next_turn":
        msgs = convo + [{"role": "user", "content": "Tell me more, please."}]
    elif change == "edit":
        msgs = TURN1[:1] + [{"role": "user", "content": "Hello here!"}]
    else:
        msgs = TURN1
    ids = engine.encode_chat(msgs)
    got, common = reused_logits(engine, ids)
    assert common > 0  # something was actually reused
    expected = fresh_logits(engine, ids)
    assert (got - expected).abs().max().item() < 1e-4 * max(1.0, expected.abs().max().item())


def test_second_turn_prefills_only_new_tokens(engine):
    # (greedy: a fixed reply; a sampled one may end inside a character, and its text then
    # encodes to other tokens than the ones generated, so less of the cache matches)
    _, first = run(engine, engine.chat(TURN1, GenerateOptions(max_new_tokens=8, temperature=0)))
    assert first.usage.cached_tokens == 0
    msgs = TURN1 + [{"role": "assistant", "content": first.text}, {"role": "user", "content": "More?"}]
    _, second = run(engine, engine.chat(msgs, GenerateOptions(max_new_tokens=8, seed=0)))
    assert second.usage.cached_tokens >= first.usage.prompt_tokens
    assert second.usage.prefilled_tokens == second.usage.prompt_tokens - second.usage.cached_tokens
    assert second.usage.prefilled_tokens < second.usage.prompt_tokens // 2


def test_chunks_concatenate_to_the_reply_and_seed_repeats(engine):
    opts = GenerateOptions(max_new_tokens=24, seed=42, temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0)
    chunks1, a = run(engine, engine.chat(TURN1, opts))
    engine.reset_cache()
    chunks2, b = run(engine, engine.chat(TURN1, opts))
    assert "".join(chunks1) == a.text and a.text == b.text and a.token_ids == b.token_ids
    assert a.text == engine.tokenizer.decode(a.token_ids)
    _, c = run(engine, engine.chat(TURN1, GenerateOptions(max_new_tokens=24, seed=43, temperature=1.0, top_k=0)))
    assert c.token_ids != a.token_ids


def test_max_new_tokens_gives_finish_reason_length(engine):
    _, r = run(engine, engine.chat(TURN1, GenerateOptions(max_new_tokens=5, temperature=0, seed=1)))
    assert r.finish_reason == "length" and r.usage.completion_tokens == 5


def test_any_eos_id_ends_the_reply_with_stop(engine):
    from dataclasses import replace

    _, greedy = run(engine, engine.chat(TURN1, GenerateOptions(max_new_tokens=6, temperature=0)))
    third = greedy.token_ids[2]
    engine.defaults = replace(engine.defaults, eos_ids=engine.defaults.eos_ids | {third})
    _, r = run(engine, engine.chat(TURN1, GenerateOptions(max_new_tokens=6, temperature=0)))
    assert r.finish_reason == "stop"
    assert r.token_ids == greedy.token_ids[:2]  # the eos token itself is not part of the reply


def test_stop_string_cuts_the_text_and_is_never_streamed(engine):
    opts = GenerateOptions(max_new_tokens=40, seed=3, temperature=1.0, top_k=0)
    _, full = run(engine, engine.chat(TURN1, opts))
    assert len(full.text) > 6
    stop = full.text[3:6]
    engine.reset_cache()
    chunks, cut = run(engine, engine.chat(TURN1, GenerateOptions(max_new_tokens=40, seed=3, temperature=1.0, top_k=0, stop=(stop,))))
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.find(stop)]
    assert "".join(chunks) == cut.text


def test_cancel_from_another_thread_stops_within_a_token_and_keeps_cache_consistent(engine):
    cancel = threading.Event()
    events = engine.chat(TURN1, GenerateOptions(max_new_tokens=200, seed=0, temperature=1.0), cancel)
    n = 0
    reply = None
    for ev in events:
        if isinstance(ev, Chunk):
            n += 1
            if n == 3:
                t = threading.Thread(target=cancel.set)
                t.start()
                t.join()
        else:
            reply = ev
    assert reply.finish_reason == "cancelled"
    assert reply.usage.completion_tokens <= 4 + 3  # a few tokens may be held back as partial characters
    held = engine.cache.tokens
    prompt = engine.encode_chat(TURN1)
    assert held[: len(prompt)] == prompt and held[len(prompt):] == reply.token_ids[: len(held) - len(prompt)]
    # the cache's content really is what `tokens` says: reuse it and compare with a fresh prefill
    ids = held + [5]
    got, _ = reused_logits(engine, ids)
    fresh = fresh_logits(engine, ids)  # other chunks, other product shapes: sums in another order
    assert (got - fresh).abs().max() <= 1e-4 * max(1.0, fresh.abs().max().item())


def test_oldest_turns_are_dropped_to_fit_and_the_reply_says_so(tiny_model):
    engine = ChatEngine.load(tiny_model, device="cpu", max_context=160)
    msgs = [{"role": "system", "content": "Be brief."}]
    for i in range(8):
        msgs += [{"role": "user", "content": f"Question number {i} about foxes"}, {"role": "assistant", "content": "The quick brown fox."}]
    msgs.append({"role": "user", "content": "Last one?"})
    _, r = run(engine, engine.chat(msgs, GenerateOptions(max_new_tokens=8, temperature=0)))
    assert r.dropped_messages > 0 and r.dropped_messages % 2 == 0
    assert r.usage.prompt_tokens + 8 <= 160  # the prompt left room for the whole reply
    ids, dropped = engine.chat_prompt(msgs, reserve=8)
    assert engine.tokenizer.decode(ids, skip_special_tokens=False).count("Be brief.") == 1  # system prompt kept
    assert "Last one?" in engine.tokenizer.decode(ids)


def test_a_message_too_long_for_the_window_names_both_numbers(tiny_model):
    engine = ChatEngine.load(tiny_model, device="cpu", max_context=64)
    with pytest.raises(ContextOverflowError) as e:
        run(engine, engine.chat([{"role": "user", "content": "fox " * 200}], GenerateOptions(max_new_tokens=4)))
    assert "64" in str(e.value) and "tokens" in str(e.value)
    assert "--" not in e.value.hint  # every face sees it (the app, serve): no command-line flag


def test_invalid_settings_are_refused_before_generation(engine):
    with pytest.raises(SettingsError, match="temperature"):
        engine.chat(TURN1, GenerateOptions(temperature=-1))
    with pytest.raises(SettingsError, match="max_new_tokens"):
        engine.chat(TURN1, GenerateOptions(max_new_tokens=-3))


def test_base_model_raw_completion_and_no_template_error(tiny_models, tmp_path):
    import shutil, json

    base = tmp_path / "base"
    shutil.copytree(tiny_models["base"], base)
    cfg = json.loads((base / "tokenizer_config.json").read_text())
    del cfg["chat_template"]
    (base / "tokenizer_config.json").write_text(json.dumps(cfg))
    engine = ChatEngine.load(base, device="cpu")
    assert not engine.info.has_chat_template
    assert engine.defaults.sampling.temperature == 0  # do_sample false: greedy
    with pytest.raises(TemplateError, match="no chat template"):
        engine.chat(TURN1)
    chunks, r = run(engine, engine.complete("The quick brown", GenerateOptions(max_new_tokens=6)))
    assert r.usage.completion_tokens >= 1 and "".join(chunks) == r.text


def test_instruct_defaults_come_from_generation_config(engine):
    s = engine.defaults.sampling
    assert (s.temperature, s.top_p, s.top_k, s.repetition_penalty) == (0.7, 0.8, 20, 1.1)
    assert len(engine.defaults.eos_ids) == 2


def test_switching_between_conversations_reuses_each_ones_cache(engine):
    engine.reset_cache()
    opts = GenerateOptions(max_new_tokens=4, temperature=0)

    def turn(messages):
        *_, reply = engine.chat(messages, opts)
        return reply

    a = [{"role": "user", "content": "Tell me about the moon and its phases " * 8}]
    b = [{"role": "user", "content": "Something else entirely, about rivers " * 8}]
    ra = turn(a)
    turn(b)  # another conversation takes the working cache
    again = turn(a + [{"role": "assistant", "content": ra.text}, {"role": "user", "content": "more"}])
    assert again.usage.cached_tokens >= ra.usage.prompt_tokens  # a's turn was not prefilled again


def test_a_reply_stopped_while_its_prompt_is_read_counts_only_what_was_read(engine, monkeypatch):
    """Stopped 5 s into a 13k-token prompt (found hands-on), `ask -u` said 'prefilled 13065' and
    a prefill rate of 5,446 tok/s from the time of the stop, and the store kept those figures;
    the cache held 4,096 of the tokens."""
    from qwenchat.engine import generate

    monkeypatch.setattr(generate, "PREFILL_CHUNK", 8)
    cache = engine.cache

    class AfterTwoChunks(threading.Event):
        def is_set(self) -> bool:  # set once the cache has taken two chunks of the prompt
            return cache.length >= 16

    engine.reset_cache()
    prompt = engine.encode_chat(TURN1)
    assert len(prompt) > 24
    *_, reply = engine.chat(TURN1, GenerateOptions(max_new_tokens=5), AfterTwoChunks())
    assert reply.finish_reason == "cancelled" and reply.usage.completion_tokens == 0
    assert reply.usage.prefilled_tokens == cache.length == 16 < len(prompt)
    assert reply.usage.prompt_tokens == len(prompt)
    assert reply.timings.prefill_tok_s == pytest.approx(16 / reply.timings.prefill_s)
