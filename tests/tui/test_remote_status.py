"""The status bar of a remote model shows what is true of it: the server and the model id, never
the local engine's device or precision; the context meter only when the server reported the
window, with "~" on an estimated count; cache reuse only when the server reported some."""

from __future__ import annotations

from types import SimpleNamespace

from qwenchat.tui.widgets.statusbar import model_facts, status_line


def remote_info(window: int = 0, exact: bool = False, label: str = "http://gpu-box:8000/v1#Qwen/Qwen2-72B-Instruct"):
    return SimpleNamespace(label=label, device="remote", dtype="", precision="", context_window=window,
                           server="http://gpu-box:8000/v1", exact_tokens=exact)


def test_remote_model_names_server_and_model_never_device():
    line = status_line(model_facts(remote_info(), used=120, ttft=0.31, tokens=42, tok_s=30.14, cached=0))
    parts = line.split(" │ ")
    assert parts[:2] == ["Qwen2-72B-Instruct", "gpu-box:8000"]
    assert "TTFT 0.31s" in parts and "42 tok" in parts and "30.1 tok/s" in parts
    assert "remote" not in line and "ctx" not in line  # no window reported: no meter
    assert "cached" not in line  # 0 from a server may mean "not reported"


def test_remote_window_reported_shows_meter_estimated_with_tilde():
    assert "ctx ~120/32768" in status_line(model_facts(remote_info(32768), used=120))
    assert "ctx 120/32768" in status_line(model_facts(remote_info(32768, exact=True), used=120))
    assert "cached 64" in status_line(model_facts(remote_info(), cached=64))


def test_remote_label_without_model_still_names_the_server():
    line = status_line(model_facts(remote_info(label="http://gpu-box:8000/v1")))
    assert line.split(" │ ")[:2] == ["model?", "gpu-box:8000"]


def test_local_model_unchanged():
    info = SimpleNamespace(label="qwen2.5-0.5b", device="cpu", dtype="float32", precision="int8", context_window=4096)
    line = status_line(model_facts(info, used=10, cached=0))
    assert line == "qwen2.5-0.5b │ cpu/int8 │ ctx 10/4096 │ cached 0"


def test_a_server_url_while_connecting_is_named_by_its_host_not_its_last_path_part():
    from qwenchat.tui.widgets.statusbar import StatusFacts

    assert status_line(StatusFacts(model="http://gpu-box:8000/v1", note="loading…")) == "gpu-box:8000 │ loading…"
    assert status_line(StatusFacts(model="http://gpu-box:8000/v1#Qwen/Qwen2-72B-Instruct")).startswith(
        "Qwen2-72B-Instruct @ gpu-box:8000")


def test_picker_tags_a_server_used_before_as_a_server():
    from qwenchat.tui.screens.models import model_choices

    label = dict(model_choices(used=["http://gpu-box:8000/v1#Qwen/Qwen2-72B-Instruct"]))[
        "http://gpu-box:8000/v1#Qwen/Qwen2-72B-Instruct"]
    assert label.endswith("[server]")


def test_a_reply_stopped_before_its_first_token_shows_no_time_to_it():
    """It showed "TTFT 5.94s" (the time until Esc) beside "0 tok" (found hands-on)."""
    line = status_line(model_facts(remote_info(), ttft=5.94, tokens=0))
    assert "TTFT" not in line and "0 tok" in line
    assert "TTFT 0.31s" in status_line(model_facts(remote_info(), ttft=0.31, tokens=1))
