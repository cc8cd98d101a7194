"""The Redis window store: panes of mergeable partial aggregates, the shared watermark, dedup,
and closing with leases.

Every key of a monitor shares one hash tag, ``{mm:<monitor>}``, so each Lua script touches a
single Redis Cluster slot. Layout (``K`` = the prefix):

- ``K:wm``            hash: ``maxT`` (largest accepted event time), ``W`` (watermark),
                      ``lastArr`` (processing time of the last accepted request), ``late``
                      (late instances since the previous seal)
- ``K:open``          zset of open windows ``<start>:<end>`` scored by end
- ``K:ready``         zset of sealed windows waiting to be closed (their content is final)
- ``K:p:<pane>:<from>:<group>``  hash: per replica (its token) the merge of every instance it
                      applied to pane ``<pane>`` that counts for the windows starting at or
                      after ``<from>`` (earlier ones containing the pane were already sealed
                      when they arrived: they are late for those); opaque bytes built by the
                      caller's codec
- ``K:pv:<pane>:<from>:<group>`` hash: per replica the version of its field (writes it counted)
- ``K:pe:<pane>``     set of the ``<from>:<group>`` slots the pane has
- ``K:meta:<s>:<e>``  hash: ``late`` and ``wm`` fixed when the window was sealed
- ``K:lease:<s>:<e>`` who is closing the window (expires: a dead closer is replaced)
- ``K:res:<s>:<e>``   the window's closed event once computed, so a re-close emits it identically
- ``K:dd:<bucket>``   dedup ids seen in one processing-time bucket (expire after the retention)
- ``K:segments``      zset of the watched segments scored by their newest event time
                      (segmented monitors: :meth:`WindowStore.admit_segments`)

Panes are ``gcd(duration, slide)`` long and aligned to the epoch, so a pane lies in exactly the
windows that contain any of its instants: an instance updates one pane, whatever the slide, and a
window is the merge of its panes' partials. ``group`` is any string without ``:`` (the aggregate
uses ``i`` for inputs and ``p`` for predictions; a segment can be appended, e.g. ``i@eu``).
Each replica keeps its own aggregate of the slots it writes in memory, merges a batch into it
and writes it back whole under a version check (a compare-and-swap per slot inside the apply
script), so the bytes of a pane are one aggregate per writing replica whatever the number of
instances, and a batch is one script call.
A pane is deleted when the last window containing it is closed.

The store does not know what an aggregate is: a codec builds one from a group's pending requests,
makes an empty one and reads one from bytes; aggregates merge in place and give their bytes (for
the aggregate function: ``WindowAggregate``). Pane and status arithmetic: ``modelmonitor.windowing.panes``.
"""
from __future__ import annotations

import dataclasses
import importlib.resources
import json
import operator
import uuid
from collections import OrderedDict
from typing import Protocol, Sequence

import numpy as np

from modelmonitor.windowing import panes

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


class Partial(Protocol):
    """A mergeable aggregate (``WindowAggregate``)."""

    def merge(self, other: "Partial") -> "Partial":
        """Fold ``other`` in (in place); returns self."""

    def to_bytes(self) -> bytes: ...


class PartialCodec(Protocol):
    """What the store needs to know about aggregates (opaque bytes in Redis)."""

    def empty(self, group: str) -> Partial: ...

    def add(self, partial: Partial, group: str, requests: Sequence[PendingRequest]) -> Partial:
        """Add the requests of one group (all in the same pane) to ``partial``, in place."""

    def read(self, group: str, blob: bytes) -> Partial: ...


_DEDUP_KEY, _EVENT_TIME = operator.attrgetter("dedup_key"), operator.attrgetter("event_time_ms")
_GROUP, _INSTANCES = operator.attrgetter("group"), operator.attrgetter("instances")


class _Batch:
    """A batch's columns, built once per apply: event times, in-batch duplicates, row groups and
    the script's JSON arguments."""

    __slots__ = ("requests", "keys", "t", "dup", "group_codes", "group_names", "keys_json", "times_packed",
                 "counts_packed", "meta_bytes")

    def __init__(self, requests: Sequence[PendingRequest]):
        self.requests = requests
        self.keys = list(map(_DEDUP_KEY, requests))
        self.t = np.array(list(map(_EVENT_TIME, requests)), dtype=np.int64)
        self.dup = panes.duplicates_in_batch(self.keys)
        groups = list(map(_GROUP, requests))
        self.group_names = sorted(set(groups))
        codes = {g: i for i, g in enumerate(self.group_names)}
        self.group_codes = (np.zeros(len(groups), dtype=np.int64) if len(codes) == 1
                            else np.array([codes[g] for g in groups], dtype=np.int64))
        counts = list(map(_INSTANCES, requests))
        self.keys_json = json.dumps(self.keys, separators=(",", ":"))
        # Event times and instance counts as little-endian doubles (exact below 2**53): the
        # script unpacks a thousand per call, cheaper than formatting and parsing decimal text.
        self.times_packed = self.t.astype("<f8").tobytes()
        self.counts_packed = b"" if counts.count(1) == len(counts) else np.array(counts, dtype="<f8").tobytes()
        self.meta_bytes = len(self.keys_json) + len(self.times_packed) + len(self.counts_packed)


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
                 lease_ms: int = 15_000, max_args_bytes: int = 768 * 1024, max_attempts: int = 8,
                 token: str | None = None, cached_slots: int = 256):
        self.client = client
        self.monitor = monitor
        self.prefix = "{mm:%s}" % monitor
        self.duration_ms, self.slide_ms, self.delay_ms = duration_ms, slide_ms, delay_ms
        self.pane_ms = panes.pane_ms(duration_ms, slide_ms)
        self.codec = codec
        self.dedup_bucket_ms = dedup_bucket_ms
        self.dedup_buckets = -(-dedup_retention_ms // dedup_bucket_ms) + 1
        self.dedup_ttl_ms = dedup_bucket_ms * (self.dedup_buckets + 1)
        self.lease_ms = lease_ms
        # Who writes this replica's pane aggregates, and its cache of them (least recently used last).
        self.token = token or uuid.uuid4().hex
        self.cached_slots = cached_slots
        self._slots: OrderedDict[str, list] = OrderedDict()
        self.max_args_bytes = max_args_bytes
        self.max_attempts = max_attempts
        # The last watermark / max event time seen: the first guess of each batch's statuses.
        self._w: int | None = None
        self._max_t: int | None = None
        self.conflicts = 0
        self._apply = client.register_script(_script_text("apply.lua"))
        self._tick = client.register_script(_script_text("tick.lua"))
        self._claim = client.register_script(_script_text("claim.lua"))
        self._read = client.register_script(_script_text("read.lua"))
        self._result = client.register_script(_script_text("result.lua"))
        self._complete = client.register_script(_script_text("complete.lua"))
        self._release = client.register_script(_script_text("release.lua"))
        self._segments = client.register_script(_script_text("segments.lua"))

    # -- hot path -------------------------------------------------------------------------
    def apply(self, requests: Sequence[PendingRequest], now_ms: int) -> ApplyResult:
        """Dedup, lateness, watermark and the batch's pane aggregates: one atomic script call per
        attempt (another only when the first guess of the statuses was wrong, e.g. for a
        redelivery, or this replica's view of a pane aggregate is stale). Statuses per request:
        ``ok``, ``dup`` or ``late:<start>,...`` (the windows it was late for; it still counts for
        the later ones containing it)."""
        for group in {r.group for r in requests}:
            if not group or ":" in group:
                raise ValueError(f"row group {group!r} must be a non-empty string without ':'")
        if not requests:
            return ApplyResult([], self._w, self._max_t, 0)
        batch = _Batch(requests)
        statuses = self._guess(batch)
        for _ in range(self.max_attempts):
            slots = self._slot_updates(batch, statuses)
            size = batch.meta_bytes + sum(len(k) + len(v) for k, _, v in slots)
            if size > self.max_args_bytes and len(requests) > 1:
                # Too big for one call: halves, in order (the same effect as one batch).
                self._forget(k for k, _, _ in slots)
                half = len(requests) // 2
                first, second = self.apply(requests[:half], now_ms), self.apply(requests[half:], now_ms)
                return ApplyResult(first.statuses + second.statuses, second.watermark_ms,
                                   second.max_event_time_ms, second.ready)
            args = [self.duration_ms, self.slide_ms, self.pane_ms, self.delay_ms, int(now_ms),
                    self.dedup_bucket_ms, self.dedup_buckets, self.dedup_ttl_ms, batch.keys_json,
                    batch.times_packed, batch.counts_packed, ";".join(statuses), self.token]
            for key, version, blob in slots:
                args += [key, version, blob]
            try:
                w, max_t, ready, got, outcome, stale = self._apply(keys=[self.prefix], args=args)
            except BaseException:
                self._forget(k for k, _, _ in slots)     # whether it was applied is unknown
                raise
            self._w, self._max_t = _int_or_none(w), _int_or_none(max_t)
            if outcome == b"ok":
                for key, _, blob in slots:
                    slot = self._slots[key]
                    slot[0] += 1
                    slot[2] = blob
                return ApplyResult(self._public_statuses(batch, statuses), self._w, self._max_t, int(ready))
            self._restore(k for k, _, _ in slots)       # nothing was written
            if outcome == b"stale":
                self._load_slots(stale.decode().split(" "))
            else:
                self.conflicts += 1
                statuses = got.decode().split(";")
        raise ConflictError(f"the window state of monitor {self.monitor!r} kept changing during "
                            f"{self.max_attempts} attempts to apply a batch")

    def _guess(self, batch: "_Batch") -> list[str]:
        """The statuses the script will most likely find: no redelivery from before this batch,
        and the watermark as last seen, moving as the batch goes (the script's own rule). Only a
        guess: the script is the authority and answers with the real statuses."""
        kf, k0, k1 = panes.first_on_time_windows(batch.t, batch.dup, self._w, self.duration_ms,
                                                 self.slide_ms, self.delay_ms)
        out = [""] * len(batch.keys)
        for i in np.flatnonzero(kf != k0).tolist():
            out[i] = "L" if kf[i] > k1[i] else str(int(kf[i]) * self.slide_ms)
        for i in np.flatnonzero(batch.dup).tolist():
            out[i] = "dup"
        return out

    def _slot_updates(self, batch: "_Batch", statuses: Sequence[str]) -> list[tuple[str, int, bytes]]:
        """For each (pane, first window, group) the batch touches: this replica's aggregate of it
        with the batch's requests merged in, and the version it was built on."""
        t, s = batch.t, self.slide_ms
        frm = ((t - self.duration_ms) // s + 1) * s        # on time for every window containing it
        counted = np.ones(len(t), dtype=bool)
        for i, st in enumerate(statuses) if any(statuses) else ():
            if st:
                if st == "dup" or st == "L":
                    counted[i] = False
                else:
                    frm[i] = int(st)
        pane = t // self.pane_ms * self.pane_ms
        groups = batch.group_codes
        idx = np.flatnonzero(counted)
        if not len(idx):
            return []
        order = idx[np.lexsort((groups[idx], frm[idx], pane[idx]))]
        cut = np.flatnonzero((np.diff(pane[order]) != 0) | (np.diff(frm[order]) != 0)
                             | (np.diff(groups[order]) != 0)) + 1
        out = []
        for part in np.split(order, cut):
            i = int(part[0])
            group = batch.group_names[groups[i]]
            key = f"{int(pane[i])}:{int(frm[i])}:{group}"
            version, agg, _ = self._slot(key, group)
            reqs = batch.requests
            self.codec.add(agg, group, [reqs[j] for j in part.tolist()] if len(part) < len(reqs) else reqs)
            out.append((key, version, agg.to_bytes()))
        return out

    def _slot(self, key: str, group: str) -> list:
        """This replica's [version, aggregate, bytes] of a slot, as last written (version 0 and
        empty when unknown: the script says so if Redis has more, and it is then read)."""
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = [0, self.codec.empty(group), None]
            while len(self._slots) > self.cached_slots:
                self._slots.popitem(last=False)
        else:
            self._slots.move_to_end(key)
        return slot

    def _restore(self, keys) -> None:
        """Undo the merges into cached aggregates whose write did not happen."""
        for key in list(keys):
            slot = self._slots.get(key)
            if slot is not None:
                group = key.rsplit(":", 1)[1]
                slot[1] = self.codec.read(group, slot[2]) if slot[2] is not None else self.codec.empty(group)

    def _forget(self, keys) -> None:
        for key in list(keys):
            self._slots.pop(key, None)

    def _load_slots(self, keys: Sequence[str]) -> None:
        """Read this replica's aggregates and versions of ``keys`` from Redis (one round trip)."""
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hget(f"{self.prefix}:p:{key}", self.token)
            pipe.hget(f"{self.prefix}:pv:{key}", self.token)
        got = pipe.execute()
        for j, key in enumerate(keys):
            blob, version = got[2 * j], got[2 * j + 1]
            group = key.rsplit(":", 1)[1]
            agg = self.codec.read(group, blob) if blob else self.codec.empty(group)
            self._slots[key] = [int(version or 0), agg, bytes(blob) if blob else None]

    def _public_statuses(self, batch: "_Batch", statuses: Sequence[str]) -> list[str]:
        out = ["ok"] * len(statuses)
        d, s = self.duration_ms, self.slide_ms
        for i, st in enumerate(statuses) if any(statuses) else ():
            if st:
                t = int(batch.t[i])
                out[i] = ("dup" if st == "dup" else
                          panes.late_status(t, t // s + 1 if st == "L" else int(st) // s, d, s))
        return out

    # -- processing-time advance ----------------------------------------------------------
    def admit_segments(self, requests: Sequence[tuple[str, int]], max_segments: int,
                       retention_ms: int) -> list[bool]:
        """Which (segment, event time) requests find a slot among the ``max_segments`` watched
        segments, in order (one atomic script call; see ``segments.lua``)."""
        if not requests:
            return []
        args: list = [max_segments, retention_ms, len(requests)]
        for segment, t in requests:
            args += [segment, int(t)]
        return [bool(x) for x in self._segments(keys=[self.prefix], args=args)]

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

