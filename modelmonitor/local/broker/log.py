"""The broker's event log: every accepted event is appended before the ingress answers, each
Trigger reads it through its own consumer group and acknowledges an entry once the entry was
delivered, dead-lettered or did not match.

Two implementations with the same interface:

* `RedisStreamLog`: a Redis Stream per broker (`{mm-broker:<namespace>/<name>}:log`), a consumer
  group per Trigger, and a second stream for the dead-letter log
  (`{mm-broker:<namespace>/<name>}:deadletters`). What was appended survives a restart of the
  broker (or of `modelmonitor run`); entries a Trigger had read but not acknowledged are read
  again, in log order, when its dispatcher starts. As durable as the Redis server's
  append-only file (`modelmonitor run`'s private redis-server fsyncs every write).
* `MemoryLog`: the same in process memory, for an embedded broker without Redis (tests and
  tools); nothing survives the process.

Retention: an entry is removed once every Trigger's group acknowledged it (`trim`, run about
once a second by the broker). Entries not yet delivered stay; above `max_entries` of them the
broker refuses new events (HTTP 503) instead of dropping any. Dead letters stay in the
dead-letter log until redriven or purged.

>>> log = MemoryLog()
>>> log.ensure_groups(["a", "b"])   # returns the groups it deleted
[]
>>> ids = log.append([Entry("", {"ce-id": "1"}, b"{}")])
>>> [e.headers["ce-id"] for e in log.read("a", 10, 0)], log.backlog("a"), log.backlog("b")
(['1'], 1, 1)
>>> log.complete([Completion("a", ids[0])]); log.backlog("a")
0
"""
from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Sequence

CONSUMER = "dispatcher"


@dataclass(slots=True)
class Entry:
    """One accepted event in wire form (binary-mode HTTP headers and body, never re-encoded) with
    its log position, its hop count (replies) and, when redriven, the one Trigger it is for."""
    id: str
    headers: dict[str, str]
    body: bytes
    hops: int = 0
    only: str | None = None

    def fields(self) -> dict[str, bytes | str | int]:
        out: dict[str, bytes | str | int] = {"h": json.dumps(self.headers), "b": self.body,
                                             "n": self.hops}
        if self.only:
            out["o"] = self.only
        return out

    @classmethod
    def from_fields(cls, entry_id: str, fields: dict) -> "Entry":
        only = fields.get(b"o")
        return cls(entry_id, json.loads(fields[b"h"]), fields.get(b"b", b""),
                   int(fields.get(b"n", 0)), only.decode() if only else None)


@dataclass(slots=True)
class DeadLetter:
    """An event a Trigger could not deliver (and had no deadLetterSink for, or that sink failed
    too), kept with the reason until redriven."""
    id: str
    trigger: str
    reason: str
    status: int
    destination: str
    time_ms: int
    entry: Entry

    def fields(self) -> dict:
        return {"trigger": self.trigger, "reason": self.reason, "status": self.status,
                "dest": self.destination, "t": self.time_ms, **self.entry.fields()}

    @classmethod
    def from_fields(cls, dl_id: str, fields: dict) -> "DeadLetter":
        text = {k.decode(): v.decode(errors="replace") for k, v in fields.items() if k != b"b"}
        return cls(dl_id, text["trigger"], text.get("reason", ""), int(text.get("status", 0)),
                   text.get("dest", ""), int(text.get("t", 0)), Entry.from_fields("", fields))

    def summary(self) -> dict:
        """What `modelmonitor deadletters list` shows of it."""
        h = self.entry.headers
        return {"id": self.id, "trigger": self.trigger, "eventId": h.get("ce-id"),
                "type": h.get("ce-type"), "source": h.get("ce-source"), "status": self.status,
                "destination": self.destination, "reason": self.reason, "timeMs": self.time_ms}


@dataclass(slots=True)
class Completion:
    """What becomes of one entry read by a group, written atomically: the replies and the dead
    letter are appended, then the entry is acknowledged."""
    group: str
    entry_id: str
    replies: list[Entry] = field(default_factory=list)
    dead_letter: DeadLetter | None = None


class LogFullError(RuntimeError):
    """More undelivered entries than the log may hold: the ingress answers 503."""


def _next_id(stream_id: bytes | str) -> str:
    """The smallest stream id after `stream_id` (XTRIM MINID keeps ids >= it)."""
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = text.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


class RedisStreamLog:
    """The log as a Redis Stream with a consumer group per Trigger (see the module docstring)."""

    def __init__(self, client, namespace: str, name: str, *, max_entries: int = 200_000):
        self.client = client
        tag = "{mm-broker:%s/%s}" % (namespace, name)
        self.key = tag + ":log"
        self.dead_key = tag + ":deadletters"
        self.max_entries = max_entries
        self.length = 0

    # -- groups -------------------------------------------------------------------------------
    def ensure_groups(self, groups: Iterable[str]) -> list[str]:
        """Create a group for each Trigger (a new Trigger starts at the end of the log, as in
        Knative); delete groups of Triggers that are gone. Returns the deleted groups' names."""
        wanted = set(groups)
        existing = {}
        if self.client.exists(self.key):
            existing = {g["name"].decode(): g for g in self.client.xinfo_groups(self.key)}
        for name in wanted - set(existing):
            self.client.xgroup_create(self.key, name, id="$", mkstream=True)
        gone = sorted(set(existing) - wanted)
        for name in gone:
            self.client.xgroup_destroy(self.key, name)
        self.length = self.client.xlen(self.key)
        return gone

    # -- writing ------------------------------------------------------------------------------
    def append(self, entries: Sequence[Entry], internal: bool = False) -> list[str]:
        """Append in one round trip (one fsync on an `appendfsync always` server); refuses with
        LogFullError above `max_entries` unless `internal` (replies of deliveries in flight)."""
        if not internal and self.length >= self.max_entries:
            raise LogFullError(f"the broker log holds {self.length} undelivered events "
                               f"(limit {self.max_entries})")
        pipe = self.client.pipeline(transaction=False)
        for e in entries:
            pipe.xadd(self.key, e.fields())
        ids = [i.decode() for i in pipe.execute()]
        for e, i in zip(entries, ids):
            e.id = i
        self.length += len(entries)
        return ids

    def complete(self, completions: Sequence[Completion]) -> None:
        """Replies and dead letters appended and entries acknowledged, atomically (MULTI)."""
        pipe = self.client.pipeline(transaction=True)
        for c in completions:
            for r in c.replies:
                pipe.xadd(self.key, r.fields())
            if c.dead_letter is not None:
                pipe.xadd(self.dead_key, c.dead_letter.fields())
            pipe.xack(self.key, c.group, c.entry_id)
        pipe.execute()
        self.length += sum(len(c.replies) for c in completions)

    # -- reading ------------------------------------------------------------------------------
    def read(self, group: str, count: int, block_ms: int, pending: bool = False,
             after: str = "0") -> list[Entry]:
        """Entries for `group`: with `pending`, those after `after` it read before and never
        acknowledged (after a restart), else new ones, waiting up to `block_ms` for some."""
        resp = self.client.xreadgroup(group, CONSUMER, {self.key: after if pending else ">"},
                                      count=count, block=None if pending else block_ms)
        out = []
        for _key, items in resp or []:
            for entry_id, fields in items:
                if fields:  # a pending entry deleted meanwhile comes back without fields
                    out.append(Entry.from_fields(entry_id.decode(), fields))
                elif pending:
                    self.client.xack(self.key, group, entry_id)
        return out

    def backlog(self, group: str) -> int:
        """Entries of `group` not yet acknowledged (read or not)."""
        return self.backlogs().get(group, 0)

    def backlogs(self) -> dict[str, int]:
        try:
            last = self.client.xinfo_stream(self.key)["last-generated-id"]
        except Exception:  # no stream yet
            return {}
        out = {}
        for g in self.client.xinfo_groups(self.key):
            lag = g.get("lag")
            if lag is None:
                lag = 0 if g["last-delivered-id"] == last else 1
            out[g["name"].decode()] = int(lag) + int(g["pending"])
        return out

    def trim(self) -> int:
        """Remove the entries every group acknowledged; returns the log's length after."""
        lows = []
        for g in self.client.xinfo_groups(self.key):
            if g["pending"]:
                first = self.client.xpending(self.key, g["name"])["min"]
                lows.append(first.decode() if isinstance(first, bytes) else first)
            else:
                lows.append(_next_id(g["last-delivered-id"]))
        if lows:
            low = min(lows, key=lambda s: tuple(int(x) for x in s.split("-")))
            self.client.xtrim(self.key, minid=low, approximate=False)
        self.length = self.client.xlen(self.key)
        return self.length

    # -- dead letters -------------------------------------------------------------------------
    def dead_letters(self, limit: int | None = None) -> list[DeadLetter]:
        items = self.client.xrange(self.dead_key, count=limit)
        return [DeadLetter.from_fields(i.decode(), f) for i, f in items]

    def dead_letter_count(self) -> int:
        return self.client.xlen(self.dead_key)

    def redrive(self, ids: Iterable[str] | None = None, trigger: str | None = None) -> int:
        """Put dead letters back into the log for their Trigger only (and remove them from the
        dead-letter log, atomically); returns how many."""
        wanted = set(ids) if ids is not None else None
        moved = 0
        for dl in self.dead_letters():
            if (wanted is not None and dl.id not in wanted) or (trigger and dl.trigger != trigger):
                continue
            entry = Entry("", dl.entry.headers, dl.entry.body, 0, dl.trigger)
            pipe = self.client.pipeline(transaction=True)
            pipe.xadd(self.key, entry.fields())
            pipe.xdel(self.dead_key, dl.id)
            pipe.execute()
            moved += 1
        return moved

    def purge(self, ids: Iterable[str] | None = None) -> int:
        """Delete dead letters (all, or the given ids); returns how many."""
        if ids is None:
            n = self.client.xlen(self.dead_key)
            self.client.delete(self.dead_key)
            return n
        ids = list(ids)
        return self.client.xdel(self.dead_key, *ids) if ids else 0


class MemoryLog:
    """The log in process memory (no durability): a queue per group."""

    def __init__(self, max_entries: int = 1_000_000):
        self.max_entries = max_entries
        self._cv = threading.Condition()
        self._queues: dict[str, deque[Entry]] = {}
        self._unacked: dict[str, dict[str, Entry]] = {}
        self._dead: list[DeadLetter] = []
        self._ids = 0

    @property
    def length(self) -> int:
        with self._cv:
            return max((len(q) + len(self._unacked[g]) for g, q in self._queues.items()), default=0)

    def ensure_groups(self, groups: Iterable[str]) -> list[str]:
        with self._cv:
            for g in groups:
                self._queues.setdefault(g, deque())
                self._unacked.setdefault(g, {})
        return []

    def _new_id(self) -> str:
        self._ids += 1
        return f"{int(time.time() * 1000)}-{self._ids}"

    def _add(self, entry: Entry) -> None:
        entry.id = self._new_id()
        for q in self._queues.values():
            q.append(entry)

    def append(self, entries: Sequence[Entry], internal: bool = False) -> list[str]:
        with self._cv:
            if not internal and self.length >= self.max_entries:
                raise LogFullError(f"the broker holds {self.length} undelivered events "
                                   f"(limit {self.max_entries})")
            for e in entries:
                self._add(e)
            self._cv.notify_all()
        return [e.id for e in entries]

    def complete(self, completions: Sequence[Completion]) -> None:
        with self._cv:
            for c in completions:
                for r in c.replies:
                    self._add(r)
                if c.dead_letter is not None:
                    c.dead_letter.id = self._new_id()
                    self._dead.append(c.dead_letter)
                self._unacked[c.group].pop(c.entry_id, None)
            self._cv.notify_all()

    def read(self, group: str, count: int, block_ms: int, pending: bool = False,
             after: str = "0") -> list[Entry]:
        if pending:
            return []  # nothing survives the process
        with self._cv:
            q = self._queues[group]
            if not q and block_ms:
                self._cv.wait_for(lambda: bool(q), block_ms / 1000)
            out = [q.popleft() for _ in range(min(count, len(q)))]
            for e in out:
                self._unacked[group][e.id] = e
            return out

    def backlog(self, group: str) -> int:
        with self._cv:
            return len(self._queues[group]) + len(self._unacked[group])

    def backlogs(self) -> dict[str, int]:
        with self._cv:
            return {g: len(q) + len(self._unacked[g]) for g, q in self._queues.items()}

    def trim(self) -> int:
        return self.length

    def dead_letters(self, limit: int | None = None) -> list[DeadLetter]:
        with self._cv:
            return list(self._dead[:limit])

    def dead_letter_count(self) -> int:
        with self._cv:
            return len(self._dead)

    def redrive(self, ids: Iterable[str] | None = None, trigger: str | None = None) -> int:
        wanted = set(ids) if ids is not None else None
        with self._cv:
            keep, moved = [], 0
            for dl in self._dead:
                if (wanted is not None and dl.id not in wanted) or (trigger and dl.trigger != trigger):
                    keep.append(dl)
                    continue
                self._add(Entry("", dl.entry.headers, dl.entry.body, 0, dl.trigger))
                moved += 1
            self._dead = keep
            self._cv.notify_all()
        return moved

    def purge(self, ids: Iterable[str] | None = None) -> int:
        with self._cv:
            before = len(self._dead)
            self._dead = [] if ids is None else [d for d in self._dead if d.id not in set(ids)]
            return before - len(self._dead)
