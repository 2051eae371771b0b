"""Slow and greedy clients against a real ``dhian serve`` process on loopback (real sockets):
slowloris connections (headers + one body byte, or headers that never end) are cut off within
the read timeout (408 / closed), one address cannot hold more than its share of connections
(429), the server as a whole holds a bounded number (503), and a normal request from another
address is answered quickly throughout. Other client addresses are other loopback addresses
(127.0.0.2, ...), which Linux routes to the same server."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("uvicorn", reason="pip install fastapi uvicorn httpx")
import httpx
from server_proc import free_port, server_process

READ_TIMEOUT = 1.5
PER_CLIENT = 16
TOTAL = 40

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="127.0.0.x aliases: Linux")


@pytest.fixture(scope="module")
def url(tiny_dirs, tmp_path_factory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("slow") / "log"
    argv = ["-m", "dhian", "serve", "--model", str(tiny_dirs["rnnsearch"]), "--port", str(port)]
    argv += ["--device", "cpu", "--read-timeout", str(READ_TIMEOUT)]
    argv += ["--max-connections-per-client", str(PER_CLIENT), "--max-connections", str(TOTAL)]
    with server_process(argv, port, log) as (address, _proc):
        yield address


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _connect(url: str, source: str) -> socket.socket:
    s = socket.socket()
    s.settimeout(10)
    s.bind((source, 0))
    s.connect(("127.0.0.1", _port(url)))
    return s


def _slow_body(url: str, source: str) -> socket.socket:
    """A request that declares 100 body bytes and sends one."""
    s = _connect(url, source)
    s.sendall(
        b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    return s


def _read_all(s: socket.socket) -> bytes:
    """Everything until the server closes (or the 10 s socket timeout fails the test)."""
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def _status(raw: bytes) -> int | None:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else None


def _normal(url: str) -> tuple[int, float]:
    start = time.monotonic()
    r = httpx.post(f"{url}/translate", json={"text": "Und es ward Licht."}, timeout=10)
    return r.status_code, time.monotonic() - start


def test_slowloris_bodies_get_408_and_others_are_still_served(url):
    conns = [_slow_body(url, "127.0.0.2") for _ in range(50)]
    opened = time.monotonic()
    status, took = _normal(url)  # another address: served at once
    assert status == 200 and took < 2.0, (status, took)
    answers = [_status(_read_all(s)) for s in conns]  # each one ends: answered, then closed
    waited = time.monotonic() - opened
    for s in conns:
        s.close()
    assert answers.count(408) == PER_CLIENT, answers  # held until the read timeout
    assert answers.count(429) == 50 - PER_CLIENT, answers  # beyond the per-client cap
    assert READ_TIMEOUT * 0.8 < waited < READ_TIMEOUT + 3.0, waited
    assert _normal(url)[0] == 200


def test_headers_that_never_end_are_closed_within_the_read_timeout(url):
    conns = [_connect(url, "127.0.0.3") for _ in range(10)]
    for s in conns:
        s.sendall(b"POST /translate HTTP/1.1\r\nHost: x\r\n")  # and nothing more
    start = time.monotonic()
    assert _normal(url)[0] == 200
    for s in conns:
        assert _read_all(s) == b""  # closed by the server, without an answer
        s.close()
    assert time.monotonic() - start < READ_TIMEOUT + 3.0


def test_the_total_connection_cap_then_recovery(url):
    conns = [_slow_body(url, f"127.0.0.{4 + i // 10}") for i in range(TOTAL)]  # 4 addresses
    time.sleep(0.2)
    extra = _connect(url, "127.0.0.9")
    assert _status(_read_all(extra)) == 503  # over the total: refused, closed
    extra.close()
    answers = [_status(_read_all(s)) for s in conns]
    for s in conns:
        s.close()
    assert answers == [408] * TOTAL
    status, took = _normal(url)  # the slots are free again
    assert status == 200 and took < 2.0


def test_a_complete_body_is_not_cut_off(url):
    """The read timeout bounds the upload only: a request whose body arrived is answered even
    when the server takes longer than the read timeout to reply (keep-alive reuse included)."""
    with httpx.Client(timeout=10) as client:
        for _ in range(3):
            r = client.post(f"{url}/translate", json={"text": "Gott"})
            assert r.status_code == 200
        time.sleep(READ_TIMEOUT + 0.5)  # idle keep-alive connection, past the read timeout
        assert client.post(f"{url}/translate", json={"text": "Gott"}).status_code == 200
