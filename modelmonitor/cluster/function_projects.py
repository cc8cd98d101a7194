"""The four Knative Functions projects (``functions/<role>/``) and how ModelMonitor reaches them.

A function's build context is its own folder, and ``kn func build`` installs that folder as the
distribution ``function``. Each project's pyproject depends on ``modelmonitor`` through a wheel
inside the folder (``vendor/modelmonitor-<version>-py3-none-any.whl``, addressed as
``{root:uri}/vendor/...``, which hatchling resolves to the folder wherever the builder installs
it: on the host for the host builder, in the build container for pack). :func:`vendor` builds
that wheel from this repository and copies it into each project: ``make functions`` runs it
before ``kn func build`` / ``kn func deploy``.

    python -m modelmonitor.cluster.function_projects            # all four
    python -m modelmonitor.cluster.function_projects --role drift
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROLES = ("ingest", "outlier", "aggregate", "drift")
REPO_ROOT = Path(__file__).resolve().parent.parent.parent
FUNCTIONS_DIR = REPO_ROOT / "functions"
VERSION = "0.1.0"
WHEEL_NAME = f"modelmonitor-{VERSION}-py3-none-any.whl"
#: Image of each function (``kn func build --image``; what `modelmonitor render` deploys).
IMAGE_TEMPLATE = "ghcr.io/modelmonitor/modelmonitor-{role}:" + VERSION


def build_wheel(out_dir: Path, repo: Path = REPO_ROOT) -> Path:
    """The modelmonitor wheel of ``repo``, built into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out_dir), str(repo)],
                   check=True)
    wheel = out_dir / WHEEL_NAME
    if not wheel.is_file():
        raise FileNotFoundError(f"pip wheel made no {WHEEL_NAME} in {out_dir}")
    return wheel


def vendor(roles=ROLES, functions_dir: Path = FUNCTIONS_DIR, wheel: Path | None = None) -> list[Path]:
    """Copy the modelmonitor wheel into ``<functions_dir>/<role>/vendor/`` for each role."""
    with tempfile.TemporaryDirectory(prefix="mm-wheel-") as tmp:
        wheel = wheel or build_wheel(Path(tmp))
        placed = []
        for role in roles:
            target = functions_dir / role / "vendor"
            target.mkdir(parents=True, exist_ok=True)
            placed.append(Path(shutil.copy2(wheel, target / WHEEL_NAME)))
        return placed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelmonitor.cluster.function_projects",
                                     description="Vendor the modelmonitor wheel into the function projects.")
    parser.add_argument("--role", choices=ROLES, action="append", help="only this role (repeatable)")
    args = parser.parse_args(argv)
    for path in vendor(tuple(args.role or ROLES)):
        print(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
