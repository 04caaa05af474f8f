"""`qwenchat.fit` with a model on a server: token counts that are estimates (no ids to decode, so
cuts go by characters, with slack, and say "about"), and a server that reports no window."""

from __future__ import annotations

from dataclasses import replace

import pytest

from qwenchat.engine.records import GenerateOptions
from qwenchat.errors import InputTooLongError
from qwenchat.fit import BYTES_PER_TOKEN, ESTIMATE_SLACK, UNKNOWN_WINDOW, Piped, fit_message, input_limit
from qwenchat.session import ChatSession
from tests.fake_engine import FakeEngine
from tests.test_session_remote import RemoteLikeInfo

WINDOW = 400
LINES = "".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(300))


def remote_session(window: int = WINDOW) -> ChatSession:
    # FakeEngine's tokenizer has no decode, like a server's estimated counts: ids are placeholders
    engine = FakeEngine(info=RemoteLikeInfo(context_window=window))
    return ChatSession(engine, None, options=GenerateOptions(max_new_tokens=16))


def measured(session: ChatSession, text: str) -> int:
    return len(session.engine.encode_chat([{"role": "user", "content": text}]))


@pytest.mark.parametrize("cut", ["head", "tail"])
def test_a_cut_on_estimates_keeps_slack_and_says_about(cut):
    s = remote_session()
    fitted = fit_message(s, "Summarise this", Piped(LINES), cut)
    assert fitted.marker.startswith("[... about ") and fitted.cut_tokens > 0
    assert measured(s, fitted.text) + 16 <= WINDOW - int(WINDOW * ESTIMATE_SLACK)
    body = fitted.text.removeprefix("Summarise this\n\n")
    kept = body.split("\n", 1)[1] if cut == "head" else body.rsplit("\n", 1)[0]
    assert (LINES.endswith(kept) if cut == "head" else LINES.startswith(kept)) and kept.strip()


def test_refusing_says_the_count_is_an_estimate_and_no_local_flag():
    with pytest.raises(InputTooLongError, match="estimated") as e:
        fit_message(remote_session(), "Summarise this", Piped(LINES), None)
    assert "--context-limit" not in e.value.hint and "--truncate" in e.value.hint


def test_an_unreported_window_sends_the_message_whole():
    s = remote_session(window=0)
    assert fit_message(s, "Summarise", Piped(LINES * 10), "head").text == f"Summarise\n\n{LINES * 10}"
    assert input_limit(s, None) == BYTES_PER_TOKEN * UNKNOWN_WINDOW  # not 0 bytes
    assert input_limit(s, 1000) == 1000


def test_an_unreported_window_still_marks_a_cut_by_bytes():
    s = remote_session(window=0)
    fitted = fit_message(s, "Summarise", Piped(LINES[-2000:], skipped=777, limit=2000), "head")
    assert fitted.text.startswith("Summarise\n\n[... 777 bytes cut ...]\n") and fitted.marker
    with pytest.raises(InputTooLongError, match="input limit of 2000 bytes"):
        fit_message(s, "Summarise", Piped(LINES[:2000], unread=True, limit=2000), None)


def test_exact_counts_from_a_server_keep_the_whole_window():
    s = remote_session()
    s.engine.info = replace(s.engine.info, exact_tokens=True)
    short = "word " * int(WINDOW * 0.88)  # fits the whole window, not the window less the slack
    assert fit_message(s, None, Piped(short), None).text == short


@pytest.mark.parametrize("cut", ["head", "tail"])
def test_exact_counts_from_a_server_cut_without_ids_to_decode(cut):
    # vLLM and llama.cpp count exactly through /tokenize, but give no ids to decode a cut from
    s = remote_session()
    s.engine.info = replace(s.engine.info, exact_tokens=True)
    fitted = fit_message(s, "Summarise this", Piped(LINES), cut)
    assert fitted.marker.startswith("[... ") and "about" not in fitted.marker and fitted.cut_tokens > 0
    assert measured(s, fitted.text) + 16 <= WINDOW
