"""`modelmonitor deadletters list|redrive|purge`: the local dead-letter log of `modelmonitor run`.

The log lives in the run's state dir (its private redis-server). While the run is up, the
commands use its server (a redrive is delivered at once); otherwise they start that server on
the state dir for the moment of the command (a redrive is delivered when the run starts again).
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from datetime import datetime, timezone
from typing import Iterator

from modelmonitor.local.broker import RedisStreamLog
from modelmonitor.local.redis_server import RedisServer, connect
from modelmonitor.local.run_state import RUN_FILE, default_state_dir, run_alive


@contextlib.contextmanager
def open_dead_letter_log(spec, state_dir: str | None) -> Iterator[RedisStreamLog]:
    state_dir = os.path.abspath(state_dir or default_state_dir(spec))
    if not os.path.isdir(state_dir):
        raise FileNotFoundError(f"no state dir {state_dir}: `modelmonitor run` has not run with it "
                                f"(pass --state-dir as given to run)")
    url = None
    try:
        with open(os.path.join(state_dir, RUN_FILE)) as fh:
            doc = json.load(fh)
        if run_alive(doc):
            url = doc.get("logRedisUrl")
    except (OSError, ValueError, KeyError, TypeError):
        pass
    server = None
    if url is None:
        server = RedisServer(durable=True, directory=state_dir).start()
        url = server.url
    client = connect(url, socket_timeout=30)
    try:
        yield RedisStreamLog(client, spec.namespace, spec.broker)
    finally:
        client.close()
        if server is not None:
            server.stop()


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def deadletters_from_args(args) -> int:
    from modelmonitor.core.spec import load_monitor
    spec = load_monitor(args.monitor)
    with open_dead_letter_log(spec, args.state_dir) as dlog:
        if args.action == "list":
            letters = [d for d in dlog.dead_letters()
                       if not args.trigger or d.trigger == args.trigger]
            if args.json:
                print(json.dumps([d.summary() for d in letters], indent=2))
                return 0
            for d in letters:
                s = d.summary()
                print(f"{s['id']}  {_when(s['timeMs'])}  trigger {s['trigger']}  event {s['eventId']} "
                      f"({s['type']})  {s['reason']}")
            print(f"{len(letters)} dead letters", file=sys.stderr)
            return 0
        ids = args.ids or None
        if args.action == "redrive":
            n = dlog.redrive(ids=ids, trigger=args.trigger)
            print(f"redrove {n} dead letters into the broker log of {spec.namespace}/{spec.broker}")
            return 0
        if args.action == "purge":
            if ids is None and args.trigger:
                ids = [d.id for d in dlog.dead_letters() if d.trigger == args.trigger]
            n = dlog.purge(ids)
            print(f"deleted {n} dead letters")
            return 0
    raise SystemExit(f"modelmonitor deadletters: unknown action {args.action!r}")
