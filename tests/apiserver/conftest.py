"""Fixtures of the opt-in API server suite (`make test-apiserver`): one control plane per session
with the ModelMonitor CRD from operator/install.yaml and the stand-in CRDs registered."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster import APISERVER_BIN, ETCD_BIN, ControlPlane  # noqa: E402
from kube import Api, create_crd, established, monitor_crd, wait_for  # noqa: E402
from standins import STAND_INS  # noqa: E402

TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory):
    missing = [str(p) for p in (APISERVER_BIN, ETCD_BIN) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(f"not built: {', '.join(missing)}; run `make test-apiserver` (tests/apiserver/build.sh)")
    plane = ControlPlane(tmp_path_factory.mktemp("control-plane"))
    try:
        plane.start()
        TIMINGS.update(plane.timings)
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def api(control_plane) -> Api:
    api = Api(control_plane.front_url)
    started = time.monotonic()
    create_crd(api, monitor_crd())
    for crd in STAND_INS:
        create_crd(api, crd)
    for crd in [monitor_crd(), *STAND_INS]:
        wait_for(f"CRD {crd['metadata']['name']} Established", lambda: established(api, crd["metadata"]["name"]))
        # Established comes before the resource's storage (watch cache) is ready; until then
        # requests get 429 "storage is (re)initializing".
        spec = crd["spec"]
        path = f"/apis/{spec['group']}/{spec['versions'][0]['name']}/{spec['names']['plural']}"
        wait_for(f"{path} to list", lambda: api.call("GET", path)[0] == 200)
    TIMINGS["crds_established_s"] = time.monotonic() - started
    return api


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.write_line("control plane timings: " + ", ".join(
            f"{k}={v:.1f}" for k, v in TIMINGS.items()))
