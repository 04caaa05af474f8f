"""The URL `qwenchat serve` prints is one a client can use: bound to every address, it names
the loopback address (http://0.0.0.0:... is no address to connect to) and says how others reach it."""

from __future__ import annotations

import socket

import pytest

from qwenchat.server.run import base_url, bind


def test_loopback_is_printed_as_bound():
    with bind("127.0.0.1", 0) as sock:
        assert base_url(sock) == f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def test_every_address_prints_the_loopback_url_and_how_others_connect():
    with bind("0.0.0.0", 0) as sock:
        text, port = base_url(sock), sock.getsockname()[1]
    assert text.startswith(f"http://127.0.0.1:{port}/v1 ") and "0.0.0.0" not in text
    assert "other machines" in text


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_every_ipv6_address_prints_the_ipv6_loopback():
    try:
        sock = bind("::", 0)
    except Exception as e:  # noqa: BLE001 - a machine without IPv6 sockets
        pytest.skip(f"cannot bind ::: {e}")
    with sock:
        assert base_url(sock).startswith(f"http://[::1]:{sock.getsockname()[1]}/v1 ")
