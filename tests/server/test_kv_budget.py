"""`--kv-budget` / config key `kv_budget`: the memory kept for recent conversations' KV caches.

The value travels flag (or config file) -> Settings -> startup.load_engine -> the engine's pool,
and through the API its effect shows in `usage.prompt_tokens_details.cached_tokens`: a client
coming back to a conversation gets its cache back while the budget holds it, and prefills it
again (only the chat template's opening, shared by every conversation, still cached) once
newer conversations have pushed it out."""

from __future__ import annotations

import json

import pytest

openai = pytest.importorskip("openai")

from qwenchat.cli import run  # noqa: E402
from qwenchat.config import Settings, parse_value  # noqa: E402
from qwenchat.errors import ConfigError  # noqa: E402
from qwenchat.server.app import create_app  # noqa: E402
from qwenchat.server.backend import Backend  # noqa: E402

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november".split()


def conversation(i: int) -> list[dict[str, str]]:
    """A conversation of its own: every one differs right after the template's opening."""
    words = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(40))
    return [{"role": "system", "content": f"{i} {words}"}, {"role": "user", "content": f"Question {i}: {words}?"}]


def token_bytes(model_dir) -> int:
    """Bytes one token takes in a float32 KV cache of this model (keys and values, every layer)."""
    cfg = json.loads((model_dir / "config.json").read_text())
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    return 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * head_dim * 4


def load(tiny_model, kv_budget):
    from qwenchat.startup import load_engine

    settings = Settings(model=str(tiny_model), device="cpu", dtype="float32", quantize="none",
                        context_limit=1024, kv_budget=kv_budget)
    return load_engine(settings)[0]


# -- the value ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, size", [("0", 0), ("4096", 4096), ("512M", 512 << 20), ("2g", 2 << 30), (" 64K ", 64 << 10)])
def test_human_sizes(text, size):
    assert parse_value("kv_budget", text) == size


@pytest.mark.parametrize("text", ["-1", "2X", "lots", "1.5G", ""])
def test_bad_sizes_are_refused_naming_the_key_and_the_form(text):
    with pytest.raises(ConfigError) as e:
        parse_value("kv_budget", text)
    assert "kv_budget" in e.value.message and "512M or 2G" in e.value.hint


def test_bad_flag_is_a_usage_error_before_anything_loads(capsys):
    assert run(["serve", "--kv-budget", "2X", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "--kv-budget" in err and "512M or 2G" in err and "Traceback" not in err


def test_flag_and_config_file_reach_the_server_settings(monkeypatch):
    seen = []
    monkeypatch.setattr("qwenchat.server.run.serve", lambda settings, opts, progress=None: seen.append(settings) or 0)
    assert run(["serve", "--kv-budget", "512M"]) == 0
    assert run(["config", "set", "kv_budget", "2G"]) == 0
    assert run(["serve"]) == 0
    assert run(["serve", "--kv-budget", "0"]) == 0  # the flag over the file
    assert [s.kv_budget for s in seen] == [512 << 20, 2 << 30, 0]


def test_load_engine_gives_the_budget_to_the_pool(tiny_model):
    from qwenchat.engine.kv_pool import DEFAULT_BUDGET_BYTES

    assert load(tiny_model, 12345).pool.budget == 12345
    assert load(tiny_model, None).pool.budget == DEFAULT_BUDGET_BYTES


# -- its effect, through the API --------------------------------------------------------------------


def cached_on_return(live, engine, rounds):
    """Send conversations in the order `rounds` gives (indexes); each request's cached tokens."""
    backend = Backend()
    backend.attach(engine, ["tiny"])
    s = live(create_app(backend))
    client = openai.OpenAI(base_url=s.v1, api_key="unused", max_retries=0, timeout=60)
    out = []
    for i in rounds:
        r = client.chat.completions.create(model="tiny", messages=conversation(i), max_tokens=4, temperature=0)
        out.append(r.usage.prompt_tokens_details.cached_tokens)
    return out, r.usage.prompt_tokens


def test_a_small_budget_pushes_the_oldest_conversation_out(live, tiny_model):
    engine = load(tiny_model, None)
    prompt = len(engine.chat_prompt(conversation(0), reserve=0)[0])
    # room for one put-aside conversation, not two
    budget = int(1.5 * (prompt + 4) * token_bytes(tiny_model))
    small = load(tiny_model, budget)
    cached, _ = cached_on_return(live, small, [0, 1, 2, 1, 0])
    opening = cached[1]  # what two different conversations share: the template's first tokens
    assert opening < 10
    assert cached[2] == opening
    assert cached[3] >= prompt - 1  # 1 was the most recent put aside: it came back
    assert cached[4] == opening  # 0 was pushed out by 1 and 2: prefilled again


def test_the_default_budget_keeps_every_conversation(live, tiny_model):
    cached, prompt = cached_on_return(live, load(tiny_model, None), [0, 1, 2, 1, 0])
    assert all(c >= prompt - 1 for c in cached[3:])


def test_a_zero_budget_keeps_none(live, tiny_model):
    cached, _ = cached_on_return(live, load(tiny_model, 0), [0, 1, 0])
    assert cached[2] == cached[1] < 10
