"""`qwenchat.fit`: only the piped material is cut, at a clean boundary, visibly, cheaply."""

from __future__ import annotations

import pytest

from qwenchat.engine.chat import ChatEngine
from qwenchat.engine.records import GenerateOptions
from qwenchat.errors import InputTooLongError
from qwenchat.fit import Piped, clean_edge, fit_message, join_message
from qwenchat.session import ChatSession, Entry

WINDOW = 256
LINES = "".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(300))


@pytest.fixture(scope="module")
def engine(tiny_model) -> ChatEngine:
    return ChatEngine.load(tiny_model, device="cpu", max_context=WINDOW, quantize="none")


@pytest.fixture
def session(engine) -> ChatSession:
    return ChatSession(engine, None, options=GenerateOptions(max_new_tokens=8))


def fits(session: ChatSession, text: str) -> bool:
    engine = session.engine
    reserve = engine.reply_reserve(engine.settings(session.options))
    return len(engine.encode_chat([{"role": "user", "content": text}])) + reserve <= WINDOW


def test_head_cut_keeps_the_instruction_and_starts_the_material_on_a_line(session):
    fitted = fit_message(session, "Summarise this", Piped(LINES), "head")
    assert fitted.text.startswith("Summarise this\n\n[... ")
    marker, kept = fitted.text.split("\n\n", 1)[1].split("\n", 1)
    assert marker == f"[... {fitted.cut_tokens} tokens cut ...]" and fitted.cut_tokens > 0
    assert kept.startswith("line ") and LINES.endswith(kept)  # a whole first line, the true end
    assert fits(session, fitted.text)


def test_tail_cut_ends_the_material_on_a_line_and_marks_the_cut(session):
    fitted = fit_message(session, "Summarise this", Piped(LINES), "tail")
    body = fitted.text.removeprefix("Summarise this\n\n")
    kept, marker = body.rsplit("\n", 1)
    assert marker == f"[... {fitted.cut_tokens} tokens cut ...]"
    assert LINES.startswith(kept + "\n") and kept.endswith("lazy dog")
    assert fits(session, fitted.text)


def test_a_long_history_does_not_shrink_the_material(session):
    """The engine leaves old turns out for a long message: the history is not what is sent."""
    alone = fit_message(session, "Summarise this", Piped(LINES), "head")
    for i in range(20):
        session.entries += [Entry("user", f"question {i} " * 10), Entry("assistant", f"answer {i} " * 10)]
    with_history = fit_message(session, "Summarise this", Piped(LINES), "head")
    assert with_history.text == alone.text


def test_material_that_fits_is_sent_whole_without_rendering_it(session, monkeypatch):
    rendered = []
    real = session.engine.encode_chat
    monkeypatch.setattr(session.engine, "encode_chat", lambda m: rendered.append(m) or real(m))
    fitted = fit_message(session, "Summarise", Piped("short text\n"), "head")
    assert fitted.text == join_message("Summarise", "short text\n") and fitted.marker == ""
    assert all("short text" not in m[-1]["content"] for m in rendered)  # measured, not rendered


def test_a_cut_renders_the_template_at_most_twice(session, monkeypatch):
    calls = []
    real = session.engine.encode_chat
    monkeypatch.setattr(session.engine, "encode_chat", lambda m: calls.append(1) or real(m))
    fit_message(session, "Summarise this", Piped(LINES * 20), "tail")
    assert len(calls) <= 2


def test_too_long_without_truncate_is_refused_before_rendering_the_material(session, monkeypatch):
    rendered = []
    real = session.engine.encode_chat
    monkeypatch.setattr(session.engine, "encode_chat", lambda m: rendered.append(m) or real(m))
    with pytest.raises(InputTooLongError, match=f"context window holds {WINDOW}") as e:
        fit_message(session, "Summarise this", Piped(LINES), None)
    assert "--truncate" in e.value.hint
    assert all("lazy dog" not in m[-1]["content"] for m in rendered)


def test_a_long_prompt_is_never_cut(session):
    with pytest.raises(InputTooLongError, match="the prompt needs"):
        fit_message(session, LINES, None, "head")


def test_input_past_the_byte_limit_is_refused_without_truncate_and_marked_with_it(session):
    read = Piped(LINES[:2000], unread=True, limit=2000)
    with pytest.raises(InputTooLongError, match="input limit of 2000 bytes"):
        fit_message(session, "Summarise", read, None)
    fitted = fit_message(session, "Summarise", read, "tail")
    assert fitted.text.endswith("stdin was not read past 2000 bytes ...]")
    skipped = Piped(LINES[-2000:], skipped=12345, limit=2000)
    fitted = fit_message(session, "Summarise", skipped, "head")
    assert "[... 12345 bytes and " in fitted.text and fitted.text.endswith(LINES[-60:])


@pytest.mark.parametrize(
    ("text", "cut", "expected"),
    [
        ("one two three\nfour five six seven\nfo", "tail", "one two three\nfour five six seven\n"),
        ("one two\nthree fo", "tail", "one two\nthree"),  # no line end near the cut: a word end
        ("\ufffdrd\nthree four five six", "head", "three four five six"),
        ("\ufffdrd two\nthree four", "head", "two\nthree four"),
        ("a" * 30 + " tail", "tail", "a" * 30),  # a word cut in two is dropped whole
        ("ee four five six", "head", "four five six"),
        ("xyz\ufffd", "tail", "xyz"),
    ],
)
def test_clean_edge_moves_a_cut_to_a_line_or_word_boundary(text, cut, expected):
    assert clean_edge(text, cut) == expected
