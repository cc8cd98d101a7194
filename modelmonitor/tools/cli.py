"""The `modelmonitor` command."""
from __future__ import annotations

import argparse
import json
import os
import sys

from modelmonitor.tools.preflight import (UsageError, check_input_file, check_port_free, check_redis_binary,
                                          check_redis_url, check_trigger_files, load_monitor_and_baseline)


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
    if spec.segment is not None:
        seg = spec.segment
        print(f"  per segment of {seg.source}: at most {seg.max_segments}, default '{seg.default}', "
              f"a slot freed after {format_duration(seg.retention_ms)} without instances"
              + (f"; '{seg.compare[0]}' compared with '{seg.compare[1]}' per window" if seg.compare else ""))
    return 0


def cmd_baseline(args) -> int:
    from modelmonitor.core.baseline import build_baseline_file, describe_inference
    monitor = None
    check_input_file(args.input, "--input")
    if args.monitor:
        from modelmonitor.core.spec import SpecError, load_monitor
        check_input_file(args.monitor, "--monitor")
        try:
            monitor = load_monitor(args.monitor)
        except SpecError as exc:
            raise UsageError(f"{args.monitor}: {exc}") from None
    features = args.features.split(",") if args.features else None
    categorical = [c for c in args.categorical.split(",") if c] if args.categorical else None
    if categorical and monitor is not None:
        raise UsageError("--categorical: the types come from --monitor; give one or the other")
    try:
        doc = build_baseline_file(args.input, args.output, bins=args.bins, feature_names=features, monitor=monitor,
                                  categorical=categorical)
    except (OSError, ValueError) as exc:
        raise UsageError(" ".join(str(exc).split())) from None
    if monitor is None:
        for line in describe_inference(doc):
            print(line)
    print(f"wrote {args.output}: {len(doc['features'])} features from {doc.get('rows', '?')} rows, {args.bins} bins")
    return 0


def cmd_replay(args) -> int:
    from modelmonitor.core.stored_logs import StoredLogError, is_stored_logs, stored_log_chunks
    from modelmonitor.tools.replay import run_replay
    stored = is_stored_logs(args.input)
    if not (stored and os.path.isdir(args.input)):
        check_input_file(args.input, "--input")
    load_monitor_and_baseline(args.monitor, args.baseline)
    if args.batch < 1:
        raise UsageError(f"--batch must be at least 1, got {args.batch}")
    if args.workers is not None and args.workers < 0:
        raise UsageError(f"--workers must be 0 or more, got {args.workers}")
    if args.engine == "columnar" and args.redis:
        raise UsageError("--redis is for the per-event engine; the columnar engine keeps its state in process")
    per_event = args.engine == "per-event" or (args.engine is None and args.redis)
    if per_event and args.redis:
        check_redis_url(args.redis)
    elif per_event:
        check_redis_binary()
    try:
        # KServe's stored log batches (a .json/.csv/.parquet file or a folder) become logger events.
        chunks = (lambda: stored_log_chunks(args.input, args.event_time, args.batch)) if stored else None
        stats = run_replay(args.monitor, args.input, args.output, baseline_path=args.baseline,
                           redis_url=args.redis, progress=None if args.quiet else sys.stderr, batch=args.batch,
                           engine=args.engine, workers=args.workers, chunks=chunks)
    except (OSError, StoredLogError) as exc:
        raise UsageError(str(exc)) from None
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
    check_input_file(args.monitor, "monitor")
    try:
        sys.stdout.write(render_monitor_file(args.monitor, image=args.image))
    except SpecError as exc:
        raise UsageError(f"{args.monitor}: {exc}") from None
    except (OSError, ValueError) as exc:
        raise UsageError(" ".join(str(exc).split())) from None
    return 0


def cmd_convert(args) -> int:
    from modelmonitor.cluster.convert import convert_file
    check_input_file(args.monitor, "monitor")
    try:
        sys.stdout.write(convert_file(args.monitor))
    except (OSError, ValueError) as exc:
        raise UsageError(" ".join(str(exc).split())) from None
    return 0


def cmd_report(args) -> int:
    from modelmonitor.tools.report import run_report_command
    check_input_file(args.events, "events file")
    if args.monitor:
        load_monitor_and_baseline(args.monitor, args.baseline)
    elif args.baseline:
        check_input_file(args.baseline, "--baseline")
    try:
        return run_report_command(args.events, args.out, title=args.title, quiet=args.quiet,
                                  monitor=args.monitor, baseline=args.baseline)
    except (OSError, ValueError) as exc:
        raise UsageError(" ".join(str(exc).split())) from None


def cmd_run(args) -> int:
    from modelmonitor.local.runner import parse_replicas, run_from_args
    load_monitor_and_baseline(args.monitor, args.baseline)
    check_trigger_files(args.subscribe)
    try:
        parse_replicas(args.replicas)
    except SystemExit as exc:
        raise UsageError(str(exc.code).removeprefix("modelmonitor run: ")) from None
    if args.redis:
        check_redis_url(args.redis)
    else:
        check_redis_binary()
    check_port_free(args.host, args.port)    # a busy --metrics-port only loses the metrics: run says so
    try:
        return run_from_args(args)
    except (OSError, RuntimeError) as exc:       # e.g. redis-server or a function did not start
        raise UsageError(f"could not start: {' '.join(str(exc).split())}") from None


def cmd_deadletters(args) -> int:
    from modelmonitor.core.spec import SpecError
    from modelmonitor.local.deadletters import deadletters_from_args
    try:
        return deadletters_from_args(args)
    except SpecError as exc:
        raise UsageError(f"{args.monitor}: {exc}") from None
    except (OSError, RuntimeError) as exc:
        raise UsageError(" ".join(str(exc).split())) from None


def cmd_demo(args) -> int:
    from modelmonitor.tools.demo import run_demo
    check_redis_binary()
    return run_demo(args)


def cmd_bench(args) -> int:
    from modelmonitor.tools.bench import run_bench
    check_redis_binary()
    return run_bench(args)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows every option's default (when it has one) after its help text."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("%(default)" in text or not action.option_strings or action.default is None
                or action.default is False or action.default == [] or action.default is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("modelmonitor")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="modelmonitor", formatter_class=_HelpFormatter,
                                description="Streaming monitoring for KServe models: outliers, window "
                                            "statistics and drift as CloudEvents.")
    p.add_argument("--version", action="version", version=f"modelmonitor {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, formatter_class=_HelpFormatter)

    def output_option(parser, help_text: str, **kwargs) -> None:
        # --output everywhere; --out, the spelling some commands had, stays an alias.
        parser.add_argument("--output", "--out", dest=kwargs.pop("dest", "output"), metavar="PATH",
                            help=help_text, **kwargs)

    s = command("validate", "check a ModelMonitor file (and its baseline file)")
    s.add_argument("monitor", help="ModelMonitor YAML file")
    s.set_defaults(func=cmd_validate)

    s = command("baseline", "build a baseline from training data (CSV or Parquet)")
    s.add_argument("--input", required=True, metavar="FILE", help="training data: .csv (header row) or .parquet")
    output_option(s, "baseline JSON file to write", required=True)
    s.add_argument("--bins", type=int, default=20, help="equal-width histogram bins per numerical feature")
    s.add_argument("--features", metavar="A,B,...",
                   help="comma-separated columns to use (default: the monitor's features, else every column)")
    s.add_argument("--monitor", metavar="MONITOR.yaml",
                   help="take feature names and types from this ModelMonitor (default: infer them per column)")
    s.add_argument("--categorical", metavar="A,B,...",
                   help="without --monitor: treat these columns as categorical, even if they hold numbers "
                        "(a column mixing numbers and text is refused unless listed here)")
    s.set_defaults(func=cmd_baseline)

    s = command("replay", "backtest recorded logger events (JSON lines) through the pipeline")
    s.add_argument("monitor", help="ModelMonitor YAML file")
    s.add_argument("--input", required=True, metavar="FILE",
                   help="recorded logger events, one structured-mode CloudEvent JSON per line (.jsonl); or "
                        "KServe's stored log batches: a .json, .csv or .parquet batch, or a folder of them")
    s.add_argument("--event-time", default="mtime", metavar="mtime|metadata:HEADER",
                   help="event time of stored CSV/Parquet log records, which carry none: the batch file's "
                        "modification time (default) or a request header forwarded in the logger's metadata")
    output_option(s, "where to write every emitted event (JSON lines)", required=True)
    s.add_argument("--baseline", metavar="FILE", help="baseline JSON (default: the monitor's spec.baseline.file)")
    s.add_argument("--engine", choices=("columnar", "per-event"),
                   help="columnar (default: in process, vectorised, no Redis) or per-event (the live handlers "
                        "one event at a time on Redis); both write the same bytes")
    s.add_argument("--redis", metavar="URL",
                   help="Redis for the per-event engine (default: start a private redis-server); "
                        "implies --engine per-event")
    s.add_argument("--batch", type=int, default=8192, help="input lines per chunk (does not change results)")
    s.add_argument("--workers", type=int, metavar="N",
                   help="decoding processes of the columnar engine (default: 1 on a multi-core machine; "
                        "0 decodes in process)")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    s.set_defaults(func=cmd_replay)

    s = command("run", "run the pipeline locally: broker, the four functions, Redis")
    s.add_argument("monitor", help="ModelMonitor YAML file")
    s.add_argument("--baseline", metavar="FILE", help="baseline JSON (default: the monitor's spec.baseline.file)")
    s.add_argument("--redis", metavar="URL",
                   help="Redis to keep the windows in (default: start a private, durable redis-server)")
    s.add_argument("--host", default="127.0.0.1", help="address the broker listens on")
    s.add_argument("--port", type=int, default=8080, help="broker port (the KServe logger's target; 0: any free port)")
    s.add_argument("--subscribe", action="append", default=[], metavar="TRIGGER.yaml",
                   help="a Trigger YAML whose subscriber is a uri, e.g. an alert receiver (repeatable)")
    s.add_argument("--replicas", action="append", default=[], metavar="ROLE=N",
                   help="run N processes of a function, ROLE one of ingest, outlier, aggregate, drift "
                        "(repeatable; default: 1 each)")
    s.add_argument("--kafka-bootstrap", metavar="HOST:PORT",
                   help="also read logger events from Kafka and write the analysis topics of spec.sinks.kafka "
                        "(default: no Kafka)")
    s.add_argument("--kafka-topic", default="inference-logs", metavar="TOPIC", help="Kafka topic the logger events are read from")
    s.add_argument("--events-out", metavar="FILE",
                   help="append every event the broker accepts to this JSON lines file, with its arrival time "
                        "(what `modelmonitor report` reads)")
    s.add_argument("--tick", type=float, default=5.0, metavar="SECONDS",
                   help="seconds between aggregator ticks (the PingSource)")
    s.add_argument("--metrics-port", type=int, default=9464, metavar="PORT",
                   help="Prometheus endpoint for every function and the broker (0: off)")
    s.add_argument("--log-dir", metavar="DIR",
                   help="keep the function processes' logs here (default: a temporary folder removed on exit)")
    s.add_argument("--state-dir", metavar="DIR",
                   help="where the broker log, its dead letters and (without --redis) the window state are "
                        "kept; a run started again on it continues "
                        "(default: ~/.local/state/modelmonitor/<namespace>/<monitor>)")
    s.add_argument("--no-alerts", action="store_true", help="do not print drift alerts on the console")
    s.set_defaults(func=cmd_run)

    s = command("deadletters", "list, redrive or purge the dead letters `modelmonitor run` kept")
    s.add_argument("action", choices=["list", "redrive", "purge"],
                   help="list them; redrive: deliver them again (to their Trigger only); purge: delete them")
    s.add_argument("monitor", help="ModelMonitor YAML file")
    s.add_argument("--state-dir", metavar="DIR", help="the state dir `run` used (default: the same as run's)")
    s.add_argument("--trigger", metavar="NAME", help="only the dead letters of this Trigger")
    s.add_argument("--id", dest="ids", action="append", metavar="ID", help="only this dead letter (repeatable)")
    s.add_argument("--json", action="store_true", help="list as JSON")
    s.set_defaults(func=cmd_deadletters)

    s = command("render", "print the Kubernetes manifests of a monitor (for GitOps, without the operator)")
    s.add_argument("monitor", help="ModelMonitor YAML file")
    s.add_argument("--image", metavar="IMAGE",
                   help="the functions' container image, built from the root func.yaml and pushed first "
                        "(default: the image named in the output's header)")
    s.set_defaults(func=cmd_render)

    s = command("convert", "convert a thesis (monitoring.hops.io) ModelMonitor to this project's resource")
    s.add_argument("monitor", help="thesis ModelMonitor YAML file")
    s.set_defaults(func=cmd_convert)

    s = command("report", "PNG plots and an HTML page from an events file")
    s.add_argument("events", help="JSON lines, one structured-mode CloudEvent per line "
                                  "(from `replay --output` or `run --events-out`)")
    output_option(s, "directory for index.html, summary.json and the PNG files", dest="out", default="report")
    s.add_argument("--title", help="page title (default: 'ModelMonitor report: <file name>')")
    s.add_argument("--monitor", metavar="MONITOR.yaml",
                   help="the monitor the events came from: its watermark delay gives the window close latency, "
                        "its baseline file the training statistics on the plots")
    s.add_argument("--baseline", metavar="FILE",
                   help="baseline JSON drawn on the statistics plots (default: the --monitor's spec.baseline.file)")
    s.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    s.set_defaults(func=cmd_report)

    s = command("demo", "the thesis experiment end to end over HTTP on this machine")
    output_option(s, "directory for the events, the summary and the report (emptied first)", dest="out",
                  default="demo-out")
    s.add_argument("--requests", type=int, default=12_000, help="logger requests to send")
    s.add_argument("--seconds", type=float, default=100.0, help="wall-clock length of the stream")
    s.add_argument("--time-scale", type=float, default=None,
                   help="event-time seconds per wall second (default: so each stage spans about 10 windows)")
    s.set_defaults(func=cmd_demo)

    s = command("bench", "measure throughput and latency against the targets")
    s.add_argument("--json", action="store_true", help="print the results as JSON")
    s.add_argument("--quick", action="store_true", help="smaller runs (about a minute)")
    s.add_argument("--http-only", action="store_true",
                   help="only the HTTP pipeline runs (steady and at 1,000 events/s offered)")
    output_option(s, "also write the results as JSON to this file", dest="out")
    s.set_defaults(func=cmd_bench)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"modelmonitor {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"modelmonitor {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
