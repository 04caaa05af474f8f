"""The message view as a user reads it: their own text as written, replies with their line
breaks, branch indicators, details lines and the system prompt (a bare ChatLog in a small app)."""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

from textual.app import App, ComposeResult
from textual.widgets import Collapsible

from qwenchat.tui.widgets.chatlog import ChatLog, MessageView, SystemPromptView, code_blocks, stored_language
from tests.tui.screen_text import screen_lines, screen_text


class LogApp(App[None]):
    def compose(self) -> ComposeResult:
        yield ChatLog()


def entry(role: str, content: str, **kw):
    return SimpleNamespace(role=role, content=content, status=kw.pop("status", "complete"),
                           created_at=kw.pop("created_at", None), meta=kw.pop("meta", {}), **kw)


async def shown(entries, size=(70, 40), **kw) -> tuple[LogApp, list[str]]:
    app = LogApp()
    async with app.run_test(size=size) as pilot:
        await app.query_one(ChatLog).show(entries, **kw)
        await pilot.pause()
        return app, screen_lines(app)


def rows_after(lines: list[str], first: str) -> list[str]:
    start = next(i for i, line in enumerate(lines) if line.strip() == first)
    return [line.strip() for line in lines[start:]]


async def test_user_message_keeps_its_lines_and_indentation():
    typed = "Fix this:\n\ndef f(x):\n    if x:\n        return 1\n- keep\n- lines"
    _, lines = await shown([entry("user", typed)])
    start = next(i for i, line in enumerate(lines) if line.strip() == "Fix this:")
    got = lines[start:start + 7]
    indent = len(got[0]) - len(got[0].lstrip())
    assert [line[indent:] for line in got] == typed.split("\n")


async def test_a_tab_takes_as_many_columns_as_in_the_message_box():
    """A pasted tab was 4 columns wide in the box and 8 once sent (a new-user run)."""
    from qwenchat.tui.widgets.prompt_input import TAB_WIDTH

    _, lines = await shown([entry("user", "start\n\tTabbed\nab\tc")])
    start = next(i for i, line in enumerate(lines) if line.strip() == "start")
    indent = len(lines[start]) - len(lines[start].lstrip())
    assert [line[indent:].rstrip() for line in lines[start + 1:start + 3]] == [
        " " * TAB_WIDTH + "Tabbed", "ab" + " " * (TAB_WIDTH - 2) + "c"]
    assert TAB_WIDTH == 4


async def test_user_text_is_never_markup():
    typed = "a [bold]b[/bold] c [/] d [link=x]e[/link] *f* `g`"
    _, lines = await shown([entry("user", typed)])
    assert typed in "\n".join(lines)


async def test_reply_keeps_single_line_breaks_and_code_blocks():
    reply = "Roses are red\nViolets are blue\nSugar is sweet\n\n```python\ndef f():\n    return 1\n```"
    _, lines = await shown([entry("user", "a poem"), entry("assistant", reply)])
    rows = rows_after(lines, "Roses are red")
    assert rows[:3] == ["Roses are red", "Violets are blue", "Sugar is sweet"]
    code = next(i for i, line in enumerate(lines) if line.strip() == "def f():")
    assert lines[code + 1].index("return") - lines[code].index("def") == 4  # the code's indentation kept


async def test_streamed_reply_keeps_line_breaks_too():
    app = LogApp()
    async with app.run_test(size=(60, 20)) as pilot:
        log = app.query_one(ChatLog)
        view = await log.add("assistant", "", "pending")
        for piece in ["line one", "\nline", " two\nline three"]:
            await view.append(piece)
        await pilot.pause()
        assert rows_after(screen_lines(app), "line one")[:3] == ["line one", "line two", "line three"]


async def test_branch_indicator_only_with_siblings_and_updated_in_place():
    app = LogApp()
    async with app.run_test(size=(70, 30)) as pilot:
        log = app.query_one(ChatLog)
        entries = [entry("user", "q"), entry("assistant", "first")]
        await log.show(entries, branches=[(1, 1), (1, 1)])
        await pilot.pause()
        assert "< " not in screen_text(app)
        log.annotate(entries, branches=[(1, 1), (2, 3)])
        await pilot.pause()
        header = next(line for line in screen_lines(app) if "Assistant" in line)
        assert "< 2/3 >" in header
        assert "< " not in next(line for line in screen_lines(app) if "You" in line)


async def test_details_line_shows_time_model_tokens_and_speed():
    now = datetime.now(timezone.utc)
    meta = {"model": "Qwen-tiny", "usage": {"completion_tokens": 212},
            "timings": {"decode_tok_s": 38.46}, "finish_reason": "stop"}
    entries = [entry("user", "hi", created_at=now.isoformat()),
               entry("assistant", "hello", created_at=now.isoformat(), meta=meta)]
    app, lines = await shown(entries)
    local = now.astimezone().strftime("%H:%M")
    assert any(line.strip() == local for line in lines)
    assert any(line.strip() == f"{local} · Qwen-tiny · 212 tokens · 38.5 tok/s" for line in lines)


async def test_no_details_no_blank_line():
    _, lines = await shown([entry("user", "one"), entry("assistant", "two")])
    rows = rows_after(lines, "You")
    assert rows[:5] == ["You", "one", "", "Assistant", "two"]


async def test_system_prompt_is_shown_dim_at_the_top_and_folds():
    app = LogApp()
    async with app.run_test(size=(70, 30)) as pilot:
        log = app.query_one(ChatLog)
        await log.show([entry("user", "hi")], system_prompt="You are [b]terse[/b].\nAnswer in French.")
        await pilot.pause()
        lines = [line.strip() for line in screen_lines(app) if line.strip()]
        assert lines[0].endswith("System prompt")
        assert lines[1:3] == ["You are [b]terse[/b].", "Answer in French."]
        assert lines.index("You") > 2  # above the first message
        view = log.system_prompt_view
        assert isinstance(view, SystemPromptView) and isinstance(view, Collapsible)
        view.collapsed = True
        await pilot.pause()
        assert "Answer in French." not in screen_text(app)
        await log.show([entry("user", "hi")], system_prompt="You are [b]terse[/b].")  # redraw keeps it folded
        await pilot.pause()
        assert log.system_prompt_view.collapsed
        await log.set_system_prompt(None)
        await pilot.pause()
        assert log.system_prompt_view is None and "System prompt" not in screen_text(app)
        await log.set_system_prompt("New rules.")
        await pilot.pause()
        assert isinstance(log.children[0], SystemPromptView) and "New rules." in screen_text(app)


async def test_code_blocks_in_order_fenced_and_unclosed():
    text = "a\n```py\nx = 1\n```\nb\n~~~\ny\n~~~\n```sh\necho open"
    assert code_blocks(text) == ["x = 1", "y", "echo open"]
    assert MessageView("assistant", text).text == text


JSON_REPLY = '{\n  "fruits": [\n    "apple",\n    "banana"\n  ]\n}'


def json_settings(constraint) -> dict:
    """A reply's meta as the session stores it: the settings it was written with."""
    return {"model": "m", "settings": {"temperature": 0.7, "constraint": constraint}}


async def test_a_reply_written_under_a_json_constraint_is_shown_as_json_when_reopened():
    schema = {"type": "object", "properties": {"fruits": {"type": "array"}}, "required": ["fruits"]}
    entries = [entry("user", "fruits?"), entry("assistant", JSON_REPLY, meta=json_settings("json_object")),
               entry("user", "again"), entry("assistant", JSON_REPLY, meta=json_settings(schema)),
               entry("user", "as text"), entry("assistant", JSON_REPLY, meta={"settings": {"temperature": 0.7}})]
    app, lines = await shown(entries, size=(70, 60))
    assert [stored_language(e) for e in entries] == [None, "json", None, "json", None, None]
    apples = [i for i, line in enumerate(lines) if line.strip() == '"apple",']
    # each reply's '{' two rows up from its '"apple",': JSON is drawn in a code box, 2 further in
    assert [lines[i - 2].index("{") for i in apples] == [4, 4, 2]
    assert [lines[i].index('"') - lines[i - 2].index("{") for i in apples] == [4, 4, 4]  # indentation kept


def test_a_json_reply_copies_as_one_code_block_exactly():
    view = MessageView("assistant", JSON_REPLY + "\n", language="json")
    assert [(b.info, b.code) for b in view.code_blocks()] == [("json", JSON_REPLY + "\n")]
    assert view.code_blocks()[0].label.startswith("json: {")
    assert MessageView("assistant", JSON_REPLY).code_blocks() == []  # Markdown: no fence, no block


async def test_a_redraw_after_the_log_was_taken_down_ends_quietly(monkeypatch):
    """Ctrl+N then Ctrl+Q at once: the new chat's redraw met a log the closing app had already
    detached, and the app's last screen was a MountError traceback (tests/tui/test_terminal.py
    caught it)."""
    app = LogApp()
    async with app.run_test() as pilot:
        log = app.query_one(ChatLog)
        await log.show([entry("user", "hi")])
        monkeypatch.setattr(ChatLog, "is_attached", property(lambda self: False))  # as while the app closes
        await log.show([entry("user", "hi"), entry("assistant", "there")])  # no MountError
        await log.show([])
        await log.set_system_prompt("be brief")
        monkeypatch.undo()
        await pilot.pause()
        assert log.is_attached
