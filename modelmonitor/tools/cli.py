"""The `modelmonitor` command."""
from __future__ import annotations

import argparse
import json
import os
import sys


def _die(message: str, code: int = 2) -> None:
    print(f"modelmonitor: {message}", file=sys.stderr)
    raise SystemExit(code)


def cmd_validate(args) -> int:
    from modelmonitor.core.spec import SpecError, format_duration, load_monitor
    try:
        spec = load_monitor(args.monitor)
        if spec.baseline_ref and "file" in spec.baseline_ref:
            from modelmonitor.core.baseline import load_baseline
            try:
                load_baseline(spec.baseline_ref["file"])
            except (OSError, ValueError) as exc:
                raise SpecError("spec.baseline.file", str(exc)) from None
    except SpecError as exc:
        print(f"{args.monitor}: invalid: {exc}", file=sys.stderr)
        return 1
    w = spec.window
    kind = "tumbling" if w.tumbling else f"sliding every {format_duration(w.slide_ms)}"
    print(f"{args.monitor}: valid ModelMonitor '{spec.name}' ({len(spec.features)} features, "
          f"{format_duration(w.duration_ms)} {kind} windows, watermark delay {format_duration(w.watermark_delay_ms)}, "
          f"{len(spec.drift)} drift detectors)")
    return 0


def cmd_baseline(args) -> int:
    from modelmonitor.core.baseline import build_baseline_file
    monitor = None
    if args.monitor:
        from modelmonitor.core.spec import SpecError, load_monitor
        try:
            monitor = load_monitor(args.monitor)
        except SpecError as exc:
            _die(f"{args.monitor}: {exc}")
    features = args.features.split(",") if args.features else None
    try:
        doc = build_baseline_file(args.input, args.output, bins=args.bins, feature_names=features, monitor=monitor)
    except (OSError, ValueError) as exc:
        _die(str(exc), 1)
    print(f"wrote {args.output}: {len(doc['features'])} features from {doc.get('rows', '?')} rows, {args.bins} bins")
    return 0


def cmd_replay(args) -> int:
    from modelmonitor.tools.replay import run_replay
    from modelmonitor.core.spec import SpecError
    try:
        stats = run_replay(args.monitor, args.input, args.output, baseline_path=args.baseline,
                           redis_url=args.redis, progress=None if args.quiet else sys.stderr, batch=args.batch)
    except SpecError as exc:
        _die(f"{args.monitor}: {exc}", 1)
    except OSError as exc:
        _die(str(exc), 1)
    summary = stats.as_dict()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"replayed {stats.lines:,} lines: {stats.instances:,} instances, {stats.windows} windows, "
              f"{stats.outlier_events} outlier events, {stats.drift_alerts} drift alerts, {stats.rejected} rejected, "
              f"{stats.duplicates} duplicates, {stats.late_requests} late requests in {stats.seconds:.2f} s "
              f"({summary['instancesPerSecond'] or 0:,} instances/s) -> {args.output}")
    return 0


def cmd_render(args) -> int:
    from modelmonitor.cluster.render import render_monitor_file
    from modelmonitor.core.spec import SpecError
    try:
        sys.stdout.write(render_monitor_file(args.monitor, image=args.image))
    except SpecError as exc:
        _die(f"{args.monitor}: {exc}", 1)
    except (OSError, ValueError) as exc:
        _die(str(exc), 1)
    return 0


def cmd_convert(args) -> int:
    from modelmonitor.cluster.convert import convert_file
    try:
        sys.stdout.write(convert_file(args.monitor))
    except (OSError, ValueError) as exc:
        _die(str(exc), 1)
    return 0


def cmd_report(args) -> int:
    from modelmonitor.tools.report import write_report
    paths = write_report(args.events, args.out, title=args.title)
    print(f"wrote {paths.get('html', args.out)}")
    return 0


def cmd_run(args) -> int:
    from modelmonitor.local.runner import run_from_args
    return run_from_args(args)


def cmd_demo(args) -> int:
    from modelmonitor.tools.demo import run_demo
    return run_demo(args)


def cmd_bench(args) -> int:
    from modelmonitor.tools.bench import run_bench
    return run_bench(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="modelmonitor", description="Streaming monitoring for KServe models")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("validate", help="check a ModelMonitor file")
    s.add_argument("monitor")
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("baseline", help="build a baseline from training data (CSV or Parquet)")
    s.add_argument("--input", required=True)
    s.add_argument("--output", required=True)
    s.add_argument("--bins", type=int, default=20)
    s.add_argument("--features", help="comma-separated columns (default: all, or the monitor's)")
    s.add_argument("--monitor", help="take feature names and types from this ModelMonitor")
    s.set_defaults(func=cmd_baseline)

    s = sub.add_parser("replay", help="backtest recorded logger events (JSON lines)")
    s.add_argument("monitor")
    s.add_argument("--input", required=True)
    s.add_argument("--output", required=True)
    s.add_argument("--baseline")
    s.add_argument("--redis", help="Redis URL (default: a private redis-server)")
    s.add_argument("--batch", type=int, default=2000, help="instances events per Redis script call")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_replay)

    s = sub.add_parser("run", help="run the pipeline locally: broker, functions, Redis")
    s.add_argument("monitor")
    s.add_argument("--baseline")
    s.add_argument("--redis")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--subscribe", action="append", default=[], metavar="TRIGGER.yaml")
    s.add_argument("--replicas", action="append", default=[], metavar="ROLE=N")
    s.add_argument("--kafka-bootstrap")
    s.add_argument("--kafka-topic", default="inference-logs")
    s.add_argument("--events-out", help="also write every event the broker sees to this JSONL file")
    s.add_argument("--tick", type=float, default=5.0, help="seconds between aggregator ticks (PingSource)")
    s.add_argument("--metrics-port", type=int, default=9464,
                   help="Prometheus endpoint for every function and the broker (0: off)")
    s.add_argument("--log-dir", help="where the function processes log (default: a new temporary folder)")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("render", help="print the Kubernetes manifests of a monitor")
    s.add_argument("monitor")
    s.add_argument("--image")
    s.set_defaults(func=cmd_render)

    s = sub.add_parser("convert", help="convert a thesis (monitoring.hops.io) ModelMonitor")
    s.add_argument("monitor")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("report", help="PNG/HTML report of an events file")
    s.add_argument("events")
    s.add_argument("--out", required=True)
    s.add_argument("--title")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("demo", help="the thesis experiment end to end over HTTP")
    s.add_argument("--out", default="demo-out")
    s.add_argument("--requests", type=int, default=12_000)
    s.add_argument("--seconds", type=float, default=100.0, help="wall-clock length of the stream")
    s.add_argument("--time-scale", type=float, default=None,
                   help="event-time seconds per wall second (default: so the stream spans 15 windows per stage)")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("bench", help="measure throughput and latency against the targets")
    s.add_argument("--json", action="store_true")
    s.add_argument("--quick", action="store_true", help="smaller runs")
    s.add_argument("--out", default=None, help="write the results as JSON to this file")
    s.set_defaults(func=cmd_bench)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
