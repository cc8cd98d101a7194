"""The window store on a real 3-master Redis Cluster of local redis-server processes."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import time

import pytest

from modelmonitor.local.redis_server import RedisServer, connect
import test_store


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is valid and free too."""
    import random
    import socket
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(20000, 50000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for a cluster node")


@pytest.fixture(scope="module")
def cluster_client():
    servers = []
    base = tempfile.mkdtemp(prefix="mm-cluster-")
    try:
        for i in range(3):
            port = cluster_port()
            s = RedisServer(port=port, directory=tempfile.mkdtemp(dir=base), durable=False,
                            extra_args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                        "--cluster-node-timeout", "2000"])
            servers.append(s.start())
        addrs = [f"127.0.0.1:{s.port}" for s in servers]
        subprocess.run(["redis-cli", "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        deadline = time.time() + 20
        while True:
            info = subprocess.run(["redis-cli", "-p", str(servers[0].port), "cluster", "info"],
                                  capture_output=True, text=True).stdout
            if "cluster_state:ok" in info:
                break
            assert time.time() < deadline, info
            time.sleep(0.2)
        client = connect(f"redis+cluster://{addrs[0]}")
        assert len(client.get_primaries()) == 3
        yield client
        client.close()
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def clean_cluster(cluster_client):
    cluster_client.flushall(target_nodes=cluster_client.ALL_NODES)
    return cluster_client


@pytest.mark.parametrize("d,s,delay", [(15_000, 15_000, 6_000), (15_000, 5_000, 2_000)])
def test_windows_match_reference_on_cluster(clean_cluster, d, s, delay):
    test_store.test_windows_match_reference(clean_cluster, d, s, delay, seed=4)


def test_monitors_spread_over_slots_each_script_on_one_node(clean_cluster):
    # different monitors hash to different slots; each monitor's keys share one slot
    for name in ("iris", "fraud", "churn", "ads"):
        events = test_store.make_stream(len(name), n=60)
        got, _ = test_store.run_store(clean_cluster, events, 10_000, 10_000, 1_000, [7], monitor=name)
        assert sum(len(w["rows"]) for w in got) > 0
    slots = {clean_cluster.keyslot("{mm:%s}" % n) for n in ("iris", "fraud", "churn", "ads")}
    assert len(slots) == 4


def test_duplicates_and_leases_on_cluster(clean_cluster):
    test_store.test_duplicates_within_a_batch_count_once(clean_cluster)
    test_store.test_lease_blocks_second_closer_until_expiry(clean_cluster)
