"""Serve one Knative Python function (parliament runtime) on a chosen host and port.

`python -m parliament DIR` always binds 0.0.0.0:8080, so the local broker (`modelmonitor run`)
and the tests host the very same Flask app themselves: `parliament.server.load(DIR)` imports
`DIR/func.py`, `parliament.server.create(module)` builds the app (POST / invokes `main(context)`,
GET /health/liveness and /health/readiness answer "OK"), and waitress serves it multi-threaded,
exactly as the function image does on Knative, only on another address.

    python -m modelmonitor.runtime.serve --func-dir tests/funcs/echo --port 8081
    python -m modelmonitor.runtime.serve --role ingest --host 127.0.0.1 --port 0

`--role ROLE` is shorthand for `--func-dir <repo>/functions/ROLE` (the functions/ folder next to
the modelmonitor package, or `$MODELMONITOR_FUNCTIONS_DIR/ROLE`). SIGTERM and SIGINT stop the
server cleanly (exit status 0) after the requests in progress finish (waitress waits up to 5 s).

>>> build_parser().parse_args(["--role", "ingest"]).port
8080
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

#: Environment variable naming the folder that holds one sub-folder per function role.
FUNCTIONS_DIR_ENV = "MODELMONITOR_FUNCTIONS_DIR"


def functions_root() -> Path:
    """The folder holding `<role>/func.py` for the four roles.

    The repository keeps `functions/` at its root next to the `modelmonitor/` package (an
    editable install runs from there); `$MODELMONITOR_FUNCTIONS_DIR` overrides that.

    >>> functions_root().name
    'functions'
    """
    override = os.environ.get(FUNCTIONS_DIR_ENV)
    if override:
        return Path(override)
    import modelmonitor
    return Path(modelmonitor.__file__).resolve().parent.parent / "functions"


def role_dir(role: str) -> Path:
    """`functions/<role>` for a role name; a clear error when it holds no func.py.

    >>> role_dir("../etc")
    Traceback (most recent call last):
    ...
    ValueError: invalid function role '../etc'
    """
    if not role or "/" in role or "\\" in role or role.startswith("."):
        raise ValueError(f"invalid function role {role!r}")
    path = functions_root() / role
    if not (path / "func.py").is_file():
        raise FileNotFoundError(
            f"no function for role {role!r}: {path / 'func.py'} does not exist "
            f"(pass --func-dir or set {FUNCTIONS_DIR_ENV})")
    return path


def load_function(func_dir: Path, load=None):
    """Import `func_dir/func.py` as the module `func`, through parliament's loader.

    parliament's `load` *appends* the folder to sys.path and runs `import func`, so any other
    `func.py` earlier on the path (the repository root has one, and `python -m` puts the
    working directory first) would win. The folder goes to the front here and the loaded
    file is checked.
    """
    if load is None:
        from parliament.server import load
    func_dir = Path(func_dir).resolve()
    sys.path.insert(0, str(func_dir))
    sys.modules.pop("func", None)
    module = load(str(func_dir))
    loaded = Path(getattr(module, "__file__", "") or "").resolve()
    if loaded != func_dir / "func.py":
        raise ImportError(f"loaded {loaded} instead of {func_dir / 'func.py'}")
    if not callable(getattr(module, "main", None)):
        raise ImportError(f"{loaded} defines no main(context)")
    return module


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m modelmonitor.runtime.serve",
        description="Serve a parliament (Knative Python) function with waitress.")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--func-dir", help="folder holding func.py with main(context)")
    where.add_argument("--role", help="one of the repository's functions (functions/<role>)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--threads", type=int, default=16,
                        help="waitress worker threads (concurrent main() calls)")
    parser.add_argument("--connection-limit", type=int, default=256,
                        help="open connections waitress accepts before queueing in the kernel")
    parser.add_argument("--channel-timeout", type=int, default=120,
                        help="seconds an idle connection stays open")
    return parser


def _exit_on_signal(signum, frame):  # noqa: ARG001 - signal handler signature
    # waitress' run loop catches SystemExit, shuts its worker threads down and returns,
    # so raising it here is the clean way out of serve().
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        func_dir = Path(args.func_dir) if args.func_dir else role_dir(args.role)
    except (ValueError, FileNotFoundError) as err:
        print(f"serve: {err}", file=sys.stderr)
        return 2
    if not (func_dir / "func.py").is_file():
        print(f"serve: {func_dir / 'func.py'} does not exist", file=sys.stderr)
        return 2

    # Imported late so --help and argument errors stay fast.
    import waitress
    from parliament import server as parliament_server

    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGINT, _exit_on_signal)
    app = parliament_server.create(load_function(func_dir, parliament_server.load))
    waitress.serve(app, host=args.host, port=args.port, threads=args.threads,
                   connection_limit=args.connection_limit,
                   channel_timeout=args.channel_timeout,
                   ident="modelmonitor-function")
    return 0


if __name__ == "__main__":
    sys.exit(main())
