"""Serve one Knative Python function with func-python, as its image does, on a chosen address.

The image `kn func build` makes runs a scaffolded ``service/main.py`` that imports ``new`` (else
``handle``) from the function's distribution ``function`` and calls
``func_python.cloudevent.serve`` with it, bound to ``LISTEN_ADDRESS``. This module does the
same for a function folder (``functions/<role>`` or ``--func-dir``), importing its ``function``
package from that folder, so local runs (`modelmonitor run`, the tests, the demo) go through
the very same middleware, hypercorn and CloudEvent decoding:

    python -m modelmonitor.runtime.serve --role ingest --host 127.0.0.1 --port 8081
    python -m modelmonitor.runtime.serve --func-dir tests/funcs/echo --port 0

`--role ROLE` is shorthand for `--func-dir <repo>/functions/ROLE` (the functions/ folder next to
the modelmonitor package, or `$MODELMONITOR_FUNCTIONS_DIR/ROLE`). SIGTERM and SIGINT stop the
server cleanly: func-python's shutdown calls the function's ``stop()``.

>>> build_parser().parse_args(["--role", "ingest"]).port
8080
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

#: Environment variable naming the folder that holds one sub-folder per function role.
FUNCTIONS_DIR_ENV = "MODELMONITOR_FUNCTIONS_DIR"


def functions_root() -> Path:
    """The folder holding `<role>/function/` for the four roles.

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
    """`functions/<role>` for a role name; a clear error when it holds no function package.

    >>> role_dir("../etc")
    Traceback (most recent call last):
    ...
    ValueError: invalid function role '../etc'
    """
    if not role or "/" in role or "\\" in role or role.startswith("."):
        raise ValueError(f"invalid function role {role!r}")
    path = functions_root() / role
    if not (path / "function" / "__init__.py").is_file():
        raise FileNotFoundError(
            f"no function for role {role!r}: {path / 'function' / '__init__.py'} does not exist "
            f"(pass --func-dir or set {FUNCTIONS_DIR_ENV})")
    return path


def load_function(func_dir: Path):
    """The ``function`` package of a function folder (what the distribution ``function`` is in
    the image), checked to be that folder's and to export ``new`` or ``handle``."""
    func_dir = Path(func_dir).resolve()
    sys.path.insert(0, str(func_dir))
    for name in [m for m in sys.modules if m == "function" or m.startswith("function.")]:
        del sys.modules[name]
    module = importlib.import_module("function")
    loaded = Path(getattr(module, "__file__", "") or "").resolve()
    if loaded != func_dir / "function" / "__init__.py":
        raise ImportError(f"loaded {loaded} instead of {func_dir / 'function' / '__init__.py'}")
    if not callable(getattr(module, "new", None)) and not callable(getattr(module, "handle", None)):
        raise ImportError(f"{loaded} exports neither new() nor handle()")
    return module


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m modelmonitor.runtime.serve",
        description="Serve a Knative Python function (func-python) on a chosen address.")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--func-dir", help="function folder holding the package function/ with new()")
    where.add_argument("--role", help="one of the repository's functions (functions/<role>)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--threads", type=int, default=None,
                        help="worker threads for blocking handlers (sets MODELMONITOR_THREADS)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        func_dir = Path(args.func_dir) if args.func_dir else role_dir(args.role)
        if not (func_dir / "function" / "__init__.py").is_file():
            raise FileNotFoundError(f"{func_dir / 'function' / '__init__.py'} does not exist")
    except (ValueError, FileNotFoundError) as err:
        print(f"serve: {err}", file=sys.stderr)
        return 2
    host = f"[{args.host}]" if ":" in args.host else args.host
    os.environ["LISTEN_ADDRESS"] = f"{host}:{args.port}"
    if args.threads:
        os.environ["MODELMONITOR_THREADS"] = str(args.threads)
    module = load_function(func_dir)
    # Imported late so --help and argument errors stay fast.
    from func_python.cloudevent import serve
    serve(module.new if callable(getattr(module, "new", None)) else module.handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
