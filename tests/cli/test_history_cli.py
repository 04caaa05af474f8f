"""`qwenchat history ...` and `qwenchat preset ...` through `qwenchat.cli.run`."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from qwenchat.cli import history as history_cli
from qwenchat.cli import run
from qwenchat.store import Store

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def chats() -> list[int]:
    with Store.open() as store:
        a = store.create_conversation("Qwen/Qwen2.5-0.5B-Instruct", system_prompt="be brief")
        u = store.add_message(a.id, "user", "What is a pelican?")
        store.add_message(a.id, "assistant", "A large water bird.", meta={"seed": 3})
        store.add_message(a.id, "assistant", "A bird", parent_id=u.id, status="interrupted")
        b = store.create_conversation("Qwen/Qwen2-1.5B-Instruct")
        store.add_message(b.id, "user", "Reverse a list in Python")
        return [a.id, b.id]


def test_list_shows_newest_first_with_ids_and_titles(chats, capsys) -> None:
    assert run(["history", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "UPDATED", "MSGS", "MODEL", "TITLE"]
    assert lines[1].split()[0] == str(chats[1]) and lines[1].endswith("Reverse a list in Python")
    assert lines[2].split()[0] == str(chats[0]) and "Qwen2.5-0.5B-Instruct" in lines[2]
    assert run(["history", "list", "--limit", "1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_list_when_empty(capsys) -> None:
    assert run(["history", "list"]) == 0
    out = capsys.readouterr()
    assert out.out == "" and "no conversations yet" in out.err


def test_show_prints_the_active_thread(chats, capsys) -> None:
    assert run(["history", "show", str(chats[0])]) == 0
    out = capsys.readouterr()
    assert "# What is a pelican?" in out.out and "## System\n\n```text\nbe brief\n```" in out.out
    assert "A bird\n\n*(interrupted)*" in out.out and "A large water bird" not in out.out
    assert "1 message(s) on other branches" in out.err


def test_show_unknown_id_is_a_clean_error(capsys) -> None:
    assert run(["history", "show", "42"]) == 1
    err = capsys.readouterr().err
    assert "error: no conversation 42" in err and "qwenchat history list" in err
    assert "Traceback" not in err


def test_search(chats, capsys) -> None:
    assert run(["history", "search", "pelican"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith(f"{chats[0]}\t#") and "[pelican]" in out[0]
    assert run(["history", "search", "walrus"]) == 0
    assert "no messages match" in capsys.readouterr().err
    assert run(["history", "search", " "]) == 2  # an empty search is a mistake, not "no match"
    assert "nothing to search for" in capsys.readouterr().err


def test_export_json_to_file_and_import_round_trips(chats, capsys, tmp_path) -> None:
    target = tmp_path / "chat.json"
    assert run(["history", "export", str(chats[0]), "--format", "json", "-o", str(target)]) == 0
    data = json.loads(target.read_text())
    assert data["format"] == "qwenchat.conversation" and len(data["messages"]) == 3
    capsys.readouterr()
    assert run(["history", "import", str(target)]) == 0  # the chat is here: nothing doubled
    out = capsys.readouterr()
    assert out.out == "" and f"skipped 1 conversation already in the history ({chats[0]}); --again" in out.err
    assert run(["history", "import", str(target), "--again"]) == 0
    out = capsys.readouterr().out
    new_id = int(out.split()[2].rstrip(":"))
    assert out.startswith(f"imported conversation {new_id}: What is a pelican?")
    with Store.open() as store:
        again = store.export_conversation(new_id)
    for key in ("title", "model", "system_prompt", "settings", "created_at", "updated_at"):
        assert again[key] == data[key]
    strip = lambda ms: [{k: v for k, v in m.items() if k not in ("id", "parent_id")} for m in ms]
    assert strip(again["messages"]) == strip(data["messages"])


def test_export_md_to_stdout(chats, capsys) -> None:
    assert run(["history", "export", str(chats[1]), "--format", "md"]) == 0
    assert capsys.readouterr().out.startswith("# Reverse a list in Python\n")


def test_export_all_and_import_from_stdin(chats, capsys, monkeypatch) -> None:
    assert run(["history", "export", "--all"]) == 0
    dump = capsys.readouterr().out
    assert len(json.loads(dump)["conversations"]) == 2
    with Store.open() as store:
        store.add_message(chats[0], "user", "and a heron?")  # continued since the export: still that chat
        store.delete_conversation(chats[1])
    monkeypatch.setattr(sys, "stdin", io.StringIO(dump))
    assert run(["history", "import", "-"]) == 0  # restoring the backup brings back what was deleted
    out = capsys.readouterr()
    assert out.out.count("imported conversation") == 1 and "Reverse a list" in out.out
    assert f"skipped 1 conversation already in the history ({chats[0]})" in out.err
    with Store.open() as store:
        assert len(store.list_conversations()) == 2
    monkeypatch.setattr(sys, "stdin", io.StringIO(dump))
    assert run(["history", "import", "-"]) == 0  # a second time: nothing new
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(sys, "stdin", io.StringIO(dump))
    assert run(["history", "import", "-", "--again"]) == 0
    assert capsys.readouterr().out.count("imported conversation") == 2
    with Store.open() as store:
        assert len(store.list_conversations()) == 4


@pytest.mark.parametrize(
    "args, words",
    [
        (["history", "export"], "which conversation"),
        (["history", "export", "1", "--all"], "not both"),
        (["history", "export", "--all", "--format", "md"], "JSON only"),
        (["history", "export", "1", "--format", "pdf"], "unknown export format"),
    ],
)
def test_export_usage_errors(args, words, capsys) -> None:
    assert run(args) == 2
    assert words in capsys.readouterr().err


def test_import_bad_files(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert run(["history", "import", str(bad)]) == 1
    assert "is not valid JSON" in capsys.readouterr().err
    bad.write_text('{"hello": 1}')
    assert run(["history", "import", str(bad)]) == 1
    assert "not a qwenchat export" in capsys.readouterr().err
    assert run(["history", "import", str(tmp_path / "missing.json")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_rename(chats, capsys) -> None:
    assert run(["history", "rename", str(chats[1]), "Lists"]) == 0
    with Store.open() as store:
        assert store.get_conversation(chats[1]).title == "Lists"


def test_rm_without_a_terminal_refuses_unless_yes(chats, capsys, monkeypatch) -> None:
    monkeypatch.setattr(history_cli, "_stdin_is_interactive", lambda: False)
    assert run(["history", "rm", str(chats[0])]) == 2
    assert "--yes" in capsys.readouterr().err
    with Store.open() as store:
        store.get_conversation(chats[0])  # still there
    assert run(["history", "rm", str(chats[0]), "--yes"]) == 0
    with Store.open() as store:
        assert [c.id for c in store.list_conversations()] == [chats[1]]


def test_rm_asks_on_a_terminal(chats, capsys, monkeypatch) -> None:
    monkeypatch.setattr(history_cli, "_stdin_is_interactive", lambda: True)
    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))
    assert run(["history", "rm", str(chats[0])]) == 0
    assert "delete conversation" in capsys.readouterr().err
    with Store.open() as store:
        assert len(store.list_conversations()) == 2
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    assert run(["history", "rm", str(chats[0])]) == 0
    with Store.open() as store:
        assert len(store.list_conversations()) == 1


def test_rm_in_a_real_process_with_no_stdin(chats) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "qwenchat", "history", "rm", str(chats[0])],
        cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "refusing to delete" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_presets(capsys) -> None:
    assert run(["preset", "save", "coder", "You write Rust."]) == 0
    assert "saved preset 'coder'" in capsys.readouterr().err
    assert run(["preset", "save", "coder", "You write Python."]) == 0  # it said "saved" again, as if new
    assert "replaced the text of preset 'coder'" in capsys.readouterr().err
    assert run(["preset", "list"]) == 0
    assert "coder  You write Python." in capsys.readouterr().out
    assert run(["preset", "show", "coder"]) == 0
    assert capsys.readouterr().out == "You write Python.\n"
    assert run(["preset", "show", "codr"]) == 1
    assert "did you mean 'coder'" in capsys.readouterr().err
    assert run(["preset", "rename", "coder", "py"]) == 0
    assert run(["preset", "rm", "py"]) == 0
    capsys.readouterr()
    assert run(["preset", "list"]) == 0
    assert "no presets yet" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, words",
    [
        (b'{"format": "qwenchat.conversation", "title": "caf\xe9"}', "is not UTF-8 text (byte 49"),
        (b"[" * 200_000 + b"]" * 200_000, "nests arrays or objects too deeply"),
        (json.dumps({"format": "qwenchat.conversation", "version": 1, "model": 3, "created_at":
                     "2024-01-01T00:00:00+00:00", "updated_at": "2024-01-01T00:00:00+00:00",
                     "messages": []}).encode(), "$.model is a number (3)"),
    ],
    ids=["not-utf8", "deeply-nested", "number-as-model"],
)
def test_import_of_a_hostile_file_is_one_clean_error_and_changes_nothing(
    chats, tmp_path, capsys, content: bytes, words: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    assert run(["history", "import", str(bad)]) == 1
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 2  # error + hint
    with Store.open() as store:
        assert [c.id for c in store.list_conversations()] == chats[::-1]


def test_import_from_stdin_checks_the_encoding_too(chats) -> None:
    out = subprocess.run([sys.executable, "-m", "qwenchat", "history", "import", "-"],
                         cwd=ROOT, input=b'{"title": "\xff"}', capture_output=True, timeout=120)
    assert out.returncode == 1
    assert b"stdin is not UTF-8 text" in out.stderr and b"Traceback" not in out.stderr
