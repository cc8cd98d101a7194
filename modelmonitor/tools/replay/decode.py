"""One chunk of input lines -> columns (event time, dedup identity, rows) plus everything about
those lines that does not depend on what came before (dead letters, outliers).

Lines of the common shape (a KServe V1 request, rows of plain numbers, the logger's time
format) are decoded by a typed msgspec decoder and checked column-wise; every other line takes
the per-event code (:func:`~modelmonitor.tools.replay.common.parse_line`, ``ingest_rows``),
so both engines judge it by the same code. Pure: a decoder may run in another process.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain, repeat
from operator import attrgetter
from typing import Annotated, Literal, Sequence

import msgspec
import numpy as np

from modelmonitor.core import events as ev
from modelmonitor.core.payload_rows import MAX_MAGNITUDE
from modelmonitor.core.payloads import split_columns
from modelmonitor.handlers import Monitor, Rejected, ingest_rows, outlier_event
from modelmonitor.tools.replay.common import LOGGER_TYPES, LineError, body_of, parse_line, rejection
from modelmonitor.tools.replay.fastjson import OutlierText, rfc3339_column
from modelmonitor.tools.replay.timecols import parse_times

#: Event time of a logger event without one: it takes the replay clock, known only in order.
NO_TIME = -1
#: Stands for ``detectedAtMs`` in a pre-serialised outlier event until the clock is known.
CLOCK_MARK = -7_777_777_777_777_777
REQUEST, RESPONSE = 0, 1
_TYPE_OF_KIND = {REQUEST: ev.KSERVE_REQUEST, RESPONSE: ev.KSERVE_RESPONSE}


def typed_decoder(isvc: str | None, width: int, responses: bool = False):
    """msgspec's decoder of one line that is a plain KServe V1 request for this monitor: the
    type, non-empty source and id, a time string, the inference service (or none) and at least
    one instance of exactly ``width`` numbers are checked in C while decoding; a line that is
    anything else fails and takes the per-event code. With ``responses``, also a plain V1
    response of at least one number per prediction (a monitor with one numerical prediction),
    told apart by ``type``. Returns (decode, the response struct class or None)."""
    nonempty = Annotated[str, msgspec.Meta(min_length=1)]
    row = Annotated[list[float], msgspec.Meta(min_length=width, max_length=width)]
    body = msgspec.defstruct("Body", [("instances", Annotated[list[row], msgspec.Meta(min_length=1)]),
                                      ("inputs", msgspec.Raw | msgspec.UnsetType, msgspec.UNSET)], gc=False)
    service = (Literal[isvc] | None) if isvc else None       # type: ignore[valid-type]
    common = [("source", nonempty), ("id", nonempty), ("time", str)]
    if not responses:
        event = msgspec.defstruct("Request", [("type", Literal[ev.KSERVE_REQUEST]), *common, ("data", body),
                                              ("inferenceservicename", service, None)], gc=False)
        return msgspec.json.Decoder(event).decode, None
    request = msgspec.defstruct("Request", [*common, ("data", body), ("inferenceservicename", service, None)],
                                gc=False, tag_field="type", tag=ev.KSERVE_REQUEST)
    answer = msgspec.defstruct("Answer", [("predictions", Annotated[list[float], msgspec.Meta(min_length=1)]),
                                          ("outputs", msgspec.Raw | msgspec.UnsetType, msgspec.UNSET)], gc=False)
    response = msgspec.defstruct("Response", [*common, ("data", answer), ("inferenceservicename", service, None)],
                                 gc=False, tag_field="type", tag=ev.KSERVE_RESPONSE)
    return msgspec.json.Decoder(request | response).decode, response


# One attribute over all events at a time (cheaper than a tuple per event transposed by zip).
_SOURCE, _ID, _TIME = (attrgetter(f) for f in ("source", "id", "time"))
_DATA, _INSTANCES, _INPUTS = attrgetter("data"), attrgetter("instances"), attrgetter("inputs")
_PREDICTIONS, _OUTPUTS = attrgetter("predictions"), attrgetter("outputs")


def _columns(events: list) -> tuple:
    """(ids, sources, event times ms, time converted, bodies) of typed events, one attribute at
    a time; one string object per distinct source (pickled once, hashed once)."""
    share = {}.setdefault
    sources = list(map(share, map(_SOURCE, events), map(_SOURCE, events)))
    ms, ok = parse_times(list(map(_TIME, events)))
    return list(map(_ID, events)), sources, ms, ok, list(map(_DATA, events))


def _absent(values: list) -> np.ndarray | bool:
    """Where an optional body field (``inputs``, ``outputs``) is absent."""
    if values.count(msgspec.UNSET) == len(values):
        return True
    return np.fromiter((v is msgspec.UNSET for v in values), bool, len(values))


@dataclass
class Decoded:
    """A chunk's ingested logger events ("records", in line order) as columns."""
    lines: int                                   # input items in the chunk, blank ones included
    line: np.ndarray                             # record -> line index in the chunk
    t: np.ndarray                                # event time ms (NO_TIME: the replay clock's)
    kind: np.ndarray                             # REQUEST or RESPONSE
    n: np.ndarray                                # instances per record
    keys: list                                   # dedup identity: (type, source, id)
    numeric: dict                                # kind -> (instances of that kind, numerical features)
    categorical: dict                            # kind -> one list per categorical feature
    segment: list | None = None                  # record -> segment (segmented monitors)
    logger_events: int = 0
    ignored: int = 0
    dead: list = field(default_factory=list)     # (line index, dead letter event)
    outliers: list = field(default_factory=list)  # (record, json text with CLOCK_MARK | found list)

    # Sent from a decoding process: the keys travel as two string lists (the record's kind
    # gives its type), which halves what is pickled per line.
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        keys = state.pop("keys")
        state["_sources"] = [k[1] for k in keys]
        state["_ids"] = [k[2] for k in keys]
        return state

    def __setstate__(self, state: dict) -> None:
        sources, ids = state.pop("_sources"), state.pop("_ids")
        self.__dict__.update(state)
        types = [_TYPE_OF_KIND[k] for k in self.kind.tolist()]
        self.keys = list(zip(types, sources, ids))


class _Records:
    """Records of the per-line path while a chunk is decoded."""

    def __init__(self):
        self.line, self.t, self.kind, self.n, self.keys, self.src, self.segment = [], [], [], [], [], [], []
        self.offset = {REQUEST: 0, RESPONSE: 0}     # where the next block starts in its kind's matrix
        self.blocks = {REQUEST: [], RESPONSE: []}   # (numeric, categorical columns) per record


class ChunkDecoder:
    def __init__(self, mon: Monitor):
        self.mon = mon
        self.isvc = mon.spec.inference_service
        self.width = len(mon.inputs.features)
        # The typed path covers monitors whose inputs are all numerical, without segments (the
        # segment comes from an extension attribute the typed decoder does not read).
        self.fast = not mon.inputs.categorical and self.width > 0 and not mon.segmented
        self.n_num = {REQUEST: len(mon.inputs.numeric), RESPONSE: len(mon.predictions.numeric)}
        self.n_cat = {REQUEST: len(mon.inputs.categorical), RESPONSE: len(mon.predictions.categorical)}
        self.text = OutlierText(mon)
        # Typed responses: a monitor with one numerical prediction (a V1 response's predictions
        # are then one number each).
        self.typed_responses = self.fast and bool(mon.spec.predictions) and self.n_num[RESPONSE] == 1 \
            and not self.n_cat[RESPONSE]
        self.decode_one, self.response_type = typed_decoder(self.isvc, self.width, self.typed_responses) \
            if self.fast else (None, None)

    # ------------------------------------------------------------------ entry
    def decode(self, items: Sequence, first_line: int) -> Decoded:
        """``items``: raw JSON lines (bytes/str) or structured-mode documents (dicts);
        ``first_line``: the 1-based number of the first one (dead letters name lines)."""
        n_items = len(items)
        fast_idx, fast_events = self._typed(items) if self.fast else ([], [])
        responses = None
        if self.response_type is not None and fast_events:
            answer = self.response_type
            is_answer = [type(e) is answer for e in fast_events]
            if any(is_answer):
                responses = ([i for i, a in zip(fast_idx, is_answer) if a], [e for e, a in zip(fast_events, is_answer) if a])
                fast_idx = [i for i, a in zip(fast_idx, is_answer) if not a]
                fast_events = [e for e, a in zip(fast_events, is_answer) if not a]
        f_line, f_t, f_matrix, f_counts, f_keys, slow = self._check_typed(fast_idx, fast_events, n_items)
        out = Decoded(n_items, None, None, None, None, None, {}, {})
        recs = _Records()
        recs.offset[REQUEST] = len(f_matrix)
        if responses is not None:
            slow = self._typed_responses(*responses, recs, slow)
            out.logger_events += len(recs.line)
        for i in slow:
            self._one(items[i], i, first_line + i, out, recs)
        out.logger_events += len(f_line)
        # typed and per-line records merged in line order
        line = np.concatenate([np.asarray(f_line, dtype=np.int64), np.asarray(recs.line, dtype=np.int64)])
        t = np.concatenate([f_t, np.asarray(recs.t, dtype=np.int64)])
        kind = np.concatenate([np.zeros(len(f_line), dtype=np.int8), np.asarray(recs.kind, dtype=np.int8)])
        counts = np.concatenate([f_counts, np.asarray(recs.n, dtype=np.int64)])
        src = np.concatenate([np.cumsum(f_counts) - f_counts, np.asarray(recs.src, dtype=np.int64)])
        keys = f_keys + recs.keys
        if len(recs.line):
            order = np.argsort(line, kind="stable")
            line, t, kind, counts, src = line[order], t[order], kind[order], counts[order], src[order]
            keys = [keys[j] for j in order.tolist()]
            if self.mon.segmented:           # no typed records: every record is in recs
                out.segment = [recs.segment[j] for j in order.tolist()]
        elif self.mon.segmented:
            out.segment = []
        out.line, out.t, out.kind, out.n, out.keys = line, t, kind, counts, keys
        for k in (REQUEST, RESPONSE):
            n_num = self.n_num[k]
            parts = [f_matrix] if k == REQUEST and len(f_matrix) else []
            parts += [b[0] for b in recs.blocks[k]]
            matrix = (np.concatenate([np.asarray(p, dtype=np.float64).reshape(len(p), n_num) for p in parts])
                      if parts else np.empty((0, n_num)))
            cat_columns = [[v for b in recs.blocks[k] for v in b[1][j]] for j in range(self.n_cat[k])]
            sel = kind == k
            starts, lens = src[sel], counts[sel]
            total = int(lens.sum())
            gather = np.repeat(starts - (np.cumsum(lens) - lens), lens) + np.arange(total)
            if total == len(matrix) and (gather == np.arange(total)).all():
                out.numeric[k], out.categorical[k] = matrix, cat_columns
            else:
                out.numeric[k] = matrix[gather]
                g = gather.tolist()
                out.categorical[k] = [[c[j] for j in g] for c in cat_columns]
        self._detect(out)
        return out

    # ------------------------------------------------------------------ typed path
    def _typed(self, items: Sequence) -> tuple[list[int], list]:
        if set(map(type, items)) == {bytes} and all(items):
            idx, lines = list(range(len(items))), items         # the usual chunk: no blank line
        else:
            idx, lines = [], []
            for i, x in enumerate(items):
                if type(x) is bytes and x.strip():
                    idx.append(i)
                    lines.append(x)
        if not lines:
            return [], []
        try:
            return idx, list(map(self.decode_one, lines))    # one line, one value: never a merged array
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass
        keep_idx, events = [], []
        for i, s in zip(idx, lines):
            try:
                events.append(self.decode_one(s))
                keep_idx.append(i)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
        return keep_idx, events

    def _check_typed(self, idx: list[int], events: list, n_items: int):
        """Which typed events are plain requests: (lines, times, matrix, counts, keys, other lines).
        Checks run column-wise over the chunk; per-record masks are built only when a column
        shows something unusual."""
        m = len(events)
        width = self.width
        if not m:
            return ([], np.zeros(0, dtype=np.int64), np.empty((0, width)), np.zeros(0, dtype=np.int64), [],
                    list(range(n_items)))
        ids, sources, ms, ok, bodies = _columns(events)
        instances = list(map(_INSTANCES, bodies))
        counts = np.fromiter(map(len, instances), np.int64, m)
        ok &= _absent(list(map(_INPUTS, bodies)))
        n_rows = int(counts.sum())
        matrix = np.fromiter(chain.from_iterable(chain.from_iterable(instances)), np.float64,
                             n_rows * width).reshape(n_rows, width)
        owner = None
        finite = (np.abs(matrix) <= MAX_MAGNITUDE).all(axis=1)   # NaN, inf and overflow-prone values
        if not finite.all():
            owner = np.repeat(np.arange(m), counts) if owner is None else owner
            ok[np.unique(owner[~finite])] = False
        if ok.all():
            return idx, ms, matrix, counts, list(zip(repeat(ev.KSERVE_REQUEST), sources, ids)), \
                (np.nonzero(~np.isin(np.arange(n_items), idx))[0].tolist() if m != n_items else [])
        owner = np.repeat(np.arange(m), counts) if owner is None else owner
        matrix = matrix[ok[owner]]
        typed = np.zeros(n_items, dtype=bool)
        typed[np.asarray(idx)[ok]] = True
        sel = np.nonzero(ok)[0].tolist()
        keys = [(ev.KSERVE_REQUEST, sources[j], ids[j]) for j in sel]
        return [idx[j] for j in sel], ms[ok], matrix, counts[ok], keys, np.nonzero(~typed)[0].tolist()

    def _typed_responses(self, idx: list[int], events: list, recs: "_Records", slow: list[int]) -> list[int]:
        """Typed responses go to the records as one block of prediction rows; those that are not
        plain (a time of another shape, outputs too, a prediction beyond the value limit) stay
        with the per-line code: returns ``slow`` (the lines left to it) without the others."""
        m = len(events)
        ids, sources, ms, ok, bodies = _columns(events)
        predictions = list(map(_PREDICTIONS, bodies))
        counts = np.fromiter(map(len, predictions), np.int64, m)
        ok &= _absent(list(map(_OUTPUTS, bodies)))
        values = np.fromiter(chain.from_iterable(predictions), np.float64, int(counts.sum()))
        owner = np.repeat(np.arange(m), counts)
        ok &= np.bincount(owner, weights=np.abs(values) > MAX_MAGNITUDE, minlength=m) == 0
        keep = np.nonzero(ok)[0]
        if not len(keep):
            return slow
        rows = np.ascontiguousarray(values[ok[owner]]).reshape(-1, 1)
        n = counts[keep]
        recs.line.extend(idx[j] for j in keep.tolist())
        recs.t.extend(ms[keep].tolist())
        recs.kind.extend([RESPONSE] * len(keep))
        recs.n.extend(n.tolist())
        recs.keys.extend((ev.KSERVE_RESPONSE, sources[j], ids[j]) for j in keep.tolist())
        recs.src.extend((recs.offset[RESPONSE] + np.cumsum(n) - n).tolist())
        recs.offset[RESPONSE] += len(rows)
        recs.blocks[RESPONSE].append((rows, []))
        typed = set(recs.line)
        return [i for i in slow if i not in typed]

    # ------------------------------------------------------------------ per-line path
    def _one(self, item, i: int, line_no: int, out: Decoded, recs: "_Records") -> None:
        mon = self.mon
        try:
            doc = parse_line(mon, item, line_no)
        except LineError as exc:
            out.dead.append((i, exc.event))
            return
        if doc is None:
            return
        if doc["type"] not in LOGGER_TYPES:
            out.ignored += 1
            return
        out.logger_events += 1
        try:
            inst = ingest_rows(mon, doc, body_of(doc), NO_TIME, check_skew=False)
        except Rejected as exc:
            out.dead.append((i, rejection(mon, exc.reason, doc)))
            return
        if inst is None:
            out.ignored += 1
            return
        kind = RESPONSE if inst.kind == "response" else REQUEST
        numeric, categorical = split_columns(inst.rows, mon.layout(inst.kind).features)
        recs.line.append(i)
        recs.t.append(inst.event_time_ms)
        recs.kind.append(kind)
        recs.n.append(len(inst.rows))
        recs.keys.append((doc["type"], doc["source"], doc["id"]))
        recs.segment.append(inst.segment)
        recs.src.append(recs.offset[kind])
        recs.offset[kind] += len(inst.rows)
        recs.blocks[kind].append((numeric, categorical))

    # ------------------------------------------------------------------ outliers
    def _detect(self, out: Decoded) -> None:
        mon = self.mon
        detector = mon.outlier_detector
        if detector is None:
            return
        req = np.nonzero(out.kind == REQUEST)[0]
        if not len(req):
            return
        numeric, categorical = out.numeric[REQUEST], out.categorical[REQUEST]
        found = detector.detect(numeric, categorical)
        if not found:
            return
        offsets = np.concatenate([[0], np.cumsum(out.n[req])])
        owners = np.searchsorted(offsets, [o["instance"] for o in found], side="right") - 1
        firsts, records_of = offsets[owners].tolist(), req[owners].tolist()
        by_record: dict[int, list] = {}
        for o, first, r in zip(found, firsts, records_of):
            o["instance"] -= first
            hits = by_record.get(r)
            if hits is None:
                by_record[r] = [o]
            else:
                hits.append(o)
        records = list(by_record)
        times = out.t[records]
        # The text template has no segment: a segmented monitor's events take the general path.
        t_texts = rfc3339_column(np.maximum(times, 0)) if self.text.usable and out.segment is None else None
        for j, ((r, hits), t) in enumerate(zip(by_record.items(), times.tolist())):
            if t == NO_TIME:
                out.outliers.append((r, hits))       # its event time is the clock: serialised later
                continue
            typ, source, lid = out.keys[r]
            inst_id = ev.instances_id(mon.name, typ, source, lid)
            if t_texts is not None:
                out.outliers.append((r, self.text.text(inst_id, lid, t, t_texts[j], hits, CLOCK_MARK)))
            else:
                segment = None if out.segment is None else out.segment[r]
                out.outliers.append((r, ev.to_json_line(outlier_event(mon, inst_id, lid, t, hits, CLOCK_MARK,
                                                                      segment))))
