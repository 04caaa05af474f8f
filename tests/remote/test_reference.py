"""Naming a remote model: which names are URLs, how one parses, its label and host, the key."""

from __future__ import annotations

import pytest

from qwenchat.errors import UsageError
from qwenchat.remote.reference import RemoteRef, api_key, is_remote


@pytest.mark.parametrize("name,expected", [
    ("http://gpu-box:8000/v1", True), ("HTTPS://gpu-box/v1", True), ("  http://x", True),
    ("Qwen/Qwen2-0.5B-Instruct", False), ("./http:/x", False), ("", False), (None, False),
    ("~/models/http.gguf", False),
])
def test_is_remote_only_for_http_urls(name, expected):
    assert is_remote(name) is expected


def test_a_url_without_a_path_means_the_v1_api():
    ref = RemoteRef.parse("http://gpu-box:8000")
    assert ref == RemoteRef("http://gpu-box:8000/v1", None)
    assert ref.label == "http://gpu-box:8000/v1"
    assert ref.host == "gpu-box:8000"


def test_a_path_is_kept_and_a_model_follows_the_hash():
    ref = RemoteRef.parse("HTTPS://GPU-Box:8443/api/v1/#Qwen/Qwen2-72B-Instruct")
    assert ref.base_url == "https://gpu-box:8443/api/v1"
    assert ref.model == "Qwen/Qwen2-72B-Instruct"
    assert ref.label == "https://gpu-box:8443/api/v1#Qwen/Qwen2-72B-Instruct"
    assert ref.root == "https://gpu-box:8443"


def test_an_empty_model_after_the_hash_means_none():
    assert RemoteRef.parse("http://h:1/v1#").model is None


def test_credentials_in_the_url_are_refused_and_never_echoed():
    with pytest.raises(UsageError) as e:
        RemoteRef.parse("http://bob:s3cret@gpu-box:8000/v1")
    assert "QWENCHAT_API_KEY" in str(e.value)
    assert "s3cret" not in str(e.value)


@pytest.mark.parametrize("text,problem", [
    ("http://", "names no host"), ("http://gpu-box:99999/v1", "invalid port"), ("http://gpu-box:port/v1", "invalid port"), ("http://[::1", "malformed"),
    ("http://gpu box/v1", "not a server URL"), ("ftp://gpu-box/v1", "not a server URL"),
    ("http://gpu-box/v1?x=1", "has a query"),
])
def test_a_malformed_url_is_a_usage_error_with_an_example(text, problem):
    with pytest.raises(UsageError) as e:
        RemoteRef.parse(text)
    assert problem in e.value.message
    assert e.value.exit_code == 2


def test_api_key_order_flag_then_qwenchat_then_openai(monkeypatch):
    monkeypatch.delenv("QWENCHAT_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert api_key() is None
    monkeypatch.setenv("OPENAI_API_KEY", "from-openai")
    assert api_key() == "from-openai"
    monkeypatch.setenv("QWENCHAT_API_KEY", "from-qwenchat")
    assert api_key() == "from-qwenchat"
    assert api_key("from-flag") == "from-flag"
    monkeypatch.setenv("QWENCHAT_API_KEY", "  ")  # blank counts as unset
    assert api_key() == "from-openai"
