"""The ModelMonitor resource's model: constants, durations, and the frozen spec types
(:class:`MonitorSpec` and its parts) that :mod:`modelmonitor.core.spec.parse` builds."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


API_GROUP = "monitoring.modelmonitor.io"
API_VERSION = f"{API_GROUP}/v1alpha1"
KIND = "ModelMonitor"

NUMERICAL = "numerical"
CATEGORICAL = "categorical"
FEATURE_TYPES = (NUMERICAL, CATEGORICAL)

# Drift detectors: name in the spec -> which feature types it applies to.
DETECTORS = {
    "jensenShannon": (NUMERICAL, CATEGORICAL),
    "kullbackLeibler": (NUMERICAL,),
    "psi": (NUMERICAL,),
    "hellinger": (NUMERICAL,),
    "kolmogorovSmirnov": (NUMERICAL,),
    "wasserstein": (NUMERICAL,),
    "wassersteinNorm": (NUMERICAL,),
    "chiSquare": (CATEGORICAL,),
    "unseenShare": (CATEGORICAL,),
    # The thesis' window checks (modelmonitor.detect.window_rules).
    "maxAboveBaseline": (NUMERICAL,),
    "minBelowBaseline": (NUMERICAL,),
    "meanShift": (NUMERICAL,),
    "stddevRatio": (NUMERICAL,),
    # Multivariate: one score per window over all numerical features, not per feature.
    "hotelling": (),
    "covarianceChange": (),
}
MULTIVARIATE_DETECTORS = ("hotelling", "covarianceChange")
DEFAULT_THRESHOLDS = {
    "jensenShannon": 0.1, "kullbackLeibler": 0.1, "psi": 0.2, "hellinger": 0.15,
    "kolmogorovSmirnov": 0.1, "wasserstein": 0.5, "wassersteinNorm": 0.1,
    # Pearson statistic over the baseline's categories (chi-square with K-1 dof under no drift),
    # not a p-value; unseen categories are the unseenShare rule's (a share in [0, 1]).
    "chiSquare": 30.0, "unseenShare": 0.05,
    "maxAboveBaseline": 0.0, "minBelowBaseline": 0.0, "meanShift": 2.0, "stddevRatio": 2.0,
    # chi-square statistics with p and p(p+1)/2 dof: ~ the 99.9% quantiles for p = 4 features.
    "hotelling": 20.0, "covarianceChange": 30.0,
}
# Detectors computed from the quantile sketches that windows then carry (``StatsSpec.quantile_sketch``).
SKETCH_DETECTORS = ("wasserstein", "wassersteinNorm", "kolmogorovSmirnov")

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_DURATION_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


class SpecError(ValueError):
    """An invalid ModelMonitor; ``field`` is the dotted path of the offending field."""

    def __init__(self, field_path: str, message: str):
        super().__init__(f"{field_path}: {message}")
        self.field = field_path
        self.reason = message


def parse_duration(value: Any, field_path: str) -> int:
    """Milliseconds from ``15s``/``500ms``/``5m``/``1h`` strings or integer milliseconds.

    >>> parse_duration("1.5s", "x"), parse_duration(250, "x"), parse_duration("2m", "x")
    (1500, 250, 120000)
    """
    if isinstance(value, bool):
        raise SpecError(field_path, f"expected a duration like '15s' or integer milliseconds, got {value!r}")
    if isinstance(value, int):
        ms = value
    elif isinstance(value, float) and value.is_integer():
        ms = int(value)
    elif isinstance(value, str):
        if value.strip().isdigit():
            ms = int(value)
        else:
            m = _DURATION_RE.match(value)
            if not m:
                raise SpecError(field_path, f"{value!r} is not a duration (use e.g. '15s', '500ms', '5m' or integer milliseconds)")
            amount = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
            if not amount.is_integer():
                raise SpecError(field_path, f"{value!r} is not a whole number of milliseconds")
            ms = int(amount)
    else:
        raise SpecError(field_path, f"expected a duration like '15s' or integer milliseconds, got {value!r}")
    if ms < 0:
        raise SpecError(field_path, f"duration must not be negative, got {value!r}")
    return ms


def format_duration(ms: int) -> str:
    """The shortest exact string form: 15000 -> '15s', 1500 -> '1500ms'."""
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


@dataclass(frozen=True)
class Feature:
    name: str
    type: str
    index: int  # position in the request rows (V1 lists) and in `instances` rows


@dataclass(frozen=True)
class WindowSpec:
    duration_ms: int
    slide_ms: int
    watermark_delay_ms: int
    idle_timeout_ms: int
    max_clock_skew_ms: int

    @property
    def tumbling(self) -> bool:
        return self.slide_ms == self.duration_ms


@dataclass(frozen=True)
class StatsSpec:
    percentiles: tuple[float, ...] = (25.0, 50.0, 75.0)
    iqr: bool = True
    stddev_type: str = "sample"        # sample (ddof=1) | population (ddof=0)
    covariance: bool = True
    covariance_type: str = "sample"
    correlation: bool = True
    quantile_sketch: bool = False      # window.closed carries each numerical feature's quantileSketch


@dataclass(frozen=True)
class OutlierSpec:
    stddev_k: float | None = 3.0        # |x - mean_b| > k * stddev_b
    range: bool = True                  # x outside baseline [min, max]
    iqr_k: float | None = None          # Tukey fences Q1 - k*IQR, Q3 + k*IQR
    mahalanobis_threshold: float | None = None  # squared distance
    unseen_category: bool = True

    @property
    def enabled(self) -> bool:
        return bool(self.stddev_k is not None or self.range or self.iqr_k is not None
                    or self.mahalanobis_threshold is not None or self.unseen_category)


@dataclass(frozen=True)
class DetectorSpec:
    name: str
    threshold: float
    show_all: bool = False


@dataclass(frozen=True)
class SequentialSpec:
    method: str                  # cusum | pageHinkley
    threshold: float
    drift: float


# Chosen by simulation (modelmonitor/tools/bench_detect.py, docs/benchmarks.md "Alert rules").
SEQUENTIAL_DEFAULTS = {"cusum": {"threshold": 1.5, "drift": 0.8}, "pageHinkley": {"threshold": 2.0, "drift": 0.1}}


@dataclass(frozen=True)
class AlertSpec:
    min_window_count: int = 100
    consecutive_windows: int = 1
    cooldown_ms: int = 300_000
    sequential: SequentialSpec | None = None   # replaces consecutive_windows when set


#: Segment values: what may name a segment (a model version, a tenant): it becomes part of
#: Redis keys and event ids, so no ':', '@', '/' or spaces.
SEGMENT_VALUE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
#: Most segments a monitor may watch at once (each one multiplies the window state and the
#: work of closing a window).
MAX_SEGMENTS_LIMIT = 100


@dataclass(frozen=True)
class SegmentSpec:
    """``spec.segment``: where a logger event's segment comes from and how many are watched."""
    extension: str | None = None        # a CloudEvent extension attribute (e.g. modelversion)
    metadata_header: str | None = None  # a header inside KServe's ``metadata`` extension
    max_segments: int = 10
    default: str = "default"            # the segment of events with no value
    retention_ms: int = 86_400_000      # a segment unseen this long (event time) frees its slot
    compare: tuple[str, str] | None = None   # (candidate, reference): segments.compared per window

    @property
    def source(self) -> str:
        return (f"extension {self.extension!r}" if self.extension is not None
                else f"metadata header {self.metadata_header!r}")


@dataclass(frozen=True)
class MonitorSpec:
    name: str
    namespace: str
    inference_service: str
    model_name: str
    model_version: str
    features: tuple[Feature, ...]
    predictions: tuple[Feature, ...]
    window: WindowSpec
    stats: StatsSpec
    outliers: OutlierSpec
    drift: tuple[DetectorSpec, ...]
    alerts: AlertSpec
    baseline_ref: dict | None           # {"file": abs path} | {"configMapRef": {...}} | {"inline": {...}}
    baseline_inline: dict | None        # baseline document when given inline or read from a file
    redis_secret_ref: dict | None
    broker: str
    sinks: dict
    functions: dict
    late_events: bool = False
    dead_letter_sink: dict | None = None   # Knative Destination {uri} or {ref}
    delivery: dict | None = None           # {retry, backoffPolicy, backoffDelay, timeout}
    segment: SegmentSpec | None = None     # windows, drift and alerts per segment when set
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def feature(self, name: str) -> Feature:
        for f in self.features + self.predictions:
            if f.name == name:
                return f
        raise KeyError(name)


