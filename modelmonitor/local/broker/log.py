"""The broker's event log: every accepted event is appended before the ingress answers, to the
log of each Trigger whose filter it matches (filtered once, at append time); each Trigger reads
its own log and acknowledges an entry once the entry was delivered or dead-lettered.

Two implementations with the same interface:

* `RedisStreamLog`: a Redis Stream per Trigger (`{mm-broker:<namespace>/<name>}:log:<trigger>`)
  read through one consumer group, and a stream for the dead-letter log
  (`{mm-broker:<namespace>/<name>}:deadletters`). An event and the Triggers' copies of it are
  appended in one transaction (all or none); replies and dead letters are appended in the same
  transaction as the acknowledgement of the delivery that made them. What was appended
  survives a restart of the broker (or of `modelmonitor run`); entries a Trigger had read but
  not acknowledged are read again, in log order, when its dispatcher starts. As durable as the
  Redis server's append-only file (`modelmonitor run`'s private redis-server fsyncs every
  write). A log written by an earlier version (one shared stream, a group per Trigger) is
  moved into the per-Trigger streams on start.
* `MemoryLog` (`memory_log`): the same in process memory, for an embedded broker without
  Redis (tests and tools); nothing survives the process.

Retention: a Trigger's entry is removed once the Trigger acknowledged it (`trim`, run about
once a second by the broker). Entries not yet delivered stay; when a matching Trigger's log
holds `max_entries` of them the broker refuses new events (HTTP 503) instead of dropping any.
Dead letters stay in the dead-letter log until redriven or purged; it holds at most
`max_dead_letters`: a Trigger whose next dead letter finds it full keeps the event in its own
log, unacknowledged, and tries again every few seconds (saying so), so its backlog, and at
`max_entries` the ingress, push back instead of anything being dropped.

>>> from modelmonitor.local.broker.memory_log import MemoryLog
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
from dataclasses import dataclass, field
from typing import Iterable, Sequence

CONSUMER = "dispatcher"
#: The consumer group of each Trigger's stream.
GROUP = "delivery"


@dataclass(slots=True)
class Entry:
    """One accepted event in wire form (binary-mode HTTP headers and body, never re-encoded) with
    its log position, its hop count (replies) and the Triggers whose streams it goes to (the
    Triggers whose filters it matched at append time; None: every Trigger)."""
    id: str
    headers: dict[str, str]
    body: bytes
    hops: int = 0
    targets: Sequence[str] | None = None

    def fields(self) -> dict[str, bytes | str | int]:
        return {"h": json.dumps(self.headers), "b": self.body, "n": self.hops}

    @classmethod
    def from_fields(cls, entry_id: str, fields: dict) -> "Entry":
        return cls(entry_id, json.loads(fields[b"h"]), fields.get(b"b", b""),
                   int(fields.get(b"n", 0)))


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


def _id_key(stream_id: bytes | str) -> tuple[int, int]:
    """A stream id as (milliseconds, sequence), for ordering."""
    text = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _next_id(stream_id: bytes | str) -> str:
    """The smallest stream id after `stream_id` (XTRIM MINID keeps ids >= it)."""
    ms, seq = _id_key(stream_id)
    return f"{ms}-{seq + 1}"


class RedisStreamLog:
    """The log as one Redis Stream per Trigger, each read by its own consumer group (see the
    module docstring)."""

    def __init__(self, client, namespace: str, name: str, *, max_entries: int = 200_000,
                 max_dead_letters: int = 100_000):
        self.client = client
        self.tag = "{mm-broker:%s/%s}" % (namespace, name)
        self.triggers_key = self.tag + ":triggers"
        self.dead_key = self.tag + ":deadletters"
        self.max_entries = max_entries
        self.max_dead_letters = max_dead_letters
        self.lengths: dict[str, int] = {}

    def stream(self, trigger: str) -> str:
        """The stream holding the events for `trigger`."""
        return f"{self.tag}:log:{trigger}"

    @property
    def length(self) -> int:
        """Entries in the fullest Trigger stream (what `max_entries` bounds)."""
        return max(self.lengths.values(), default=0)

    # -- groups -------------------------------------------------------------------------------
    def _create_group(self, pipe, trigger: str) -> None:
        pipe.sadd(self.triggers_key, trigger)
        pipe.xgroup_create(self.stream(trigger), GROUP, id="$", mkstream=True)

    def ensure_groups(self, groups: Iterable[str]) -> list[str]:
        """Create a stream and group for each Trigger (a new Trigger starts at the end of the
        log, as in Knative); delete those of Triggers that are gone. Returns the deleted
        Triggers' names."""
        wanted = list(dict.fromkeys(groups))
        for name in wanted:
            try:
                pipe = self.client.pipeline(transaction=True)
                self._create_group(pipe, name)
                pipe.execute()
            except Exception as err:
                if "BUSYGROUP" not in str(err):
                    raise
        self._migrate_shared_stream(wanted)
        known = {m.decode() for m in self.client.smembers(self.triggers_key)}
        gone = sorted(known - set(wanted))
        for name in gone:
            self.client.delete(self.stream(name))
            self.client.srem(self.triggers_key, name)
        self.lengths = {name: self.client.xlen(self.stream(name)) for name in wanted}
        return gone

    def _migrate_shared_stream(self, wanted: list[str]) -> None:
        """Move what each Trigger had not finished from the shared stream of earlier versions
        (`<tag>:log`, a group per Trigger) into its own stream, then delete the shared one."""
        old = self.tag + ":log"
        if not self.client.exists(old):
            return
        for g in self.client.xinfo_groups(old):
            name = g["name"].decode()
            if name not in wanted:
                continue
            ids = [p["message_id"] for p in
                   self.client.xpending_range(old, name, "-", "+", 10 ** 9)]
            pending = set(ids)
            items = {i: f for i, f in self.client.xrange(old) if i in pending}
            items.update(self.client.xrange(old, min="(" + g["last-delivered-id"].decode()))
            pipe = self.client.pipeline(transaction=True)
            for _i, fields in sorted(items.items(), key=lambda kv: _id_key(kv[0])):
                only = fields.get(b"o")
                if fields and (only is None or only.decode() == name):
                    pipe.xadd(self.stream(name), {k: v for k, v in fields.items() if k != b"o"})
            pipe.execute()
        self.client.delete(old)

    # -- writing ------------------------------------------------------------------------------
    def append(self, entries: Sequence[Entry], internal: bool = False) -> list[str]:
        """Append each entry to the streams of the Triggers it is for (`Entry.targets`, every
        Trigger when None), atomically, in one round trip (one fsync on an `appendfsync always`
        server); refuses with LogFullError above `max_entries` unless `internal` (replies of
        deliveries in flight). Returns an id per entry (that of its first stream)."""
        if not internal and self.length >= self.max_entries:
            raise LogFullError(f"the broker log holds {self.length} undelivered events "
                               f"(limit {self.max_entries})")
        pipe = self.client.pipeline(transaction=True)
        where = self._queue_appends(pipe, entries)
        results = pipe.execute()
        ids = []
        for e, first in zip(entries, where):
            e.id = results[first].decode() if first is not None else ""
            ids.append(e.id)
        return ids

    def _queue_appends(self, pipe, entries: Sequence[Entry]) -> list[int | None]:
        """Queue the XADDs of `entries` on `pipe`; the result index of each entry's first."""
        where = []
        for e in entries:
            targets = self.lengths if e.targets is None else e.targets
            fields = e.fields()
            where.append(len(pipe) if targets else None)
            for t in targets:
                pipe.xadd(self.stream(t), fields)
                self.lengths[t] = self.lengths.get(t, 0) + 1
        return where

    def complete(self, completions: Sequence[Completion]) -> None:
        """Replies and dead letters appended and entries acknowledged, atomically (MULTI)."""
        pipe = self.client.pipeline(transaction=True)
        for c in completions:
            self._queue_appends(pipe, c.replies)
            if c.dead_letter is not None:
                pipe.xadd(self.dead_key, c.dead_letter.fields())
        acks: dict[str, list[str]] = {}
        for c in completions:
            acks.setdefault(c.group, []).append(c.entry_id)
        for group, ids in acks.items():
            pipe.xack(self.stream(group), GROUP, *ids)
        pipe.execute()

    # -- reading ------------------------------------------------------------------------------
    def read(self, group: str, count: int, block_ms: int, pending: bool = False,
             after: str = "0") -> list[Entry]:
        """Entries for Trigger `group`: with `pending`, those after `after` it read before and
        never acknowledged (after a restart), else new ones, waiting up to `block_ms`."""
        key = self.stream(group)
        resp = self.client.xreadgroup(GROUP, CONSUMER, {key: after if pending else ">"},
                                      count=count, block=None if pending else block_ms)
        out = []
        for _key, items in resp or []:
            for entry_id, fields in items:
                if fields:  # a pending entry deleted meanwhile comes back without fields
                    out.append(Entry.from_fields(entry_id.decode(), fields))
                elif pending:
                    self.client.xack(key, GROUP, entry_id)
        return out

    def backlog(self, group: str) -> int:
        """Entries of `group` not yet acknowledged (read or not)."""
        return self.backlogs().get(group, 0)

    def backlogs(self) -> dict[str, int]:
        names = list(self.lengths)
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.xinfo_groups(self.stream(name))
        out = {}
        for name, groups in zip(names, pipe.execute(raise_on_error=False)):
            if isinstance(groups, Exception):
                if "no such key" in str(groups).lower():
                    continue
                raise groups
            for g in groups:
                if g["name"].decode() == GROUP:
                    lag = g.get("lag")
                    if lag is None:   # Redis cannot tell after deletions: ask the stream
                        lag = len(self.client.xrange(self.stream(name),
                                                     min="(" + g["last-delivered-id"].decode(),
                                                     count=1))
                    out[name] = int(lag) + int(g["pending"])
        return out

    def trim(self) -> int:
        """Remove the entries each Trigger acknowledged; returns the fullest stream's length."""
        for name in list(self.lengths):
            key = self.stream(name)
            for g in self.client.xinfo_groups(key):
                if g["name"].decode() != GROUP:
                    continue
                if g["pending"]:
                    first = self.client.xpending(key, GROUP)["min"]
                    low = first.decode() if isinstance(first, bytes) else first
                else:
                    low = _next_id(g["last-delivered-id"])
                self.client.xtrim(key, minid=low, approximate=False)
            self.lengths[name] = self.client.xlen(key)
        return self.length

    # -- dead letters -------------------------------------------------------------------------
    def dead_letters(self, limit: int | None = None) -> list[DeadLetter]:
        items = self.client.xrange(self.dead_key, count=limit)
        return [DeadLetter.from_fields(i.decode(), f) for i, f in items]

    def dead_letter_count(self) -> int:
        return self.client.xlen(self.dead_key)

    def redrive(self, ids: Iterable[str] | None = None, trigger: str | None = None) -> int:
        """Put dead letters back into the log of their Trigger only (and remove them from the
        dead-letter log, atomically); returns how many."""
        wanted = set(ids) if ids is not None else None
        moved = 0
        for dl in self.dead_letters():
            if (wanted is not None and dl.id not in wanted) or (trigger and dl.trigger != trigger):
                continue
            entry = Entry("", dl.entry.headers, dl.entry.body, 0, [dl.trigger])
            try:  # a run that never started this Trigger: its stream and group begin here
                self.client.xgroup_create(self.stream(dl.trigger), GROUP, id="$", mkstream=True)
                self.client.sadd(self.triggers_key, dl.trigger)
            except Exception as err:
                if "BUSYGROUP" not in str(err):
                    raise
            pipe = self.client.pipeline(transaction=True)
            pipe.xadd(self.stream(dl.trigger), entry.fields())
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
