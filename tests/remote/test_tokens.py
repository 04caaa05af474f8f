"""Token counts from the server's /tokenize where it has one (vLLM's and llama.cpp's forms), else
estimates, with `info.exact_tokens` saying which."""

from __future__ import annotations

from qwenchat.remote.engine import RemoteEngine
from qwenchat.remote.reference import RemoteRef
from qwenchat.remote.tokens import estimate
from tests.remote.fake_server import Response, error

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]


def connect(server) -> RemoteEngine:
    return RemoteEngine.connect(RemoteRef.parse(server.url))


def vllm(req):
    body = req.body
    if "messages" in body:  # the template's tokens: 5 a message, 3 for the reply prompt, a token a word
        n = sum(5 + len(m["content"].split()) for m in body["messages"]) + 3
    else:
        n = len(body["prompt"].split())
    return Response(200, {"count": n, "max_model_len": 4096, "tokens": list(range(n))})


def llama_cpp(req):
    return Response(200, {"tokens": list(range(len(req.body.get("content", "").split())))})


def test_vllm_counts_plain_text_and_the_chat_template(fake_server):
    fake_server.routes["POST /tokenize"] = vllm
    engine = connect(fake_server)
    assert engine.info.exact_tokens is True
    assert len(engine.tokenizer.encode_plain("one two three")) == 3
    assert len(engine.encode_chat(MSGS)) == (5 + 2) + (5 + 2) + 3
    asked = [r.body for r in fake_server.requests if r.path == "/tokenize"]
    assert asked[-1] == {"model": "m", "messages": MSGS, "add_generation_prompt": True}


def test_llama_cpp_counts_plain_text_and_estimates_the_template(fake_server):
    fake_server.routes["POST /tokenize"] = llama_cpp
    engine = connect(fake_server)
    assert engine.info.exact_tokens is True
    assert len(engine.tokenizer.encode_plain("one two three four")) == 4
    assert len(engine.encode_chat(MSGS)) == (4 + 2) + (4 + 2) + 3


def test_without_tokenize_the_counts_are_estimates(fake_server):
    engine = connect(fake_server)
    assert engine.info.exact_tokens is False
    assert len(engine.tokenizer.encode_plain("x" * 40)) == 10
    assert len(engine.tokenizer.encode_plain("日本語")) == 3
    assert engine.encode_chat([]) == []


def test_counts_are_cached_and_fall_back_to_the_estimate_when_the_server_fails(fake_server):
    fake_server.routes["POST /tokenize"] = vllm
    engine = connect(fake_server)
    before = len(fake_server.requests)
    engine.tokenizer.encode_plain("a b c")
    engine.tokenizer.encode_plain("a b c")
    assert len(fake_server.requests) == before + 1
    fake_server.routes["POST /tokenize"] = lambda req: error(500, "gone")
    assert len(engine.tokenizer.encode_plain("word " * 8)) == estimate("word " * 8)


def test_estimate_rounds_ascii_up_and_counts_other_scripts_per_character():
    assert (estimate(""), estimate("abc"), estimate("abcd e"), estimate("héllo")) == (0, 1, 2, 2)


def test_a_slow_tokenize_never_holds_up_a_cancel_or_a_count(fake_server, monkeypatch):
    import threading
    import time

    from qwenchat.remote import tokens
    from tests.remote.fake_server import chunk

    slow = threading.Event()
    fake_server.routes["POST /tokenize"] = lambda req: (Response(delay=3, body={"tokens": []}) if slow.is_set()
                                                        else vllm(req))
    engine = connect(fake_server)
    assert engine.info.exact_tokens
    slow.set()
    fake_server.routes["POST /v1/chat/completions"] = lambda req: Response(
        events=(chunk(f"w{i} ") for i in range(100)), delay=0.05)
    cancel = threading.Event()
    t0 = time.monotonic()
    for event in engine.chat(MSGS, cancel=cancel):
        cancel.set()
    assert event.finish_reason == "cancelled" and event.usage.prompt_tokens > 0  # estimated, not asked
    assert time.monotonic() - t0 < 2
    monkeypatch.setattr(tokens, "COUNT_TIMEOUT_S", 0.3)
    t0 = time.monotonic()
    assert len(engine.tokenizer.encode_plain("seven words in this short little text")) == estimate(
        "seven words in this short little text")
    assert time.monotonic() - t0 < 2
    asked = len(fake_server.requests)
    t0 = time.monotonic()
    assert len(engine.tokenizer.encode_plain("and again")) == estimate("and again")
    assert len(fake_server.requests) == asked and time.monotonic() - t0 < 0.2  # not asked again for a while
