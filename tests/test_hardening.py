"""Fault injection on the real local stack (`modelmonitor run`: local broker, four func-python
function processes, a real redis-server), with the iris monitor on 2 s windows, a 1 s watermark
delay, a 2 s idle timeout and a PingSource tick every 0.3 s.

After each fault the closed windows are compared with the brute-force reference
(tests/reference.py) over the logger events the stack ACCEPTED, applied in the order their
instances reached the (ordered) aggregate Trigger, plus numpy for the statistics: same windows,
same count and late count, same per-feature sum / min / max / mean / percentiles / stddev, and
every accepted instance-window pair is either in its window or counted late (nothing lost).

The short variants always run (about two minutes in all); MODELMONITOR_LONG_TESTS=1 makes the
streams, outages and kill counts larger (the same tests, other sizes).
"""
from __future__ import annotations

import contextlib
import json
import random
import threading
import time
import uuid

import pytest
import requests

from live_stack import (Logger, Recorder, Sent, Ticker, accepted_in_order, assert_windows_match, env_flag,
                        expected_windows, iris_rows, logger_body, logger_headers, now_ms, wait_for_windows,
                        wait_until, write_monitor)
from modelmonitor.core import events as ev
from modelmonitor.local.redis_server import RedisServer, connect
from modelmonitor.local.runner import LocalRun

LONG = env_flag("MODELMONITOR_LONG_TESTS")
#: Stream length multiplier: 1 in the default run, 5 with MODELMONITOR_LONG_TESTS=1.
SCALE = 5 if LONG else 1
MIB = 1024 * 1024


@contextlib.contextmanager
def live(tmp_path, *, redis_url: str | None = None, tick: float = 0.3, **monitor):
    """A running LocalRun of the short-window iris monitor, its recorder, a logger and a ticker."""
    path = write_monitor(tmp_path / "monitor", **monitor)
    recorder = Recorder()
    run = LocalRun(str(path), redis_url=redis_url, port=0, on_event=recorder,
                   tick_seconds=3600, log_dir=str(tmp_path / "logs")).start()
    ticker = Ticker(run, tick)
    try:
        yield run, recorder, Logger(run.ingress_url), ticker
    finally:
        ticker.stop()
        run.stop()


def finish(run, recorder, logger, *, timeout: float = 40.0):
    """Wait until every accepted event went through and every window closed; compare with the
    reference; check that the broker dropped nothing on the aggregate Triggers and that Redis
    holds no window any more."""
    assert run.broker.wait_idle(60), "the broker still has deliveries in flight"
    order = accepted_in_order(recorder, logger)
    expected = expected_windows(run.spec, order)
    assert expected.windows, "the stream produced no window"
    live_windows = wait_for_windows(recorder, expected, timeout)
    assert_windows_match(live_windows, expected)
    stats = run.broker.stats()["triggers"]
    for name in (f"{run.spec.name}-aggregate", f"{run.spec.name}-aggregate-tick"):
        assert stats[name]["dropped"] == 0 and stats[name]["dead_lettered"] == 0, (name, stats[name])
    # The closer's gauges agree: nothing open, nothing waiting to be closed.
    agg = run.pools["aggregate"].processes[0].metrics_url
    wait_until(lambda: metric_value(agg, "modelmonitor_windows_open") == 0 and
               metric_value(agg, "modelmonitor_windows_ready") == 0, 15, 0.3, what="the window gauges to reach 0")
    client = connect(run.redis_url)
    try:
        prefix = "{mm:%s}" % run.spec.name
        wait_until(lambda: not list(client.scan_iter(match=prefix + ":p*")) and
                   client.zcard(prefix + ":open") == 0 and client.zcard(prefix + ":ready") == 0,
                   15, what="Redis to hold no window")
    finally:
        client.close()
    return expected


def metric_value(url: str, name: str, **labels) -> float:
    """Sum of a metric's samples with these labels in a function's Prometheus exposition (GET /)."""
    total = 0.0
    for line in requests.get(url, timeout=5).text.splitlines():
        if line.startswith("#") or not (line.startswith(name + "{") or line.startswith(name + " ")):
            continue
        head, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


# ---------------------------------------------------------------------------------------------
# Redis down mid-stream
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("outage", [3.0] if not LONG else [3.0, 15.0])
def test_redis_down_mid_stream_loses_nothing(tmp_path, outage):
    """The private redis-server is SIGKILLed mid-stream and restarted on the same port after
    ``outage`` seconds. Meanwhile the aggregator answers 503, the broker retries with backoff,
    and ticks keep coming; afterwards the windows equal the reference over every accepted event.
    (Before the aggregator knew about its backlog, the first tick after the restart took the
    stream for idle and pushed the watermark past the outage's windows: all of it came out
    late.)"""
    server = RedisServer(durable=True).start()
    try:
        with live(tmp_path, redis_url=server.url) as (run, recorder, logger, ticker):
            agg_url = run.pools["aggregate"].processes[0].metrics_url
            phase = {"down": None, "up": None}

            def fault(elapsed: float) -> None:
                if phase["down"] is None and elapsed >= 2.0:
                    server.stop(kill=True)
                    phase["down"] = time.monotonic()
                elif phase["down"] is not None and phase["up"] is None and elapsed >= 2.0 + outage:
                    server.start()
                    phase["up"] = time.monotonic()

            logger.steady(40, 2.0 + outage + 2.5 * SCALE, during=fault)
            assert phase["up"] is not None
            assert all(s.status == 202 for s in logger.sent), "the broker ingress refused events"
            expected = finish(run, recorder, logger)
            # The outage was real: the aggregator answered 503 and the broker retried.
            assert metric_value(agg_url, "modelmonitor_events_in_total", role="aggregate",
                                outcome="unavailable") > 0
            assert run.broker.stats()["triggers"][f"{run.spec.name}-aggregate"]["retried"] > 0
            assert len(expected.accepted) == len({s.id for s in logger.sent})
    finally:
        server.cleanup()


def test_tick_does_not_idle_advance_over_a_backlog_the_store_could_not_take(tmp_path):
    """Unit level, real Redis: after an apply failed (store down), ticks leave the watermark
    alone until the backlog is applied, even once the store is back and idleTimeout has passed;
    then idleness counts from the backlog's apply again."""
    from modelmonitor.core.events import Event

    from modelmonitor.handlers import Aggregator, Monitor
    server = RedisServer(durable=True).start()
    client = connect(server.url, socket_timeout=2, socket_connect_timeout=1)
    try:
        mon = Monitor.from_files(str(write_monitor(tmp_path / "m", idle="2s")))
        agg = Aggregator.for_client(mon, client)
        t0 = now_ms()

        def instances(i: int, t: int) -> Event:
            return Event({"type": ev.INSTANCES, "source": "/t", "id": f"iris/request/{i}/x"},
                              {"monitor": "iris", "eventTimeMs": t, "features": list(mon.inputs.names),
                               "instances": [[5.0, 3.0, 1.5, 0.2]]})

        assert agg.apply([agg.encode(instances(1, t0))], t0).statuses == ["ok"]
        server.stop(kill=True)
        with pytest.raises(Exception):
            agg.apply([agg.encode(instances(2, t0 + 500))], t0 + 500)
        server.start()
        w_before = agg.store.state()["watermarkMs"]
        # Long after idleTimeout: without the backlog rule this tick would advance W to ~t0 + 60 s.
        agg.last_received_ms = t0
        assert agg.tick(t0 + 60_000) == 0
        assert agg.store.state()["watermarkMs"] == w_before
        # The redelivered backlog is applied (on time), and idleness counts from there.
        assert agg.apply([agg.encode(instances(2, t0 + 500))], t0 + 61_000).statuses == ["ok"]
        agg.last_received_ms = t0 + 61_000
        assert agg.tick(t0 + 62_000) == 0                       # idle for 1 s < idleTimeout
        agg.tick(t0 + 64_000)                                   # idle for 3 s
        assert agg.store.state()["watermarkMs"] == (t0 + 500) + 3_000 - 1_000
    finally:
        client.close()
        server.cleanup()


# ---------------------------------------------------------------------------------------------
# Functions killed with SIGKILL at random points
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kills", [4] if not LONG else [4, 16])
def test_functions_sigkilled_at_random_points_lose_nothing(tmp_path, kills):
    """ingest, outlier, aggregate and drift are SIGKILLed at random moments of the stream (one
    at a time, the aggregate at least twice) and restarted on the same port. In-flight
    deliveries fail, the broker retries them, a request applied but not acknowledged comes back
    as a duplicate; a window whose closer died is closed by the restarted replica once the
    lease expires. Ticks are held while the stream flows (the idle advance is processing-time
    dependent; with it the result would depend on how long a restart took), so the reference
    over the accepted events in arrival order is exact."""
    rng = random.Random(20261122 + kills)
    roles = ["aggregate", "aggregate"] + [rng.choice(["ingest", "outlier", "aggregate", "drift"])
                                          for _ in range(kills - 2)]
    rng.shuffle(roles)
    seconds = 1.0 + 1.6 * kills
    plan = sorted((rng.uniform(0.8, seconds - 0.8), role) for role in roles)
    with live(tmp_path) as (run, recorder, logger, ticker):
        ticker.pause()
        done: list[tuple[str, int, int]] = []
        errors: list[BaseException] = []
        start = time.monotonic()

        def chaos() -> None:
            try:
                for at, role in plan:
                    time.sleep(max(0.0, at - (time.monotonic() - start)))
                    proc = run.pools[role].processes[0]
                    old = proc.pid
                    proc.kill()
                    time.sleep(rng.uniform(0.0, 0.4))
                    proc.start(wait=True)
                    done.append((role, old, proc.pid))
            except BaseException as exc:  # reported by the test thread
                errors.append(exc)

        killer = threading.Thread(target=chaos, daemon=True)
        killer.start()
        logger.steady(40, seconds)
        killer.join(60)
        assert not errors, errors
        assert len(done) == kills and all(old != new for _, old, new in done)
        assert all(p.running for pool in run.pools.values() for p in pool)
        assert all(s.status == 202 for s in logger.sent)
        run.broker.wait_idle(60)
        ticker.resume()
        finish(run, recorder, logger, timeout=60)
        # The kills hit deliveries in flight: the broker had to retry.
        assert run.broker.stats()["retried"] > 0


# ---------------------------------------------------------------------------------------------
# Duplicate deliveries and bursts
# ---------------------------------------------------------------------------------------------

def test_duplicates_and_bursts_are_counted_once(tmp_path):
    """20% of the logger events are delivered twice (at once, 50 ms or 500 ms later) while the
    rate jumps tenfold for half a second every two seconds; every event counts once."""
    with live(tmp_path) as (run, recorder, logger, ticker):
        agg_url = run.pools["aggregate"].processes[0].metrics_url
        open_seen: list[float] = []

        def sample(elapsed: float) -> None:
            if elapsed >= 3.0 and not open_seen:
                open_seen.append(metric_value(agg_url, "modelmonitor_windows_open"))

        logger.steady(30, 6.5 * SCALE, duplicate_share=0.2, burst_every=2.0, burst_factor=10,
                      burst_seconds=0.5, threads=16, during=sample)
        assert open_seen and open_seen[0] >= 1, open_seen     # mid-stream some window was open
        ids = [s.id for s in logger.sent]
        duplicates = len(ids) - len(set(ids))
        assert duplicates >= 0.1 * len(set(ids)), (duplicates, len(set(ids)))
        assert all(s.status == 202 for s in logger.sent)
        # the bursts were real: some second saw well above the steady rate
        per_second: dict[int, int] = {}
        for s in logger.sent:
            per_second[s.time_ms // 1000] = per_second.get(s.time_ms // 1000, 0) + 1
        assert max(per_second.values()) >= 3 * 30, per_second
        expected = finish(run, recorder, logger)
        assert len(expected.accepted) == len(set(ids))
        dedup = metric_value(agg_url, "modelmonitor_dedup_hits_total")
        assert dedup == duplicates, (dedup, duplicates)


# ---------------------------------------------------------------------------------------------
# Clock skew, oversized bodies, malformed CloudEvents and payloads
# ---------------------------------------------------------------------------------------------

def _raw_post(url: str, body: bytes, headers: dict) -> int:
    try:
        return requests.post(url, data=body, headers=headers, timeout=30).status_code
    except requests.RequestException:
        return 0


def test_clock_skew_oversized_and_malformed_events(tmp_path):
    """Mid-stream: an event time an hour ahead is refused with a dead letter naming the skew;
    one a minute behind is accepted and counted late (with an instances.late event); an
    11 MiB body gets 413 from the broker ingress, plain and chunked, and the ingress goes on
    serving; malformed CloudEvents get 400/404/405 and reach no function (a 400 with a body is kept
    as an ingress dead letter); CloudEvents whose payload
    does not fit the schema reach ingest and come back as dead letters with the reason. The
    windows equal the reference over the accepted events."""
    with live(tmp_path, late_events=True) as (run, recorder, logger, ticker):
        url = run.ingress_url
        base = f"http://127.0.0.1:{run.port}"
        special: dict[str, object] = {}
        bad_payloads = [
            ("width", logger_body([[5.1, 3.5, 1.4]], "v1"), "expected 4"),
            ("nan", b'{"instances": [[5.1, NaN, 1.4, 0.2]]}', "not a finite number"),
            ("string", b'{"instances": [[5.1, "3.5", 1.4, 0.2]]}', "is not a number"),
            ("not-json", b"<html>not json</html>", "not JSON"),
            ("empty", b"", "empty body"),
            ("v2-bytes", json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "BYTES",
                                                 "data": ["a", "b", "c", "d"]}]}).encode(), "BYTES"),
        ]
        malformed = [
            ("binary without id", {"ce-specversion": "1.0", "ce-type": ev.KSERVE_REQUEST, "ce-source": "s",
                                   "content-type": "application/json"}, b"{}", 400),
            ("structured not json", {"content-type": "application/cloudevents+json"}, b"{oops", 400),
            ("structured without type", {"content-type": "application/cloudevents+json"},
             json.dumps({"specversion": "1.0", "source": "s", "id": "1"}).encode(), 400),
            ("binary data nested too deeply", {"ce-specversion": "1.0", "ce-type": ev.KSERVE_REQUEST,
                                               "ce-source": "s", "ce-id": "deep", "content-type": "application/json"},
             b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400),
            ("unknown specversion", {"ce-specversion": "9.9", "ce-type": "t", "ce-source": "s", "ce-id": "1"},
             b"{}", 400),
            ("no cloudevent at all", {"content-type": "text/plain"}, b"hello", 400),
        ]

        def during(elapsed: float) -> None:
            if "future" not in special and elapsed >= 1.5:
                special["future"] = logger.send(t_ms=now_ms() + 3_600_000, valid=False, note="future")
            if "past" not in special and elapsed >= 2.5:
                special["past"] = logger.send(t_ms=now_ms() - 60_000, note="past")
            if "bad" not in special and elapsed >= 3.0:
                special["bad"] = [(name, logger.send(body=body, valid=False, note=name), why)
                                  for name, body, why in bad_payloads]
                special["other-isvc"] = send_other_isvc(logger)
            if "big" not in special and elapsed >= 3.5:
                big = b'{"instances": [' + b"[5.1, 3.5, 1.4, 0.2], " * (11 * MIB // 22) + b"[5.1, 3.5, 1.4, 0.2]]}"
                special["big"] = [_raw_post(url, big, logger_headers(str(uuid.uuid4()), now_ms())),
                                  _raw_post(url, iter([big[i:i + MIB] for i in range(0, len(big), MIB)]),
                                            logger_headers(str(uuid.uuid4()), now_ms()))]
                special["malformed"] = [(name, _raw_post(url, body, headers), want)
                                        for name, headers, body, want in malformed]
                special["paths"] = [requests.post(base + "/other/path", data=b"{}", timeout=5).status_code,
                                    requests.get(url, timeout=5).status_code]

        logger.steady(30, 6.0 * SCALE, during=during)
        assert special["big"] == [413, 413]
        for name, status, want in special["malformed"]:
            assert status == want, (name, status)
        assert special["paths"] == [404, 405]
        # The ingress kept serving: everything sent after the rejections was queued.
        assert all(s.status == 202 for s in logger.sent), [s for s in logger.sent if s.status != 202][:3]
        expected = finish(run, recorder, logger)

        # Far future: refused by ingest, dead letter with the reason; not in any window.
        future = special["future"]
        dead = {e.data["originalId"]: e.data for e in recorder.of(ev.DEAD_LETTER) if e.data["role"] != "ingress"}
        # The ingress' own 400s: one dead letter each, with the reason, the body and its ce-id.
        at_ingress = [e.data for e in recorder.of(ev.DEAD_LETTER) if e.data["role"] == "ingress"]
        assert len(at_ingress) == len(malformed)
        assert all(d["reason"].startswith("not a CloudEvent: ") for d in at_ingress), at_ingress
        assert sorted(str(d["originalId"]) for d in at_ingress) == sorted(str(h.get("ce-id")) for _, h, _, _ in malformed)
        assert "ahead of this function's clock" in dead[future.id]["reason"], dead[future.id]
        assert dead[future.id]["role"] == "ingest"
        # Payloads that do not fit: one dead letter each, with a reason.
        for name, sent, why in special["bad"]:
            assert sent.id in dead, name
            assert dead[sent.id]["reason"] and why in dead[sent.id]["reason"], (name, dead[sent.id]["reason"])
        assert len(dead) == 1 + len(bad_payloads)
        # Another InferenceService's event is not this monitor's: ignored, no dead letter.
        assert special["other-isvc"].id not in dead
        # Far past: accepted, late for its (long closed) window, counted in `late`.
        past = special["past"]
        assert past in expected.accepted
        late_events = [e.data for e in recorder.of(ev.LATE_INSTANCES)]
        assert [d["requestId"] for d in late_events] == [past.id]
        window_end = (past.time_ms // 2000) * 2000 + 2000
        assert late_events[0]["lateWindows"] == [{"startMs": window_end - 2000, "endMs": window_end}]
        assert late_events[0]["watermarkMs"] >= window_end
        assert sum(w[0]["late"] for w in recorder.windows().values()) == len(past.rows)
        # The broker refused the oversized and malformed requests itself; ingest's 400s were
        # not retried (one attempt each) and, with no dead-letter sink configured, are kept in
        # the local dead-letter log (ingest also sent its own event.rejected); nothing dropped.
        stats = run.broker.stats()
        assert stats["rejected"] >= 2 + len(malformed)
        ingest_stats = stats["triggers"][f"{run.spec.name}-ingest-request"]
        assert ingest_stats["dead_letter_logged"] == 1 + len(bad_payloads) and stats["dropped"] == 0
        kept = {d.entry.headers["ce-id"]: d for d in run.broker.log.dead_letters()}
        assert set(kept) == {future.id} | {sent.id for _, sent, _ in special["bad"]}
        assert all(d.status == 400 and "non-retryable" in d.reason for d in kept.values())


def send_other_isvc(logger: Logger) -> Sent:
    """A logger event of another InferenceService: the monitor ignores it (202, no instances)."""
    sent = Sent(str(uuid.uuid4()), now_ms(), iris_rows(random.Random(3), 1), valid=False, note="other")
    sent.status = logger.post(logger_headers(sent.id, sent.time_ms, isvc="not-iris"), logger_body(sent.rows, "v1"))
    with logger.lock:
        logger.sent.append(sent)
    return sent
