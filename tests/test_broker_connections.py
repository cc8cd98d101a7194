"""The broker's kept-alive delivery connections: a connection the subscriber closed while idle
(a function restarted) is replaced before reuse, so the delivery succeeds at its first attempt."""
from __future__ import annotations

import socket
import threading
import time

from modelmonitor.core.events import Event
from modelmonitor.local.broker import LocalBroker, load_triggers


def _closing_server(received: list[bytes]) -> tuple[socket.socket, threading.Thread]:
    """An HTTP/1.1 subscriber that answers each request 202 (keep-alive, nothing says close)
    and then closes the connection anyway, as a restarted process does."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, rest = data.partition(b"\r\n\r\n")
                length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")][0])
                while len(rest) < length:
                    rest += conn.recv(65536)
                received.append(rest)
                conn.sendall(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
                time.sleep(0.05)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return srv, thread


def test_a_kept_connection_closed_by_the_subscriber_is_replaced_before_reuse():
    received: list[bytes] = []
    srv, _thread = _closing_server(received)
    port = srv.getsockname()[1]
    triggers = load_triggers([{
        "apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
        "metadata": {"name": "closing",
                     "annotations": {"kafka.eventing.knative.dev/delivery.order": "ordered"}},
        "spec": {"broker": "default", "subscriber": {"uri": f"http://127.0.0.1:{port}/"},
                 "delivery": {"retry": 3, "backoffDelay": "PT0.01S"}}}])
    broker = LocalBroker(triggers).start()
    try:
        for i in range(3):
            broker.publish(Event({"type": "t", "source": "s", "id": f"c{i}",
                                  "datacontenttype": "application/json"}, {"i": i}))
            assert broker.wait_idle(10)
            time.sleep(0.3)    # the subscriber has closed the idle connection by now
        stats = broker.stats()
        assert [b'{"i": %d}' % i for i in range(3)] == received
        assert (stats["delivered"], stats["retried"], stats["dead_letter_logged"]) == (3, 0, 0)
    finally:
        broker.stop()
        srv.close()
