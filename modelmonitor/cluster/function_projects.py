"""The four Knative Functions projects (``functions/<role>/``) and how ModelMonitor reaches them.

A function's build context is its own folder, and ``kn func build`` installs that folder as the
distribution ``function``. Each project's pyproject depends on ``modelmonitor`` through a wheel
inside the folder (``vendor/modelmonitor-<version>-py3-none-any.whl``, addressed as
``{root:uri}/vendor/...``, which hatchling resolves to the folder wherever the builder installs
it: on the host for the host builder, in the build container for pack). :func:`vendor` builds
that wheel from this repository and copies it into each project: ``make functions`` runs it
before ``kn func build`` / ``kn func deploy``.

The legacy parliament project (``functions/legacy/``: ``func.py`` with ``main(context)``, a
Procfile, requirements.txt) cannot depend on the wheel (its metadata asks for the CloudEvents SDK
2.x; parliament brings 1.x): :func:`vendor_legacy` unpacks the wheel into its ``vendor/``, which
``func.py`` puts on ``sys.path``, and requirements.txt lists the run-time dependencies.

    python -m modelmonitor.cluster.function_projects            # the four, and functions/legacy
    python -m modelmonitor.cluster.function_projects --role drift
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROLES = ("ingest", "outlier", "aggregate", "drift")
REPO_ROOT = Path(__file__).resolve().parent.parent.parent
FUNCTIONS_DIR = REPO_ROOT / "functions"
LEGACY_DIR = FUNCTIONS_DIR / "legacy"
VERSION = "0.1.0"
WHEEL_NAME = f"modelmonitor-{VERSION}-py3-none-any.whl"
#: Image of each function (``kn func build --image``; what `modelmonitor render` deploys).
IMAGE_TEMPLATE = "ghcr.io/modelmonitor/modelmonitor-{role}:" + VERSION


def build_wheel(out_dir: Path, repo: Path = REPO_ROOT) -> Path:
    """The modelmonitor wheel of ``repo``, built into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-P", "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out_dir), str(repo)],
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


def vendor_legacy(project: Path = LEGACY_DIR, wheel: Path | None = None) -> Path:
    """Unpack the modelmonitor wheel into ``<project>/vendor/`` (replacing what was there):
    the packages without their dependency metadata's effect, for the legacy parliament project."""
    target = project / "vendor"
    with tempfile.TemporaryDirectory(prefix="mm-wheel-") as tmp:
        wheel = wheel or build_wheel(Path(tmp))
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelmonitor.cluster.function_projects",
                                     description="Vendor the modelmonitor wheel into the function projects.")
    parser.add_argument("--role", choices=ROLES + ("legacy",), action="append",
                        help="only this project (repeatable; legacy: functions/legacy, parliament)")
    args = parser.parse_args(argv)
    chosen = tuple(args.role or ROLES + ("legacy",))
    with tempfile.TemporaryDirectory(prefix="mm-wheel-") as tmp:
        wheel = build_wheel(Path(tmp))
        placed = vendor(tuple(r for r in chosen if r != "legacy"), wheel=wheel)
        if "legacy" in chosen:
            placed.append(vendor_legacy(wheel=wheel))
        for path in placed:
            print(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path)
    return 0

if __name__ == "__main__":
    sys.exit(main())
