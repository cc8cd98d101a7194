"""Security properties (SECURITY.md), each checked against the real thing.

- The Redis URL (it may carry a password) comes from a Secret reference: `render` never puts it
  in a ConfigMap or an env value, and a monitor cannot even spell it out.
- Function log lines, HTTP answers and metrics never contain the Redis password, whether
  Redis is up, down or refuses the password.
- `connect()` supports passwords (a real redis-server with requirepass) and `rediss://` (a real
  redis-server serving TLS with a certificate made here with the openssl CLI), verifying the
  server's certificate.
- Everything `modelmonitor run` starts listens on 127.0.0.1 only, by default.
- Bodies over the limits are refused: the broker ingress at 10 MiB (413), a function at
  MODELMONITOR_MAX_BODY_BYTES.
- The operator's RBAC is minimal: no Secrets, no wildcard, no escalation verbs.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest
import redis
import requests
import yaml
from modelmonitor.runtime.wire import to_binary
from modelmonitor.core.events import Event

from live_stack import FEATURES, ROOT, Recorder, logger_body, logger_headers, now_ms, wait_until, write_monitor
from modelmonitor.core import events as ev
from modelmonitor.local.broker import LocalBroker
from modelmonitor.local.procs import FunctionProcess
from modelmonitor.local.redis_server import RedisServer, connect, free_port
from modelmonitor.cluster.render import render, render_yaml
from modelmonitor.local.runner import LocalRun
from modelmonitor.core.spec import SpecError, load_monitor, parse_monitor

PASSWORD = "s3cr3t-Pa55w0rd-for-tests"


def contains_secret(text: str, password: str = PASSWORD) -> bool:
    return password in text or urllib.parse.quote(password, safe="") in text


# ---------------------------------------------------------------------------------------------
# No secret in a ConfigMap
# ---------------------------------------------------------------------------------------------

def test_render_takes_the_redis_url_from_a_secret_and_never_writes_it_down(tmp_path):
    path = write_monitor(tmp_path / "m")
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["state"] = {"redis": {"urlSecretRef": {"name": "iris-redis", "key": "connection"}}}
    path.write_text(yaml.safe_dump(doc))
    spec = load_monitor(str(path))
    objects = render(spec)
    assert not [o for o in objects if o["kind"] == "Secret"]
    config_maps = [o for o in objects if o["kind"] == "ConfigMap"]
    assert config_maps
    for cm in config_maps:
        text = json.dumps(cm)
        assert "redis://" not in text and "rediss://" not in text and "REDIS_URL" not in text
    services = [o for o in objects if o["kind"] == "Service"]
    assert {s["metadata"]["name"] for s in services} == {f"iris-{r}" for r in ("ingest", "outlier", "aggregate", "drift")}
    for svc in services:
        for container in svc["spec"]["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in container["env"]}
            assert env["REDIS_URL"] == {"name": "REDIS_URL", "valueFrom": {
                "secretKeyRef": {"name": "iris-redis", "key": "connection"}}}
            # No other variable carries a URL with credentials or points at Redis by value.
            for e in container["env"]:
                assert "redis" not in str(e.get("value", "")).lower()
    assert "redis://" not in render_yaml(spec)
    # The default Secret when the monitor names none.
    default = render(load_monitor(str(write_monitor(tmp_path / "d"))))
    refs = {json.dumps(e["valueFrom"], sort_keys=True) for o in default if o["kind"] == "Service"
            for c in o["spec"]["template"]["spec"]["containers"] for e in c["env"] if e["name"] == "REDIS_URL"}
    assert refs == {json.dumps({"secretKeyRef": {"name": "modelmonitor-redis", "key": "url"}}, sort_keys=True)}


def test_a_monitor_cannot_spell_out_a_redis_url():
    for state in ({"redis": {"url": f"redis://:{PASSWORD}@redis:6379/0"}},
                  {"redis": {"urlSecretRef": {"name": "x"}, "url": "redis://r"}},
                  {"redisUrl": "redis://r"}):
        with pytest.raises(SpecError) as err:
            parse_monitor({"metadata": {"name": "m"}, "spec": {"schema": {"features": ["x"]}, "state": state}})
        assert "spec.state" in str(err.value)


def test_shipped_manifests_hold_no_credentials():
    for path in list((ROOT / "eventing").glob("*.yaml")) + list((ROOT / "operator").glob("*.yaml")):
        text = path.read_text()
        assert "redis://" not in text and "rediss://" not in text, path
        for doc in yaml.safe_load_all(text):
            assert not (isinstance(doc, dict) and doc.get("kind") == "Secret"), path


# ---------------------------------------------------------------------------------------------
# Passwords never reach a log line, an answer or a metric
# ---------------------------------------------------------------------------------------------

class _Sink:
    """K_SINK that accepts everything (the functions' extra events are not the point here)."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        import threading

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _instances(i: int, t: int) -> Event:
    return Event({"type": ev.INSTANCES, "source": "/modelmonitor/default/iris/ingest",
                       "id": f"iris/request/{i}/x", "monitor": "iris", "datacontenttype": "application/json"},
                      {"monitor": "iris", "requestId": str(i), "kind": "request", "eventTime": ev.ms_to_rfc3339(t),
                       "eventTimeMs": t, "features": FEATURES, "instances": [[5.0, 3.0, 1.5, 0.2]]})


def test_function_logs_answers_and_metrics_never_contain_the_redis_password(tmp_path):
    server = RedisServer(durable=True, password=PASSWORD).start()
    sink = _Sink()
    path = write_monitor(tmp_path / "m", idle="1s")
    procs = {}
    bodies: list[str] = []
    try:
        assert contains_secret(server.url)
        for role in ("ingest", "outlier", "aggregate", "drift"):
            procs[role] = FunctionProcess(f"sec-{role}", ["--role", role, "--threads", "4"], env={
                "MODELMONITOR_ROLE": role, "MODELMONITOR_CONFIG": str(path), "MODELMONITOR_BASELINE":
                str(path.parent / "baseline.json"), "REDIS_URL": server.url, "K_SINK": sink.url},
                log_file=str(tmp_path / f"{role}.log"))
        for p in procs.values():
            p.start(wait=False)
        for p in procs.values():
            p.wait_ready()
        session = requests.Session()

        def post(role: str, event: Event) -> int:
            headers, body = to_binary(event)
            resp = session.post(procs[role].url, data=body, headers=headers, timeout=30)
            bodies.append(resp.text + json.dumps(dict(resp.headers)))
            return resp.status_code

        t0 = now_ms()
        assert post("aggregate", _instances(1, t0)) == 202             # Redis up, password right
        server.stop(kill=True)                                           # Redis down
        assert post("aggregate", _instances(2, t0 + 10)) == 503
        window = {"monitor": "iris", "window": {"startMs": 0, "endMs": 2000, "start": ev.ms_to_rfc3339(0),
                                                "end": ev.ms_to_rfc3339(2000)},
                  "count": 1, "late": 0, "watermarkMs": 2000, "closedAtMs": t0, "features": {}}
        post("drift", Event({"type": ev.WINDOW_CLOSED, "source": "/t", "id": "w1", "monitor": "iris"}, window))
        tick = Event({"type": ev.PING, "source": "/t", "id": "tick-1", "monitor": "iris"}, {"monitor": "iris"})
        post("aggregate", tick)
        # Up again, but with another password: the functions' AUTH is refused.
        other = RedisServer(port=server.port, directory=server.directory, durable=True, password="another-one").start()
        try:
            status = post("aggregate", _instances(3, t0 + 20))
            assert status in (500, 503)
            post("drift", Event({"type": ev.WINDOW_CLOSED, "source": "/t", "id": "w2", "monitor": "iris"}, window))
            time.sleep(2.5)                                              # the closer loop retries and logs
        finally:
            other.stop()
        server.start()                                                   # back, right password
        wait_until(lambda: post("aggregate", _instances(4, t0 + 30)) == 202, 30, 0.5, what="recovery")
        for role, p in procs.items():
            bodies.append(session.get(p.metrics_url, timeout=5).text)    # metrics
    finally:
        for p in procs.values():
            p.stop()
        sink.close()
        server.cleanup()
    logs = {role: (tmp_path / f"{role}.log").read_text(errors="replace") for role in procs}
    assert "closing windows failed" in logs["aggregate"] or "Error" in logs["aggregate"], logs["aggregate"][-2000:]
    for role, text in logs.items():
        assert not contains_secret(text), f"{role} log leaks the Redis password"
    for text in bodies:
        assert not contains_secret(text), text[:500]


# ---------------------------------------------------------------------------------------------
# connect(): passwords and TLS
# ---------------------------------------------------------------------------------------------

def test_connect_with_a_password_against_a_real_server():
    with RedisServer(durable=False, password=PASSWORD) as server:
        client = connect(server.url)
        assert client.ping() and client.set("k", "v") and client.get("k") == b"v"
        client.close()
        for url in (server.url.replace(urllib.parse.quote(PASSWORD, safe=""), "wrong"),
                    f"redis://127.0.0.1:{server.port}/0"):
            client = connect(url)
            # AUTH refused / NOAUTH (which one depends on the client's protocol handshake)
            with pytest.raises((redis.exceptions.AuthenticationError, redis.exceptions.ResponseError),
                               match="(?i)auth|password"):
                client.get("k")
            client.close()


def test_rediss_url_parsing_sets_tls_and_keeps_the_password():
    client = connect(f"rediss://:{urllib.parse.quote(PASSWORD, safe='')}@redis.example:6380/2")
    pool = client.connection_pool
    assert pool.connection_class is redis.connection.SSLConnection
    assert pool.connection_kwargs["password"] == PASSWORD
    assert (pool.connection_kwargs["host"], pool.connection_kwargs["port"], pool.connection_kwargs["db"]) == \
           ("redis.example", 6380, 2)
    plain = connect(f"redis://:{PASSWORD}@redis.example:6379/0").connection_pool
    assert plain.connection_class is redis.connection.Connection


def _certificates(directory: Path) -> dict[str, str]:
    """A throw-away CA and a server certificate for 127.0.0.1, made with the openssl CLI."""
    openssl = shutil.which("openssl")
    assert openssl, "the openssl CLI is needed to make test certificates"
    d = str(directory)

    def run(*args):
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=d, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=modelmonitor-test-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (directory / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf")
    return {name: str(directory / f"{name}") for name in ("ca.crt", "server.crt", "server.key")}


def test_rediss_with_a_password_against_a_real_tls_server(tmp_path):
    certs = _certificates(tmp_path)
    tls_port = free_port()
    server = RedisServer(durable=False, password=PASSWORD, extra_args=[
        "--tls-port", str(tls_port), "--tls-cert-file", certs["server.crt"], "--tls-key-file", certs["server.key"],
        "--tls-ca-cert-file", certs["ca.crt"], "--tls-auth-clients", "no"]).start()
    sink = _Sink()
    proc = None
    try:
        pw = urllib.parse.quote(PASSWORD, safe="")
        query = urllib.parse.urlencode({"ssl_ca_certs": certs["ca.crt"], "ssl_cert_reqs": "required"})
        url = f"rediss://:{pw}@127.0.0.1:{tls_port}/0?{query}"
        client = connect(url)
        assert client.ping() and client.set("tls", "yes") and client.get("tls") == b"yes"
        assert client.connection_pool.connection_class is redis.connection.SSLConnection
        client.close()
        # The server's certificate is verified: without our CA the handshake fails.
        unverified = connect(f"rediss://:{pw}@127.0.0.1:{tls_port}/0")
        with pytest.raises(redis.exceptions.ConnectionError, match="(?i)certificate"):
            unverified.ping()
        unverified.close()
        # Plain text to the TLS port gets nowhere.
        plain = connect(f"redis://:{pw}@127.0.0.1:{tls_port}/0", socket_timeout=2)
        with pytest.raises(redis.exceptions.RedisError):
            plain.ping()
        plain.close()
        # A real aggregate function on the rediss:// URL applies an instances event.
        path = write_monitor(tmp_path / "m")
        proc = FunctionProcess("tls-aggregate", ["--role", "aggregate", "--threads", "2"], env={
            "MODELMONITOR_ROLE": "aggregate", "MODELMONITOR_CONFIG": str(path),
            "MODELMONITOR_BASELINE": str(path.parent / "baseline.json"), "REDIS_URL": url, "K_SINK": sink.url},
            log_file=str(tmp_path / "aggregate.log")).start()
        headers, body = to_binary(_instances(1, now_ms()))
        assert requests.post(proc.url, data=body, headers=headers, timeout=30).status_code == 202
        check = connect(url)
        assert check.hget("{mm:iris}:wm", "maxT") is not None
        check.close()
    finally:
        if proc is not None:
            proc.stop()
        sink.close()
        server.cleanup()
    assert not contains_secret((tmp_path / "aggregate.log").read_text(errors="replace"))


# ---------------------------------------------------------------------------------------------
# Loopback only, body limits
# ---------------------------------------------------------------------------------------------

def _listening(port: int) -> set[str]:
    """Local addresses of the LISTEN sockets on ``port`` (IPv4 and IPv6)."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                out.add(address)
    return out


def test_everything_run_starts_listens_on_loopback_only(tmp_path):
    from modelmonitor.tools.cli import build_parser
    from modelmonitor.runtime.serve import build_parser as serve_parser
    assert LocalBroker([]).host == "127.0.0.1"
    assert serve_parser().parse_args(["--role", "ingest"]).host == "127.0.0.1"
    assert build_parser().parse_args(["run", "m.yaml"]).host == "127.0.0.1"
    private = RedisServer(durable=False)
    try:
        args = private.args()
        assert args[args.index("--bind") + 1] == "127.0.0.1" and args[args.index("--protected-mode") + 1] == "yes"
    finally:
        private.cleanup()
    run = LocalRun(str(write_monitor(tmp_path / "m")), port=0, tick_seconds=3600,
                   log_dir=str(tmp_path / "logs"), on_event=Recorder()).start()
    try:
        ports = [run.port, run.redis_server.port] + [p.port for pool in run.pools.values() for p in pool]
        for port in ports:
            addresses = _listening(port)
            assert addresses == {"0100007F"}, (port, addresses)        # 127.0.0.1, nothing else
    finally:
        run.stop()


def test_body_size_limits(tmp_path):
    broker = LocalBroker([]).start()
    sink = _Sink()
    path = write_monitor(tmp_path / "m")
    proc = FunctionProcess("limit-ingest", ["--role", "ingest", "--threads", "2"], env={
        "MODELMONITOR_ROLE": "ingest", "MODELMONITOR_CONFIG": str(path), "MODELMONITOR_BASELINE":
        str(path.parent / "baseline.json"), "REDIS_URL": "redis://127.0.0.1:1/0", "K_SINK": sink.url,
        "MODELMONITOR_MAX_BODY_BYTES": "2048"}, log_file=str(tmp_path / "ingest.log")).start()
    try:
        assert broker.max_body_bytes == 10 * 1024 * 1024
        big = b"x" * (10 * 1024 * 1024 + 1)
        assert requests.post(broker.url, data=big, headers=logger_headers("big", now_ms()), timeout=30).status_code == 413
        ok = logger_body([[5.1, 3.5, 1.4, 0.2]], "v1")
        assert requests.post(broker.url, data=ok, headers=logger_headers("ok", now_ms()), timeout=30).status_code == 202
        rows = [[5.1, 3.5, 1.4, 0.2]] * 200                                # ~4 KiB
        resp = requests.post(proc.url, data=logger_body(rows, "v1"), headers=logger_headers("f", now_ms()), timeout=30)
        assert resp.status_code in (400, 413) and "limit" in resp.json()["error"]
        resp = requests.post(proc.url, data=logger_body(rows[:10], "v1"), headers=logger_headers("g", now_ms()),
                             timeout=30)
        assert resp.status_code == 200
    finally:
        proc.stop()
        sink.close()
        broker.stop()


# ---------------------------------------------------------------------------------------------
# Operator RBAC
# ---------------------------------------------------------------------------------------------

ALLOWED = {("monitoring.modelmonitor.io", "modelmonitors"), ("monitoring.modelmonitor.io", "modelmonitors/status"),
           ("serving.knative.dev", "services"), ("eventing.knative.dev", "triggers"),
           ("eventing.knative.dev", "kafkasinks"), ("sources.knative.dev", "pingsources"), ("", "configmaps"),
           ("", "events"), ("apiextensions.k8s.io", "customresourcedefinitions")}


def _rbac_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict) and
            d.get("kind") in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")]


@pytest.mark.parametrize("name", ["rbac.yaml", "install.yaml"])
def test_operator_rbac_is_minimal(name):
    docs = _rbac_docs(ROOT / "operator" / name)
    roles = [d for d in docs if d["kind"] in ("Role", "ClusterRole")]
    assert len(roles) == 1
    for rule in roles[0]["rules"]:
        assert "nonResourceURLs" not in rule, rule
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule.get(key, []), (key, rule)
        assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"]), rule
        assert "secrets" not in rule["resources"], rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert (group, resource) in ALLOWED, (group, resource)
        # Read-only kinds stay read-only.
        if "customresourcedefinitions" in rule["resources"]:
            assert set(rule["verbs"]) <= {"list", "watch"}
        if "events" in rule["resources"]:
            assert set(rule["verbs"]) == {"create"}
    bindings = [d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    assert len(bindings) == 1
    assert bindings[0]["roleRef"]["name"] == roles[0]["metadata"]["name"]
    assert bindings[0]["subjects"] == [{"kind": "ServiceAccount", "name": "modelmonitor-operator",
                                        "namespace": "modelmonitor-system"}]


def test_install_yaml_ships_the_same_rbac_as_rbac_yaml():
    a = [d for d in _rbac_docs(ROOT / "operator" / "rbac.yaml")]
    b = [d for d in _rbac_docs(ROOT / "operator" / "install.yaml")]
    assert [d["rules"] for d in a if "rules" in d] == [d["rules"] for d in b if "rules" in d]
