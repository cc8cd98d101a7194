"""Every request the broker ingress refuses is counted (by HTTP status) and logged in one line,
http.server's own refusals included (request line or header line too long, too many headers,
bad request line, unknown method or version); a request that stalls inside its headers gets 408;
a refused request that holds a whole body reaches `on_reject` (a dead letter in `modelmonitor
run`) with its body and ce-* attributes. Raw sockets, so the malformed bytes go out as written.
"""
from __future__ import annotations

import logging
import socket
import time
from collections import Counter

import pytest

from modelmonitor.local.broker import LocalBroker

READ_TIMEOUT = 1.0
H = b"Host: h\r\n"
CE = b"ce-specversion: 1.0\r\nce-type: t\r\nce-source: /s\r\nce-id: 1\r\n"

CASES = [
    ("too many headers", b"POST / HTTP/1.1\r\n" + H + b"X-A: b\r\n" * 150 + b"\r\n", 431),
    ("header line too long", b"POST / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
    ("request line too long", b"POST /" + b"a" * 70_000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    ("no target", b"POST\r\n" + H + b"\r\n", 400),
    ("bad version", b"POST / HTTP/x\r\n" + H + b"\r\n", 400),
    ("HTTP/2.0", b"POST / HTTP/2.0\r\n" + H + b"\r\n", 505),
    ("unknown method", b"BREW / HTTP/1.1\r\n" + H + b"\r\n", 501),
    ("PUT", b"PUT / HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n", 405),
    ("another path", b"POST /x HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n", 404),
    ("no length", b"POST / HTTP/1.1\r\n" + H + CE + b"\r\n", 411),
    ("too large", b"POST / HTTP/1.1\r\n" + H + CE + b"Content-Length: 99999999\r\n\r\n", 413),
    ("negative chunk", b"POST / HTTP/1.1\r\n" + H + CE + b"Transfer-Encoding: chunked\r\n\r\n-5\r\nabcde\r\n0\r\n\r\n", 400),
    ("stalled headers", b"POST / HTTP/1.1\r\n" + H + b"ce-specv", 408),
]


@pytest.fixture
def broker():
    kept: list = []
    b = LocalBroker([], max_body_bytes=1024 * 1024, on_reject=lambda *args: kept.append(args)).start()
    b._server.read_timeout = READ_TIMEOUT
    b.kept = kept
    yield b
    b.stop()


def exchange(broker: LocalBroker, request: bytes) -> bytes:
    """Send ``request`` and read the answer until the server closes (bounded)."""
    host, port = broker._server.server_address[:2]
    with socket.create_connection((host, port), timeout=READ_TIMEOUT + 10) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass        # answered and closed before everything was read
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    return data


def test_every_refusal_is_answered_counted_and_logged(broker, caplog):
    caplog.set_level(logging.WARNING, logger="modelmonitor.local.broker")
    for name, request, status in CASES:
        t0 = time.monotonic()
        answer = exchange(broker, request)
        assert answer.split(b"\r\n", 1)[0].split(b" ")[1] == str(status).encode(), (name, answer[:200])
        assert answer.count(b"HTTP/1.") == 1, name          # one answer, then the connection closes
        if name == "stalled headers":
            assert READ_TIMEOUT * 0.9 <= time.monotonic() - t0 < READ_TIMEOUT + 10
    stats = broker.stats()
    expected = Counter(status for _, _, status in CASES)
    assert stats["refused"] == dict(expected) and stats["rejected"] == len(CASES)
    assert stats["accepted"] == 0
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ingress refused")]
    assert Counter(int(line.split(": ", 1)[1].split(" ", 1)[0]) for line in lines) == expected, lines
    assert all("\n" not in line and len(line) < 600 for line in lines)    # 70 KB targets are cut
    assert broker.kept == []          # none of these holds a whole body


def test_an_idle_keep_alive_connection_is_closed_without_a_refusal(broker):
    answer = exchange(broker, b"GET /healthz HTTP/1.1\r\n" + H + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and answer.count(b"HTTP/1.") == 1
    assert broker.stats()["refused"] == {}


def test_a_get_body_is_not_read_as_the_next_request(broker):
    answer = exchange(broker, b"GET /healthz HTTP/1.1\r\n" + H + b"Content-Length: 19\r\n\r\nBREW / HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and answer.count(b"HTTP/1.") == 1
    assert broker.stats()["refused"] == {}


def test_a_refused_body_goes_to_on_reject_with_its_attributes(broker):
    binary = b'{"x": 1}'
    lacking_id = (b"POST / HTTP/1.1\r\n" + H + b"ce-specversion: 1.0\r\nce-type: t\r\nce-source: /s\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(binary) + binary)
    structured = b"[1, 2]"
    array = (b"POST / HTTP/1.1\r\n" + H + b"Content-Type: application/cloudevents+json\r\n"
             b"Content-Length: %d\r\n\r\n" % len(structured) + structured)
    for request in (lacking_id, array):
        assert exchange(broker, request + b"GET /healthz HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 400")
    (r1, body1, attrs1), (r2, body2, attrs2) = broker.kept
    assert "ce-id" in r1 and body1 == binary and attrs1 == {"specversion": "1.0", "type": "t", "source": "/s"}
    assert r2.startswith("not a CloudEvent") and body2 == structured and attrs2 == {}
    assert broker.stats()["refused"] == {400: 2}
