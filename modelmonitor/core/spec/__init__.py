"""The ModelMonitor resource: :mod:`.model` (the spec types, constants and durations) and
:mod:`.parse` (parse, default and validate a resource into them)."""
from modelmonitor.core.spec.model import (  # noqa: F401
    API_GROUP,
    API_VERSION,
    AlertSpec,
    CATEGORICAL,
    DEFAULT_THRESHOLDS,
    DETECTORS,
    DetectorSpec,
    FEATURE_TYPES,
    Feature,
    KIND,
    MULTIVARIATE_DETECTORS,
    MonitorSpec,
    NUMERICAL,
    OutlierSpec,
    SEQUENTIAL_DEFAULTS,
    SKETCH_DETECTORS,
    SequentialSpec,
    SpecError,
    StatsSpec,
    WindowSpec,
    _DURATION_RE,
    _DURATION_UNITS,
    _NAME_RE,
    format_duration,
    parse_duration)
from modelmonitor.core.spec.parse import (  # noqa: F401
    MAX_PANES_PER_WINDOW,
    MAX_WINDOW_DURATION_MS,
    load_monitor,
    parse_monitor)
