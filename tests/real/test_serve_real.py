"""The real model through `qwenchat serve` says what `qwenchat ask` says: greedy, the same prompt,
the same model and settings (the defaults of both commands, from one start-up path), 32 tokens.

Both are real processes: the server started with `qwenchat serve -m DIR --port 0`, driven by the
official `openai` client; `ask` run with `--temperature 0 --max-tokens 32 --json`, unsaved."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn", reason="the server tests need the 'serve' extra: pip install -e '.[test,serve]'")

from tests.server.serve_process import ServeProcess  # noqa: E402

SYSTEM = "You are a concise assistant."
QUESTION = "Write a Python function that checks whether a number is prime."
RAW = "def fibonacci(n):\n"
MAX_TOKENS = 32


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve-real-home")


@pytest.fixture(scope="module")
def server(real_model_dir: Path, home: Path):
    s = ServeProcess(["-m", str(real_model_dir), "--port", "0"], home)
    try:
        s.start(timeout=600)
        yield s
    finally:
        if s.proc.poll() is None:
            s.stop(signal.SIGINT)
        s.kill()


def ask(model_dir: Path, home: Path, *args: str) -> dict:
    env = dict(os.environ, QWENCHAT_HOME=str(home), HF_HUB_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, "-m", "qwenchat", "ask", "-m", str(model_dir), "--temperature", "0",
         "--max-tokens", str(MAX_TOKENS), "--json", "-n", *args],
        capture_output=True, text=True, env=env, timeout=600, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def served_id(client) -> str:
    return client.models.list().data[0].id


def test_chat_through_the_server_equals_ask(server, real_model_dir, home):
    client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=600)
    r = client.chat.completions.create(
        model=served_id(client), temperature=0, max_tokens=MAX_TOKENS,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}],
    )
    expected = ask(real_model_dir, home, "-s", SYSTEM, QUESTION)
    assert r.usage.completion_tokens == MAX_TOKENS  # a real reply, cut by the limit
    assert r.choices[0].message.content == expected["text"]
    streamed = client.chat.completions.create(
        model=served_id(client), temperature=0, max_tokens=MAX_TOKENS, stream=True,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}],
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == expected["text"]


def test_completion_through_the_server_equals_ask_raw(server, real_model_dir, home):
    client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=600)
    r = client.completions.create(model=served_id(client), prompt=RAW, temperature=0, max_tokens=MAX_TOKENS)
    expected = ask(real_model_dir, home, "--raw", RAW)
    assert r.choices[0].text == expected["text"] and r.choices[0].text.strip()
