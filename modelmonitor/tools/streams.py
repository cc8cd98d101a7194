"""The thesis experiment's inference stream, as KServe payload-logger CloudEvents.

Five stages of equal length (thesis section 5.4): normal; 10% outliers beyond 3 standard
deviations; drift (shifted location and wider spread); 10% outliers; normal. Normal instances
are training rows resampled with a little jitter, so normal windows match the baseline.

>>> stream = ThesisStream.from_csv("examples/iris/train.csv", total=10, seed=1)
>>> [s for s, _ in stream.rows()][:3], len(list(stream.rows()))
(['normal', 'normal', 'outliers'], 10)
"""
from __future__ import annotations

import csv
import json
import uuid
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from modelmonitor.core import events as ev

STAGES = ("normal", "outliers", "drift", "outliers", "normal")
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: a fixed start keeps replays identical


def stage_names() -> list[str]:
    """Unique stage labels in order: normal-1, outliers-1, drift, outliers-2, normal-2."""
    seen: dict[str, int] = {}
    out = []
    for s in STAGES:
        seen[s] = seen.get(s, 0) + 1
        out.append(s if STAGES.count(s) == 1 else f"{s}-{seen[s]}")
    return out


@dataclass
class ThesisStream:
    train: np.ndarray            # (n, features) training rows
    total: int = 250_000
    seed: int = 7
    outlier_share: float = 0.10
    drift_shift_sd: float = 1.0  # location shift, in training standard deviations
    drift_scale: float = 1.5     # spread multiplier

    @classmethod
    def from_csv(cls, path: str, columns=FEATURES, **kwargs) -> "ThesisStream":
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [[float(r[c]) for c in columns] for r in csv.DictReader(fh)]
        return cls(np.asarray(rows), **kwargs)

    def stage_of(self, i: int) -> int:
        return min(i * len(STAGES) // self.total, len(STAGES) - 1)

    def rows(self) -> Iterator[tuple[str, list[float]]]:
        """(stage label, instance) for every request, in order."""
        rng = np.random.default_rng(self.seed)
        mean, sd = self.train.mean(axis=0), self.train.std(axis=0, ddof=1)
        lo, hi = self.train.min(axis=0), self.train.max(axis=0)
        labels = stage_names()
        n_feat = self.train.shape[1]
        for i in range(self.total):
            stage = self.stage_of(i)
            # jitter stays inside the training range: normal data must not trip the range rule
            x = np.clip(self.train[rng.integers(len(self.train))] + rng.normal(0, 0.02, n_feat) * sd, lo, hi)
            kind = STAGES[stage]
            if kind == "outliers" and rng.random() < self.outlier_share:
                f = rng.integers(n_feat)
                sign = 1 if rng.random() < 0.5 else -1
                x[f] = mean[f] + sign * (3.0 + rng.uniform(0.5, 2.0)) * sd[f]
            elif kind == "drift":
                x = mean + (x - mean) * self.drift_scale + self.drift_shift_sd * sd
            yield labels[stage], [round(float(v), 4) for v in x]


def logger_events(stream: ThesisStream, *, rate_per_s: float = 177.0, start_ms: int = EPOCH_MS,
                  inference_service: str = "iris", jitter_ms: int = 0, responses: bool = False,
                  seed: int = 11) -> Iterator[tuple[str, dict]]:
    """(stage, structured-mode CloudEvent dict) like KServe's payload logger would send them:
    V1 request bodies, ids shared by request and response, `time` = arrival time."""
    rng = np.random.default_rng(seed)
    step = 1000.0 / rate_per_s
    centroids = None
    if responses:
        centroids = np.quantile(stream.train, [0.2, 0.5, 0.8], axis=0)
    for i, (stage, row) in enumerate(stream.rows()):
        t = start_ms + int(i * step)
        if jitter_ms:
            t -= int(rng.integers(0, jitter_ms + 1))
        rid = str(uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | i))
        base = {"specversion": "1.0", "source": "http://localhost:9081/", "id": rid,
                "time": ev.ms_to_rfc3339(t), "datacontenttype": "application/json",
                "inferenceservicename": inference_service, "namespace": "default",
                "component": "predictor", "endpoint": ""}
        yield stage, dict(base, type=ev.KSERVE_REQUEST, data={"instances": [row]})
        if responses:
            pred = int(np.argmin(np.abs(centroids[:, 2] - row[2])))
            yield stage, dict(base, type=ev.KSERVE_RESPONSE, data={"predictions": [pred]})


def write_jsonl(path: str, stream: ThesisStream, **kwargs) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for _, doc in logger_events(stream, **kwargs):
            fh.write(json.dumps(doc, separators=(",", ":")) + "\n")
            n += 1
    return n
