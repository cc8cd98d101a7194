"""An aggregator replica for multi-process tests: the real Aggregator, GroupCommitter and
closing protocol, with concurrent request threads, writing what it emits to a file."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import redis

from modelmonitor.core import events as ev
from modelmonitor.handlers import Aggregator, Monitor, ingest
from modelmonitor.local.redis_server import connect
from modelmonitor.core.spec import parse_monitor
from state.group_commit import GroupCommitter


def build(monitor_doc: dict, redis_url: str, replica: str, lease_ms: int = 1500):
    mon = Monitor(parse_monitor(monitor_doc), baseline=None)
    client = connect(redis_url, socket_timeout=2, socket_connect_timeout=1)
    agg = Aggregator.for_client(mon, client, lease_ms=lease_ms)
    agg.token = replica
    return mon, agg


def worker(monitor_doc, redis_url, rounds, out_path, acked_path, replica, barrier=None,
           kill_after_commits=None, kill_in_close=None, threads=4):
    """rounds: list of lists of structured logger-event dicts. Emitted window.closed events are
    appended to out_path; ids of acknowledged logger events to acked_path."""
    mon, agg = build(monitor_doc, redis_url, replica)
    commits = [0]
    closes = [0]
    out = open(out_path, "a")
    acked = open(acked_path, "a")
    lock = threading.Lock()

    def commit(pending):
        while True:
            try:
                res = agg.apply(pending, int(time.time() * 1000))
                break
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                time.sleep(0.1)   # Redis is away: what a broker retry would do
        commits[0] += 1
        if kill_after_commits is not None and commits[0] >= kill_after_commits:
            os.kill(os.getpid(), signal.SIGKILL)       # mid-batch: applied, not acknowledged
        return [(s, res.ready) for s in res.statuses]

    def emit(event):
        with lock:
            out.write(ev.to_json_line(event) + "\n")
            out.flush()
            closes[0] += 1
            if kill_in_close is not None and closes[0] >= kill_in_close:
                os.kill(os.getpid(), signal.SIGKILL)   # mid-close: emitted, not completed

    gc = GroupCommitter(commit)

    def handle(doc):
        from modelmonitor.core.events import Event
        attrs = {k: v for k, v in doc.items() if k != "data"}
        inst = ingest(mon, Event(attrs, doc["data"]), int(time.time() * 1000), check_skew=False)
        status, ready = gc.submit(agg.encode(inst))
        with lock:
            acked.write(doc["id"] + "\n")
            acked.flush()
        if ready:
            close()

    def close():
        while True:
            try:
                agg.close_ready(int(time.time() * 1000), emit)
                return
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                time.sleep(0.1)

    with ThreadPoolExecutor(threads) as pool:
        for docs in rounds:
            list(pool.map(handle, docs))
            if barrier is not None:
                barrier.wait(timeout=60)
    close()
    gc.close()
    out.close()
    acked.close()


def flush_and_close(monitor_doc, redis_url, out_path, replica="finisher"):
    mon, agg = build(monitor_doc, redis_url, replica)
    agg.store.flush()
    with open(out_path, "a") as out:
        deadline = time.time() + 10
        while True:
            agg.close_ready(int(time.time() * 1000), lambda e: out.write(ev.to_json_line(e) + "\n"))
            if agg.store.state()["ready"] == 0 or time.time() > deadline:
                break
            time.sleep(0.2)   # a dead replica's lease must expire first
