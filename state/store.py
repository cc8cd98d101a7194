"""The Redis window store: panes of mergeable partial aggregates, the shared watermark, dedup,
and closing with leases.

Every key of a monitor shares one hash tag, ``{mm:<monitor>}``, so each Lua script touches a
single Redis Cluster slot. Layout (``K`` = the prefix):

- ``K:wm``            hash: ``maxT`` (largest accepted event time), ``W`` (watermark),
                      ``lastArr`` (processing time of the last accepted request), ``late``
                      (late instances since the previous seal)
- ``K:open``          zset of open windows ``<start>:<end>`` scored by end
- ``K:ready``         zset of sealed windows waiting to be closed (their content is final)
- ``K:p:<pane>:<from>:<group>``  list of partial aggregates (opaque bytes built by the caller's
                      codec) of the instances of pane ``<pane>`` that count for the windows
                      starting at or after ``<from>`` (earlier ones containing the pane were
                      already sealed when they arrived: they are late for those)
- ``K:pe:<pane>``     set of the ``<from>:<group>`` lists the pane has
- ``K:meta:<s>:<e>``  hash: ``late`` and ``wm`` fixed when the window was sealed
- ``K:lease:<s>:<e>`` who is closing the window (expires: a dead closer is replaced)
- ``K:res:<s>:<e>``   the window's closed event once computed, so a re-close emits it identically
- ``K:dd:<bucket>``   dedup ids seen in one processing-time bucket (expire after the retention)

Panes are ``gcd(duration, slide)`` long and aligned to the epoch, so a pane lies in exactly the
windows that contain any of its instants: an instance updates one pane, whatever the slide, and a
window is the merge of its panes' partials. ``group`` is any string without ``:`` (the aggregate
uses ``i`` for inputs and ``p`` for predictions; a segment can be appended, e.g. ``i@eu``).
A list holding more than ``max_partials`` partials is compacted (merged under a compare-and-swap)
by the replica that noticed, so the bytes of a pane stay flat whatever the number of instances.
A pane is deleted when the last window containing it is closed.

The store does not know what a partial is: a codec builds one from a group's pending requests
and merges several (for the aggregate: ``WindowAggregate.to_bytes`` and merge).
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import json
import math
from typing import Protocol, Sequence

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


class PartialCodec(Protocol):
    """What the store needs to know about partial aggregates (opaque bytes to it)."""

    def build(self, group: str, requests: Sequence[PendingRequest]) -> bytes:
        """One partial from the requests of one group (all in the same pane)."""

    def merge(self, group: str, partials: Sequence[bytes]) -> bytes:
        """One partial equal to the merge of ``partials``."""


class ConflictError(RuntimeError):
    """The watermark or dedup state kept changing under a batch (extreme contention)."""


class WindowStore:
    """Windows of one monitor in Redis (or Redis Cluster).

    ``dedup_retention_ms`` bounds how long a logger event id is remembered: Knative retries and
    Kafka redeliveries arrive within seconds to minutes, so 10 minutes by default.
    ``max_args_bytes`` caps the bytes of one script call (below Redis' smallest allowed
    ``proto-max-bulk-len``, 1 MB): a bigger batch is split before anything is sent.
    """

    def __init__(self, client, monitor: str, *, duration_ms: int, slide_ms: int, delay_ms: int,
                 codec: PartialCodec | None = None, dedup_retention_ms: int = 600_000, dedup_bucket_ms: int = 300_000,
                 lease_ms: int = 15_000, max_partials: int = 16, max_args_bytes: int = 768 * 1024,
                 max_attempts: int = 8):
        self.client = client
        self.monitor = monitor
        self.prefix = "{mm:%s}" % monitor
        self.duration_ms, self.slide_ms, self.delay_ms = duration_ms, slide_ms, delay_ms
        self.pane_ms = math.gcd(duration_ms, slide_ms)
        self.codec = codec
        self.dedup_bucket_ms = dedup_bucket_ms
        self.dedup_buckets = -(-dedup_retention_ms // dedup_bucket_ms) + 1
        self.dedup_ttl_ms = dedup_bucket_ms * (self.dedup_buckets + 1)
        self.lease_ms = lease_ms
        self.max_partials = max_partials
        self.max_args_bytes = max_args_bytes
        self.max_attempts = max_attempts
        # The last watermark / max event time seen: the first guess of each batch's statuses.
        self._w: int | None = None
        self._max_t: int | None = None
        self.conflicts = 0
        self.compactions = 0
        self._apply = client.register_script(_script_text("apply.lua"))
        self._tick = client.register_script(_script_text("tick.lua"))
        self._claim = client.register_script(_script_text("claim.lua"))
        self._read = client.register_script(_script_text("read.lua"))
        self._result = client.register_script(_script_text("result.lua"))
        self._complete = client.register_script(_script_text("complete.lua"))
        self._release = client.register_script(_script_text("release.lua"))
        self._compact = client.register_script(_script_text("compact.lua"))

    # -- hot path -------------------------------------------------------------------------
    def apply(self, requests: Sequence[PendingRequest], now_ms: int) -> ApplyResult:
        """Dedup, lateness, watermark and the batch's partials: one atomic script call per
        attempt (a second one only when the first guess of the statuses was wrong, e.g. for a
        redelivery). Statuses per request: ``ok``, ``dup`` or ``late:<start>,...`` (the windows
        it was late for; it still counts for the later ones containing it)."""
        for r in requests:
            if not r.group or ":" in r.group:
                raise ValueError(f"row group {r.group!r} must be a non-empty string without ':'")
        if not requests:
            return ApplyResult([], self._w, self._max_t, 0)
        meta = json.dumps([[r.dedup_key, int(r.event_time_ms), int(r.instances)] for r in requests],
                          separators=(",", ":"))
        statuses = self._guess(requests)
        for _ in range(self.max_attempts):
            partials = self._partials(requests, statuses)
            size = len(meta) + sum(len(k) + len(v) for k, v in partials)
            if size > self.max_args_bytes and len(requests) > 1:
                # Too big for one call: halves, in order (the same effect as one batch).
                half = len(requests) // 2
                first, second = self.apply(requests[:half], now_ms), self.apply(requests[half:], now_ms)
                return ApplyResult(first.statuses + second.statuses, second.watermark_ms,
                                   second.max_event_time_ms, second.ready)
            args = [self.duration_ms, self.slide_ms, self.pane_ms, self.delay_ms, int(now_ms),
                    self.dedup_bucket_ms, self.dedup_buckets, self.dedup_ttl_ms, len(requests), meta,
                    ";".join(statuses), self.max_partials]
            for key, blob in partials:
                args += [key, blob]
            w, max_t, ready, got, outcome, compact = self._apply(keys=[self.prefix], args=args)
            self._w, self._max_t = _int_or_none(w), _int_or_none(max_t)
            got = got.decode().split(";")
            if outcome == b"ok":
                if compact:
                    self._compact_lists(compact.decode().split(" "))
                return ApplyResult([self._public_status(r, st) for r, st in zip(requests, got)],
                                   self._w, self._max_t, int(ready))
            self.conflicts += 1
            statuses = got
        raise ConflictError(f"the window state of monitor {self.monitor!r} kept changing during "
                            f"{self.max_attempts} attempts to apply a batch")

    def _guess(self, requests: Sequence[PendingRequest]) -> list[str]:
        """The statuses the script will most likely find: no redelivery from before this batch,
        and the watermark as last seen, moving as the batch goes (the script's own rule, which
        makes the watermark before request i ``max(W, max event time of fresh j < i - delay)``).
        Only a guess: the script is the authority and answers with the real statuses."""
        d, s = self.duration_ms, self.slide_ms
        low = -(1 << 62)
        t = np.fromiter((int(r.event_time_ms) for r in requests), dtype=np.int64, count=len(requests))
        seen: set[str] = set()
        dup = np.zeros(len(requests), dtype=bool)
        if len({r.dedup_key for r in requests}) != len(requests):
            for i, r in enumerate(requests):
                dup[i] = r.dedup_key in seen
                seen.add(r.dedup_key)
        fresh_t = np.where(dup, low, t)
        before = np.concatenate(([low], np.maximum.accumulate(fresh_t)[:-1]))
        w0 = low if self._w is None else self._w
        w = np.maximum(w0, np.where(before > low, before - self.delay_ms, low))
        k0 = (t - d) // s + 1
        k1 = t // s
        kf = np.where(w > low, np.maximum(k0, (w - d) // s + 1), k0)
        out = [str(x) for x in (kf * s).tolist()]
        for i in np.flatnonzero(kf > k1).tolist():
            out[i] = "L"
        for i in np.flatnonzero(dup).tolist():
            out[i] = "dup"
        return out

    def _partials(self, requests: Sequence[PendingRequest], statuses: Sequence[str]) -> list[tuple[str, bytes]]:
        """One partial per (pane, first window, group) of the requests that count somewhere."""
        by_key: dict[str, list[PendingRequest]] = {}
        for r, st in zip(requests, statuses):
            if st == "dup" or st == "L":
                continue
            pane = int(r.event_time_ms) // self.pane_ms * self.pane_ms
            by_key.setdefault(f"{pane}:{st}:{r.group}", []).append(r)
        return [(key, self.codec.build(key.rsplit(":", 1)[1], reqs)) for key, reqs in by_key.items()]

    def _public_status(self, r: PendingRequest, status: str) -> str:
        if status == "dup":
            return "dup"
        t = int(r.event_time_ms)
        k0 = (t - self.duration_ms) // self.slide_ms + 1
        if status != "L" and int(status) == k0 * self.slide_ms:
            return "ok"                        # on time for every window containing it
        first = t // self.slide_ms + 1 if status == "L" else int(status) // self.slide_ms
        return "late:" + ",".join(str(k * self.slide_ms) for k in range(k0, first))

    def _compact_lists(self, suffixes: Sequence[str]) -> None:
        """Merge a list's first ``max_partials`` partials into one (compare-and-swap: if another
        replica compacted it meanwhile, nothing happens and the list stays correct)."""
        for suffix in suffixes:
            key = f"{self.prefix}:p:{suffix}"
            blobs = self.client.lrange(key, 0, self.max_partials - 1)
            if len(blobs) < 2:
                continue
            digest = hashlib.sha1(b"".join(b"%d:%s" % (len(b), b) for b in blobs)).hexdigest()
            merged = self.codec.merge(suffix.rsplit(":", 1)[1], blobs)
            if self._compact(keys=[self.prefix], args=[suffix, len(blobs), digest, merged]):
                self.compactions += 1

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

    def read(self, claim: Claim) -> dict[str, list[bytes]]:
        """The window's partials per group: ``{group: [partial, ...]}`` (one script call; reads
        O(panes x partials), never instances)."""
        flat = self._read(keys=[self.prefix], args=[claim.start_ms, claim.end_ms, self.pane_ms])
        out: dict[str, list[bytes]] = {}
        for i in range(0, len(flat), 2):
            out.setdefault(flat[i].decode(), []).append(flat[i + 1])
        return out

    def stored_result(self, claim: Claim, token: str) -> tuple[bool, bytes | None]:
        """(lease still ours, the closed event stored by an earlier closer or None); renews the lease."""
        held, stored = self._result(keys=[self.prefix], args=[claim.member, token, "", self.lease_ms])
        return bool(held), (stored or None)

    def store_result(self, claim: Claim, token: str, event: bytes) -> bytes | None:
        """Fix the window's closed event (the first one stored wins); returns the event to emit,
        or None when the lease is no longer ours (then another closer emits it)."""
        held, stored = self._result(keys=[self.prefix], args=[claim.member, token, event, self.lease_ms])
        return stored if held else None

    def complete(self, claim: Claim, token: str) -> bool:
        return bool(self._complete(keys=[self.prefix], args=[claim.member, token, self.duration_ms,
                                                             self.slide_ms, self.pane_ms]))

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

