"""Malformed records on the Kafka logger topic of `modelmonitor run --kafka-bootstrap` (librdkafka's
mock cluster over TCP, the real local stack: broker, four func-python functions, redis-server):
each one becomes exactly one `event.rejected` dead letter with its reason, the consumer never
stops, and the valid records around them give exactly the windows the brute-force reference
gives over the valid records alone. A request the run's HTTP ingress refuses is dead-lettered
the same way.

Records that hold no usable CloudEvent (not JSON, a JSON array, attributes of the wrong type or
empty, invalid UTF-8, JSON nested too deeply, a tombstone) are dead-lettered by the Kafka ingress
itself (role `ingress`, the reason naming topic, partition and offset); CloudEvents whose payload
or time the monitor refuses (a time a day ahead, a body that is not UTF-8 JSON, a huge payload
with one bad value) are passed on and refused by ingest (role `ingest`, HTTP 400).
"""
from __future__ import annotations

import json
import random
import uuid

import requests
from kafka import KafkaProducer

from live_stack import (Recorder, Sent, Ticker, accepted_in_order, assert_windows_match, expected_windows,
                        iris_rows, now_ms, wait_for_windows, wait_until, write_monitor)
from modelmonitor.core import events as ev
from modelmonitor.local.kafka_bridge import KAFKA_API_VERSION
from modelmonitor.local.runner import LocalRun

STRUCTURED = [("content-type", b"application/cloudevents+json")]
#: One key for every record: one partition, read in the order produced.
KEY = b"iris"


def binary_headers(event_id: str, t_ms: int) -> list[tuple[str, bytes]]:
    return [("ce_specversion", b"1.0"), ("ce_id", event_id.encode()), ("ce_type", ev.KSERVE_REQUEST.encode()),
            ("ce_source", b"http://localhost:9081/"), ("ce_time", ev.ms_to_rfc3339(t_ms).encode()),
            ("ce_inferenceservicename", b"iris"), ("content-type", b"application/json")]


def structured(**attrs) -> bytes:
    doc = {"specversion": "1.0", "type": ev.KSERVE_REQUEST, "source": "http://localhost:9081/",
           "id": str(uuid.uuid4()), "inferenceservicename": "iris", "data": {"instances": [[5.1, 3.5, 1.4, 0.2]]}}
    doc.update(attrs)
    return json.dumps(doc).encode()


def malformed(now: int) -> list[tuple[str, str, str, list, bytes | None]]:
    """(name, role that refuses it, a text its reason holds, headers, value)."""
    deep = b'{"specversion": "1.0", "type": "t", "source": "s", "id": "d", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    huge = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]] * 25_000 + [[5.1, "x", 1.4, 0.2]]}).encode()
    return [
        ("not JSON", "ingress", "no CloudEvent", [], b"this is not JSON"),
        ("JSON array", "ingress", "not a JSON object", STRUCTURED, b"[1, 2, 3]"),
        ("numeric id", "ingress", "id", STRUCTURED, structured(id=17)),
        ("empty type", "ingress", "type", STRUCTURED, structured(type="")),
        ("object source", "ingress", "source", STRUCTURED, structured(source={"a": 1})),
        ("binary without ce_id", "ingress", "ce_id",
         [h for h in binary_headers("x", now) if h[0] != "ce_id"], b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'),
        ("invalid UTF-8 envelope", "ingress", "utf-8", STRUCTURED, b'{"specversion": "1.0", "id": "\xff\xfe"}'),
        ("nested too deeply", "ingress", "recursion", STRUCTURED, deep),
        ("tombstone", "ingress", "tombstone", binary_headers("tomb", now), None),
        ("a day ahead", "ingest", "ahead", binary_headers("future-" + uuid.uuid4().hex, now + 86_400_000),
         b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'),
        ("invalid UTF-8 data", "ingest", "not JSON", binary_headers("utf8-" + uuid.uuid4().hex, now - 500),
         b'{"instances": [[5.1, 3.5, 1.4, \xff]]}'),
        ("huge with one bad value", "ingest", "instance 25000", binary_headers("huge-" + uuid.uuid4().hex, now - 500),
         huge),
    ]


def test_malformed_logger_records_are_dead_lettered_and_the_stream_goes_on(tmp_path, kafka_bootstrap):
    topic = f"logger-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, api_version=KAFKA_API_VERSION,
                             max_request_size=4 * 1024 * 1024)
    # The topic exists before the run (the mock cluster creates it on the first record); the
    # run's consumer group starts at the end, so this record is not read.
    producer.send(topic, value=b"before the run").get(10)
    path = write_monitor(tmp_path / "monitor", duration="2s", watermark="1s", idle="2s")
    recorder = Recorder()
    run = LocalRun(str(path), port=0, on_event=recorder, tick_seconds=3600, log_dir=str(tmp_path / "logs"),
                   kafka_bootstrap=kafka_bootstrap, kafka_topic=topic).start()
    ticker = Ticker(run, 0.3)
    try:
        assert run.kafka_ingress.wait_assigned(60), "the Kafka ingress never joined its group"
        rng = random.Random(7)
        now = now_ms()
        bad = malformed(now)
        valid: list[Sent] = []
        offsets: dict[str, int] = {}
        base = now - 12_000
        for i in range(3 * len(bad)):        # two valid records, then a malformed one
            if i % 3 == 2:
                name, _, _, headers, value = bad[i // 3]
                meta = producer.send(topic, key=KEY, value=value, headers=headers).get(10)
                offsets[name] = f"{meta.partition}@{meta.offset}"
                continue
            sent = Sent(f"valid-{i}-{uuid.uuid4().hex[:6]}", base + i * 250, iris_rows(rng, rng.randint(1, 3)),
                        status=202)
            producer.send(topic, key=KEY, value=json.dumps({"instances": sent.rows}).encode(),
                          headers=binary_headers(sent.id, sent.time_ms)).get(10)
            valid.append(sent)

        n_ingress = sum(1 for b in bad if b[1] == "ingress")
        done = lambda c: c["consumed"] == c["skipped"] + c["published"] + c["failed"] == 3 * len(bad)  # noqa: E731
        wait_until(lambda: done(run.kafka_ingress.stats()), 60, what="every record consumed and handled")
        assert run.kafka_ingress.stats() == {"consumed": 3 * len(bad), "skipped": n_ingress, "failed": 0,
                                             "published": 3 * len(bad) - n_ingress}
        wait_until(lambda: len(recorder.of(ev.DEAD_LETTER)) >= len(bad), 60, what="a dead letter per bad record")
        assert run.broker.wait_idle(60)
        dead = recorder.of(ev.DEAD_LETTER)
        assert len(dead) == len(bad), [d.data["reason"] for d in dead]
        for name, role, why, headers, value in bad:
            if role == "ingress":
                mine = [d for d in dead if d.data["role"] == "ingress" and
                        f"Kafka record {topic}/{offsets[name]}:" in d.data["reason"]]
            else:
                rid = dict(headers)["ce_id"].decode()
                mine = [d for d in dead if d.data["role"] == "ingest" and d.data["originalId"] == rid]
            assert len(mine) == 1, (name, [d.data["reason"] for d in dead])
            assert why in mine[0].data["reason"], (name, mine[0].data["reason"])
            assert mine[0].data["originalData"] or value is None
        # The HTTP ingress of the same run keeps a refused request the same way, with the
        # attributes its ce-* headers name.
        resp = requests.post(run.ingress_url, data=b'{"x": 1}', timeout=10, headers={
            "ce-specversion": "1.0", "ce-type": "t", "ce-source": "/s", "content-type": "application/json"})
        assert resp.status_code == 400 and "ce-id" in resp.text
        wait_until(lambda: [d for d in recorder.of(ev.DEAD_LETTER) if d.data["originalType"] == "t"], 10,
                   what="the HTTP ingress' dead letter")
        (http_dead,) = [d.data for d in recorder.of(ev.DEAD_LETTER) if d.data["originalType"] == "t"]
        assert (http_dead["role"], http_dead["originalSource"], http_dead["originalId"], http_dead["originalData"]) \
            == ("ingress", "/s", None, '{"x": 1}') and "ce-id" in http_dead["reason"]
        # The valid records: exactly the reference's windows over them, none disturbed.
        logger = type("Sent log", (), {"sent": valid})()
        order = accepted_in_order(recorder, logger)
        assert sorted(s.id for s in order) == sorted(s.id for s in valid)     # none lost, none twice
        expected = expected_windows(run.spec, order)
        assert len(expected.windows) >= 4
        assert_windows_match(wait_for_windows(recorder, expected, 60), expected)
    finally:
        producer.close()
        ticker.stop()
        run.stop()
