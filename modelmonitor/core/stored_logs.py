"""KServe's stored inference logs (blob-store batches) as logger events, for ``modelmonitor replay``.

KServe's logger can store its LogRequest records in blob storage instead of sending them, one
object per batch, in one of three formats:

- **JSON** (``.json``): a JSON array of LogRequest objects (a batch of one is the bare object),
  with ``bytes`` (base64 of the request or response body), ``occurrenceTime`` (RFC 3339),
  ``reqType`` (the CloudEvent type), ``id``, ``sourceUri``, ``contentType``, ``inferenceService``,
  ``namespace``, ``component``, ``endpoint`` and ``metadata`` (header name -> list of values).
  Keys are matched case-insensitively, as Go's decoder does.
- **CSV** (``.csv``) and **Parquet** (``.parquet``): the ``logRecord`` table, one row per record,
  columns ``url, bytes, contentType, reqType, id, sourceUri, inferenceService, namespace,
  component, endpoint, metadata, annotations, certName, tlsSkipVerify`` (``metadata`` as JSON
  text, ``bytes`` as base64 text, or raw binary in older Parquet batches).

Each record becomes the structured-mode CloudEvent the logger would have sent (same ``id``,
``type``, ``source``, extensions, body as ``data_base64``), so a replay of stored batches equals
a replay of the same events as CloudEvent lines.

**Event time.** JSON records carry ``occurrenceTime`` (truncated to the millisecond). The CSV and
Parquet tables carry none, so their event time comes from ``event_time``:

- ``"mtime"`` (the default): the batch file's modification time, shared by every record of the
  batch (KServe writes a batch when it flushes it, so this is the flush time; keep it when
  copying, e.g. ``gsutil cp -P``, ``aws s3 sync`` sets it from the object's time);
- ``"metadata:<header>"``: a request header the InferenceService's logger forwards in
  ``metadata`` (``spec.predictor.logger.metadataHeaders``), holding RFC 3339 or epoch ms.

A folder is read file by file in the order of the files' modification times (then names:
KServe names objects ``<id>-<type>.<format>``, which says nothing about time), records in file
order.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
from datetime import datetime, timezone
from typing import Any, Iterator

__all__ = ["STORED_LOG_SUFFIXES", "StoredLogError", "is_stored_logs", "stored_log_files", "stored_log_events", "stored_log_chunks"]

STORED_LOG_SUFFIXES = (".json", ".csv", ".parquet")
_SOURCE_FALLBACK = "/kserve/stored-logs"


class StoredLogError(ValueError):
    """A stored log batch that cannot be read; the message names the file and record."""


def is_stored_logs(path: str) -> bool:
    """True for a folder, or a .json / .csv / .parquet file (JSON lines stay ``.jsonl``)."""
    return os.path.isdir(path) or path.lower().endswith(STORED_LOG_SUFFIXES)


def stored_log_files(path: str) -> list[str]:
    if not os.path.isdir(path):
        return [path]
    files = [os.path.join(path, name) for name in os.listdir(path) if name.lower().endswith(STORED_LOG_SUFFIXES)]
    if not files:
        raise StoredLogError(f"{path}: no .json, .csv or .parquet log batches in this folder")
    return sorted(files, key=lambda f: (os.stat(f).st_mtime_ns, f))


def _iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _parse_time(value: Any, what: str) -> int:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, str) and value:
        text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
        head, dot, rest = text.partition(".")
        if dot:  # Go writes nanoseconds; Python parses at most microseconds
            digits = "".join(c for c in rest if c.isdigit())
            zone = rest[len(digits):]
            text = f"{head}.{digits[:6]}{zone}"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise StoredLogError(f"{what}: {value!r} is not an RFC 3339 time") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return int(parsed.timestamp() * 1000) if not dot else \
            int(parsed.replace(microsecond=0).timestamp()) * 1000 + parsed.microsecond // 1000
    raise StoredLogError(f"{what}: missing event time")


def _source(value: Any) -> str:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict):  # Go's url.URL marshalled as a struct
        scheme, host = value.get("Scheme") or "", value.get("Host") or ""
        path, query = value.get("Path") or "", value.get("RawQuery") or ""
        text = (f"{scheme}://{host}" if scheme else host) + path + (f"?{query}" if query else "")
        return text or _SOURCE_FALLBACK
    return _SOURCE_FALLBACK


def _metadata_text(value: Any, what: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise StoredLogError(f"{what}: metadata is not JSON") from None
    if not isinstance(value, dict):
        raise StoredLogError(f"{what}: metadata must map header names to lists of values")
    return json.dumps(value, separators=(",", ":"))


def _body(value: Any, what: str) -> str:
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if not isinstance(value, str) or not value:
        raise StoredLogError(f"{what}: 'bytes' (the base64 body) is missing")
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise StoredLogError(f"{what}: 'bytes' is not valid base64") from None
    return value


def _event(record: dict, time_ms: int, what: str) -> dict:
    rec = {str(k).lower(): v for k, v in record.items()}
    for key in ("id", "reqtype"):
        if not isinstance(rec.get(key), str) or not rec[key]:
            raise StoredLogError(f"{what}: '{'reqType' if key == 'reqtype' else key}' is missing")
    event = {"specversion": "1.0", "id": rec["id"], "type": rec["reqtype"], "source": _source(rec.get("sourceuri")),
             "time": _iso_ms(time_ms), "datacontenttype": rec.get("contenttype") or "application/json",
             "data_base64": _body(rec.get("bytes"), what)}
    for attr, key in (("inferenceservicename", "inferenceservice"), ("namespace", "namespace"),
                      ("component", "component"), ("endpoint", "endpoint")):
        if rec.get(key) not in (None, ""):
            event[attr] = str(rec[key])
    metadata = _metadata_text(rec.get("metadata"), what)
    if metadata is not None:
        event["metadata"] = metadata
    return event


def _header_time(record: dict, header: str, what: str) -> int:
    rec = {str(k).lower(): v for k, v in record.items()}
    raw = rec.get("metadata")
    meta = json.loads(raw) if isinstance(raw, str) and raw else (raw or {})
    values = {str(k).lower(): v for k, v in meta.items()}.get(header.lower()) if isinstance(meta, dict) else None
    value = values[0] if isinstance(values, list) and values else values
    if value is None:
        raise StoredLogError(f"{what}: metadata has no {header!r} header for the event time")
    return _parse_time(value, f"{what} metadata {header}")


def _table_records(path: str) -> list[dict]:
    if path.lower().endswith(".csv"):
        import csv
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return list(csv.DictReader(fh))
    import pyarrow as pa
    import pyarrow.parquet as pq
    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise StoredLogError(f"{path}: not a readable Parquet log batch ({exc})") from None


def stored_log_events(path: str, event_time: str = "mtime") -> Iterator[dict]:
    """Structured-mode CloudEvent dicts for every record of a batch file or a folder of them."""
    if event_time != "mtime" and not (event_time.startswith("metadata:") and len(event_time) > 9):
        raise StoredLogError(f"event time {event_time!r}: expected 'mtime' or 'metadata:<header>'")
    for file in stored_log_files(path):
        if file.lower().endswith(".json"):
            try:
                with open(file, encoding="utf-8") as fh:
                    doc = json.load(fh)
            except ValueError as exc:
                raise StoredLogError(f"{file}: not JSON ({exc})") from None
            records = [doc] if isinstance(doc, dict) else doc
            if not isinstance(records, list):
                raise StoredLogError(f"{file}: expected a JSON array of LogRequest records")
            for i, record in enumerate(records):
                what = f"{file} record {i + 1}"
                if not isinstance(record, dict):
                    raise StoredLogError(f"{what}: expected a LogRequest object")
                occurred = {str(k).lower(): v for k, v in record.items()}.get("occurrencetime")
                yield _event(record, _parse_time(occurred, f"{what} occurrenceTime"), what)
            continue
        mtime_ms = os.stat(file).st_mtime_ns // 1_000_000
        for i, record in enumerate(_table_records(file)):
            what = f"{file} row {i + 1}"
            t = mtime_ms if event_time == "mtime" else _header_time(record, event_time[9:], what)
            yield _event(record, t, what)


def stored_log_chunks(path: str, event_time: str = "mtime", chunk: int = 8192) -> Iterator[tuple[list, int]]:
    """The events in chunks of ``chunk`` for ``run_replay(chunks=...)`` (progress counted in events)."""
    pending: list[dict] = []
    done = 0
    for event in stored_log_events(path, event_time):
        pending.append(event)
        done += 1
        if len(pending) >= chunk:
            yield pending, done
            pending = []
    if pending:
        yield pending, done
