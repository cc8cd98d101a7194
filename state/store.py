"""The Redis window store: open windows, the shared watermark, dedup, and closing with leases.

Every key of a monitor shares one hash tag, ``{mm:<monitor>}``, so each Lua script touches a
single Redis Cluster slot. Layout (``K`` = the prefix):

- ``K:wm``            hash: ``maxT`` (largest accepted event time), ``W`` (watermark),
                      ``lastArr`` (processing time of the last accepted request), ``late``
                      (late instances since the previous seal)
- ``K:open``          zset of open windows ``<start>:<end>`` scored by end
- ``K:ready``         zset of sealed windows waiting to be closed (their content is final)
- ``K:w:<s>:<e>:<g>`` the window's rows of group ``g`` (``i`` inputs, ``p`` predictions) as
                      packed float64 (numerical features); ``...:c`` JSON lines (categorical)
- ``K:meta:<s>:<e>``  hash: ``late`` and ``wm`` fixed when the window was sealed
- ``K:lease:<s>:<e>`` who is closing the window (expires: a dead closer is replaced)
- ``K:dd:<bucket>``   dedup ids seen in one processing-time bucket (expire after the retention)

A window's partial state is its exact rows: appending is the merge (associative and
commutative), percentiles are exact, and nothing needs Lua arithmetic. Memory is
8 bytes per numerical value per open window; closed windows are deleted at once.
"""
from __future__ import annotations

import dataclasses
import importlib.resources
import json
from typing import Sequence

import numpy as np

INPUTS = "i"
PREDICTIONS = "p"
GROUPS = (INPUTS, PREDICTIONS)


def _script_text(name: str) -> str:
    return importlib.resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


@dataclasses.dataclass(frozen=True)
class PendingRequest:
    """One instances event, encoded for the apply script."""
    dedup_key: str
    event_time_ms: int
    instances: int
    group: str
    numeric: bytes          # float64 little-endian, row-major (instances x numerical features)
    categorical: bytes      # one JSON line: [[row categorical values], ...] or b"" when none


@dataclasses.dataclass(frozen=True)
class ApplyResult:
    statuses: list[str]     # "ok" | "dup" | "late:<start>,..." per request, in order
    watermark_ms: int | None
    max_event_time_ms: int | None
    ready: int              # sealed windows waiting to be closed


@dataclasses.dataclass(frozen=True)
class Claim:
    member: str
    start_ms: int
    end_ms: int
    late: int
    watermark_ms: int | None


def encode_rows(numeric: np.ndarray, categorical_rows: Sequence[Sequence] | None) -> tuple[bytes, bytes]:
    """Pack one request's rows: numeric matrix as float64 LE bytes, categorical as a JSON line."""
    num = np.ascontiguousarray(numeric, dtype="<f8").tobytes()
    cat = b""
    if categorical_rows:
        cat = json.dumps(categorical_rows, separators=(",", ":")).encode() + b"\n"
    return num, cat


def decode_rows(numeric: bytes | None, categorical: bytes | None, n_numeric: int) -> tuple[np.ndarray, list[list]]:
    """Inverse of :func:`encode_rows` over a whole window: (numeric matrix, categorical rows)."""
    num = np.frombuffer(numeric or b"", dtype="<f8")
    num = num.reshape(-1, n_numeric) if n_numeric else np.empty((0, 0))
    rows: list[list] = []
    if categorical:
        for line in categorical.split(b"\n"):
            if line:
                rows.extend(json.loads(line))
    return num, rows


class WindowStore:
    """Windows of one monitor in Redis (or Redis Cluster).

    ``dedup_retention_ms`` bounds how long a logger event id is remembered: Knative retries and
    Kafka redeliveries arrive within seconds to minutes, so 10 minutes by default.
    """

    def __init__(self, client, monitor: str, *, duration_ms: int, slide_ms: int, delay_ms: int,
                 dedup_retention_ms: int = 600_000, dedup_bucket_ms: int = 300_000,
                 lease_ms: int = 15_000):
        self.client = client
        self.monitor = monitor
        self.prefix = "{mm:%s}" % monitor
        self.duration_ms, self.slide_ms, self.delay_ms = duration_ms, slide_ms, delay_ms
        self.dedup_bucket_ms = dedup_bucket_ms
        self.dedup_buckets = -(-dedup_retention_ms // dedup_bucket_ms) + 1
        self.dedup_ttl_ms = dedup_bucket_ms * (self.dedup_buckets + 1)
        self.lease_ms = lease_ms
        self._apply = client.register_script(_script_text("apply.lua"))
        self._tick = client.register_script(_script_text("tick.lua"))
        self._claim = client.register_script(_script_text("claim.lua"))
        self._complete = client.register_script(_script_text("complete.lua"))
        self._release = client.register_script(_script_text("release.lua"))

    # -- hot path -------------------------------------------------------------------------
    def apply(self, requests: Sequence[PendingRequest], now_ms: int) -> ApplyResult:
        """One atomic script call for the whole batch (dedup, append, watermark, seal)."""
        meta = []
        for r in requests:
            if r.group not in GROUPS:
                raise ValueError(f"unknown row group {r.group!r}")
            meta.append((r.dedup_key, int(r.event_time_ms), int(r.instances), r.group,
                         len(r.numeric), len(r.categorical)))
        # A handful of arguments whatever the batch size: packing them costs next to nothing.
        args = [self.duration_ms, self.slide_ms, self.delay_ms, int(now_ms), self.dedup_bucket_ms,
                self.dedup_buckets, self.dedup_ttl_ms, len(requests), json.dumps(meta, separators=(",", ":")),
                b"".join(r.numeric for r in requests), b"".join(r.categorical for r in requests)]
        res = self._apply(keys=[self.prefix], args=args)
        return ApplyResult(
            statuses=res[3].decode().split(";") if requests else [],
            watermark_ms=_int_or_none(res[0]), max_event_time_ms=_int_or_none(res[1]), ready=int(res[2]))

    # -- processing-time advance ----------------------------------------------------------
    def tick(self, now_ms: int, idle_timeout_ms: int) -> tuple[int | None, int]:
        """Advance the watermark of an idle stream; returns (watermark, ready windows)."""
        w, ready = self._tick(keys=[self.prefix], args=[int(now_ms), idle_timeout_ms, self.delay_ms, 0])
        return _int_or_none(w), int(ready)

    def flush(self) -> int:
        """Seal every open window (end of a replay); returns how many are ready."""
        _, ready = self._tick(keys=[self.prefix], args=[0, 0, self.delay_ms, 1])
        return int(ready)

    # -- closing --------------------------------------------------------------------------
    def claim(self, token: str, limit: int = 64) -> list[Claim]:
        flat = self._claim(keys=[self.prefix], args=[self.lease_ms, token, limit])
        out = []
        for i in range(0, len(flat), 3):
            member = flat[i].decode()
            start, end = (int(x) for x in member.split(":"))
            out.append(Claim(member, start, end, int(flat[i + 1]), _int_or_none(flat[i + 2])))
        return out

    def read(self, claim: Claim) -> dict[str, tuple[bytes | None, bytes | None]]:
        """The window's stored rows per group: {group: (numeric bytes, categorical bytes)}."""
        keys = []
        for g in GROUPS:
            dk = f"{self.prefix}:w:{claim.member}:{g}"
            keys += [dk, dk + ":c"]
        values = self.client.mget(keys) if not _is_cluster(self.client) else [self.client.get(k) for k in keys]
        return {g: (values[2 * i], values[2 * i + 1]) for i, g in enumerate(GROUPS)}

    def complete(self, claim: Claim, token: str) -> bool:
        return bool(self._complete(keys=[self.prefix], args=[claim.member, token, ",".join(GROUPS)]))

    def release(self, claim: Claim, token: str) -> None:
        self._release(keys=[self.prefix], args=[claim.member, token])

    # -- introspection --------------------------------------------------------------------
    def state(self) -> dict:
        wm = self.client.hgetall(f"{self.prefix}:wm")
        dec = {k.decode(): v.decode() for k, v in wm.items()}
        return {
            "watermarkMs": _int_or_none(dec.get("W")),
            "maxEventTimeMs": _int_or_none(dec.get("maxT")),
            "lastArrivalMs": _int_or_none(dec.get("lastArr")),
            "late": int(dec.get("late", 0)),
            "open": self.client.zcard(f"{self.prefix}:open"),
            "ready": self.client.zcard(f"{self.prefix}:ready"),
        }


def _int_or_none(v) -> int | None:
    if v is None:
        return None
    if isinstance(v, bytes):
        v = v.decode()
    if v == "":
        return None
    return int(float(v))


def _is_cluster(client) -> bool:
    return type(client).__name__ == "RedisCluster"
