"""Hostile input (c), see tests/test_hostile.py: the local broker ingress under malformed HTTP
over raw sockets (methods, request targets and versions, chunk sizes, Content-Length, header
sizes and encodings, slow and lying clients): a well-formed answer from the documented set
within the read timeout for the first request and every pipelined one after it, each refusal
counted by status, and it goes on serving. ``MODELMONITOR_HOSTILE_EXAMPLES`` sets the case count
as for test_hostile.py.
"""
from __future__ import annotations

import os
import re
import socket
import time

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("MODELMONITOR_HOSTILE_EXAMPLES", "300"))
SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck))


# ---------------------------------------------------------------------------------------------
# (c) the broker ingress under malformed HTTP
# ---------------------------------------------------------------------------------------------

READ_TIMEOUT = 2.0
ALLOWED = {202, 400, 404, 405, 408, 411, 413, 414, 431}
CE = b"ce-specversion: 1.0\r\nce-type: t\r\nce-source: /s\r\nce-id: 1\r\n"


@st.composite
def raw_requests(draw):
    method = draw(st.sampled_from(["POST"] * 6 + ["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "GET",
                                                   "BREW", "post"]))
    target = draw(st.sampled_from(["/", "/default/default", "/x", "*", "/" + "a" * 70_000]))
    version = draw(st.sampled_from(["HTTP/1.1"] * 8 + ["HTTP/1.0", "HTTP/2.0", "HTTP/x", ""]))
    body = draw(st.one_of(st.binary(max_size=40), st.just(b'{"a": NaN}'), st.just(b"[1, 2]"),
                          st.just(b'{"specversion": "1.0", "type": "t", "source": "/s", "id": "\\ud800"}')))
    head = draw(st.sampled_from([CE, CE, b"content-type: application/cloudevents+json\r\n", b""]))
    framing = draw(st.sampled_from(["length", "length", "chunked", "bad-chunk", "neg-chunk", "none", "lying",
                                    "bad-length", "both", "huge-header", "many-headers", "latin1-header"]))
    if framing == "length":
        head += b"Content-Length: %d\r\n" % len(body)
    elif framing == "lying":
        head += b"Content-Length: %d\r\n" % (len(body) + draw(st.integers(1, 100)))
    elif framing == "bad-length":
        head += b"Content-Length: " + draw(st.sampled_from([b"-3", b"abc", b"1e3", b"+4", b"4, 5", b""])) + b"\r\n"
    elif framing in ("chunked", "bad-chunk", "neg-chunk", "both"):
        head += b"Transfer-Encoding: chunked\r\n"
        if framing == "both":
            head += b"Content-Length: 3\r\n"
        size = {"chunked": b"%x" % len(body), "bad-chunk": draw(st.sampled_from([b"zz", b"0x5", b"", b"1" * 40])),
                "neg-chunk": b"-%x" % max(len(body), 1), "both": b"%x" % len(body)}[framing]
        body = size + b"\r\n" + body + b"\r\n0\r\n\r\n"
    elif framing == "huge-header":
        head += b"X-Big: " + b"a" * 70_000 + b"\r\n"
    elif framing == "many-headers":
        head += b"X-A: b\r\n" * 150
    elif framing == "latin1-header":
        head += b"ce-x: \xe9\xff\r\n"
    line = f"{method} {target} {version}".rstrip().encode() + b"\r\n"
    return line + b"Host: h\r\n" + head + b"\r\n" + body


def _status(sock: socket.socket, deadline_s: float) -> int | None:
    answers, _ = _answers(sock, deadline_s, rest=False)
    return answers[0] if answers else None


def _answers(sock: socket.socket, deadline_s: float, rest: bool = True) -> tuple[list[int], bytes]:
    """The status of the first answer, which must come within ``deadline_s``; with ``rest``, then
    the end of the request stream is sent and the statuses of every further answer are read
    too (bytes after a complete request are the next request on that connection: pipelining)."""
    sock.settimeout(deadline_s)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(256)
            if not chunk:
                break
            data += chunk
        if rest and data:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            while chunk := sock.recv(65536):
                data += chunk
    except TimeoutError:
        raise AssertionError(f"no answer within {deadline_s} s") from None
    except ConnectionResetError:
        pass
    return [int(m.group(1)) for m in re.finditer(rb"(?:^|\n)HTTP/1\.[01] (\d{3}) ", data)], data


def test_broker_ingress_answers_malformed_http():
    from modelmonitor.local.broker import LocalBroker
    kept: list = []
    broker = LocalBroker([], max_body_bytes=64 * 1024, on_reject=lambda *args: kept.append(args)).start()
    broker._server.read_timeout = READ_TIMEOUT
    host, port = broker._server.server_address[:2]
    seen: dict[int | None, int] = {}
    not_events = 0
    try:
        @settings(max_examples=EXAMPLES, **SETTINGS)
        @given(request=raw_requests())
        def one(request):
            nonlocal not_events
            with socket.create_connection((host, port), timeout=10) as sock:
                try:
                    sock.sendall(request)
                except (BrokenPipeError, ConnectionResetError):
                    pass          # the server answered and closed before reading everything
                answers, data = _answers(sock, READ_TIMEOUT + 10)
            not_events += data.count(b"\r\n\r\nnot a CloudEvent: ")
            for status in answers or [None]:
                seen[status] = seen.get(status, 0) + 1
                # HTTP/1.0-or-worse request lines may get an answer with no status the ingress
                # chose, but always one: never a silent close.
                assert status in ALLOWED or status in (501, 505), (status, request[:200])
            status = answers[0]
            assert status != 501 or request.split(b" ", 1)[0] not in (b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"HEAD")

        one()
        assert seen.get(202) and seen.get(400) and seen.get(405) and seen.get(411), seen
        assert broker.stats()["accepted"] == seen[202]
        # Every refusal, http.server's own (400, 414, 431, 501, 505) included, is counted by status.
        assert broker.stats()["refused"] == {s: n for s, n in seen.items() if s is not None and s >= 400}
        # Each request refused with its whole body read (not a CloudEvent) reached on_reject, the
        # dead letter of `modelmonitor run`; other refusals hold no event to keep.
        assert not_events and len(kept) == not_events, (len(kept), not_events)
        assert requests.get(broker.base_url + "health/readiness", timeout=5).status_code == 200
    finally:
        broker.stop()


def test_broker_ingress_answers_a_lying_client_after_the_read_timeout():
    from modelmonitor.local.broker import LocalBroker
    broker = LocalBroker([]).start()
    broker._server.read_timeout = READ_TIMEOUT
    host, port = broker._server.server_address[:2]
    try:
        with socket.create_connection((host, port), timeout=10) as sock:
            t0 = time.monotonic()
            sock.sendall(b"POST / HTTP/1.1\r\nHost: h\r\n" + CE + b"Content-Length: 100\r\n\r\nabc")
            assert _status(sock, READ_TIMEOUT + 10) == 408
            assert READ_TIMEOUT * 0.9 <= time.monotonic() - t0 < READ_TIMEOUT + 10
        assert broker.stats()["accepted"] == 0
    finally:
        broker.stop()
