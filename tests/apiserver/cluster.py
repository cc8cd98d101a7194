"""A private control plane for the tests: etcd, the upstream apiextensions-apiserver (built by
``tests/apiserver/build.sh`` into a cache directory) and the test front (``front.py``).

Everything listens on 127.0.0.1 on free ports and lives in a temporary directory; stop()
ends exactly the processes started here.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("MODELMONITOR_APISERVER_CACHE")
             or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "modelmonitor" / "apiserver")
APISERVER_BIN = CACHE / "bin" / "apiextensions-apiserver"
ETCD_BIN = CACHE / "bin" / "etcd"

# Admission plugins that need a core API (namespaces) or call out (webhooks, policies).
DISABLED_ADMISSION = ("NamespaceLifecycle", "MutatingAdmissionWebhook", "ValidatingAdmissionWebhook",
                      "ValidatingAdmissionPolicy", "MutatingAdmissionPolicy")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(directory: Path) -> dict[str, Path]:
    """A throwaway CA, a serving certificate for 127.0.0.1 and a client certificate in the
    group system:masters (the delegated authorizer lets that group do everything)."""
    d = directory
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=modelmonitor-test-ca",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    (d / "serving.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, subject in (("serving", "/CN=127.0.0.1"), ("client", "/O=system:masters/CN=modelmonitor-test")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=d)
    return {n: d / n for n in ("ca.crt", "serving.crt", "serving.key", "client.crt", "client.key")}


def kubeconfig(server: str, certs: dict[str, Path] | None = None) -> dict:
    cluster: dict = {"server": server}
    user: dict = {}
    if certs:
        cluster["certificate-authority"] = str(certs["ca.crt"])
        user = {"client-certificate": str(certs["client.crt"]), "client-key": str(certs["client.key"])}
    return {"apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": cluster}],
            "users": [{"name": "test", "user": user}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}]}


@dataclass
class ControlPlane:
    workdir: Path
    procs: list[subprocess.Popen] = field(default_factory=list)
    front_url: str = ""
    apiserver_url: str = ""
    kubeconfig_path: Path | None = None
    certs: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def _spawn(self, name: str, argv: list[str], **kwargs) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _wait(self, name: str, proc: subprocess.Popen, check, deadline_s: float) -> None:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            try:
                if check():
                    return
            except (OSError, urllib.error.URLError, ssl.SSLError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{name} not up after {deadline_s:.0f} s:\n{self.log_tail(name)}")

    def start(self) -> "ControlPlane":
        started = time.monotonic()
        self.certs = make_certificates(self.workdir)
        etcd_port, peer_port = free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        etcd = self._spawn("etcd", [
            str(ETCD_BIN), "--name", "test", "--data-dir", str(self.workdir / "etcd"),
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"test=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync", "--log-level", "warn"])
        self._wait("etcd", etcd, lambda: urllib.request.urlopen(f"{etcd_url}/health", timeout=2).status == 200, 30)
        self.timings["etcd_s"] = time.monotonic() - started

        port = free_port()
        self.apiserver_url = f"https://127.0.0.1:{port}"
        self_config = self.workdir / "apiserver.kubeconfig"
        self_config.write_text(yaml.safe_dump(kubeconfig(self.apiserver_url, self.certs)))
        apiserver = self._spawn("apiserver", [
            str(APISERVER_BIN), "--etcd-servers", etcd_url,
            "--bind-address", "127.0.0.1", "--secure-port", str(port),
            "--tls-cert-file", str(self.certs["serving.crt"]), "--tls-private-key-file", str(self.certs["serving.key"]),
            "--client-ca-file", str(self.certs["ca.crt"]),
            "--authentication-skip-lookup",
            "--authentication-kubeconfig", str(self_config), "--authorization-kubeconfig", str(self_config),
            "--kubeconfig", str(self_config),
            "--enable-priority-and-fairness=false",
            "--disable-admission-plugins", ",".join(DISABLED_ADMISSION)])
        context = ssl.create_default_context(cafile=str(self.certs["ca.crt"]))
        context.load_cert_chain(str(self.certs["client.crt"]), str(self.certs["client.key"]))
        self.ssl_context = context
        # /readyz never turns ready without a core API (its informers cannot sync): poll /livez.
        self._wait("apiserver", apiserver,
                   lambda: urllib.request.urlopen(f"{self.apiserver_url}/livez", context=context, timeout=2).status == 200,
                   90)
        self.timings["apiserver_s"] = time.monotonic() - started

        front_port = free_port()
        self.front_url = f"http://127.0.0.1:{front_port}"
        front = self._spawn("front", [
            sys.executable, str(HERE / "front.py"), "--upstream", self.apiserver_url,
            "--ca", str(self.certs["ca.crt"]), "--cert", str(self.certs["client.crt"]),
            "--key", str(self.certs["client.key"]), "--port", str(front_port), "--access-log"])
        self._wait("front", front, lambda: urllib.request.urlopen(f"{self.front_url}/api", timeout=2).status == 200, 30)
        self.kubeconfig_path = self.workdir / "front.kubeconfig"
        self.kubeconfig_path.write_text(yaml.safe_dump(kubeconfig(self.front_url)))
        self.timings["ready_s"] = time.monotonic() - started
        return self

    def direct(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        """One request straight to the upstream server (not through the front)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.apiserver_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self.ssl_context, timeout=30) as rsp:
                return rsp.status, json.loads(rsp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw or b"{}")
            except ValueError:  # plain-text errors (e.g. "404 page not found")
                return exc.code, {"message": raw.decode(errors="replace")}

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
