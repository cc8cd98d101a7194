"""Helpers of the API server suite: JSON over HTTP through the test front, polling, the CRDs."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
INSTALL = ROOT / "operator" / "install.yaml"


def install_documents() -> list[dict]:
    with open(INSTALL, encoding="utf-8") as fh:
        return [d for d in yaml.safe_load_all(fh) if d]


def monitor_crd() -> dict:
    [crd] = [d for d in install_documents() if d.get("kind") == "CustomResourceDefinition"]
    return crd


class Api:
    """JSON over HTTP through the test front (what kopf and the operator see)."""

    def __init__(self, base: str):
        self.base = base

    def call(self, method: str, path: str, body=None, content_type: str = "application/json",
             query: str = "") -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        url = self.base + path + (f"?{query}" if query else "")
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": content_type, "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as rsp:
                return rsp.status, json.loads(rsp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw or b"{}")
            except ValueError:  # plain-text errors (e.g. "404 page not found")
                return exc.code, {"message": raw.decode(errors="replace")}

    def ok(self, method: str, path: str, body=None, **kwargs) -> dict:
        status, doc = self.call(method, path, body, **kwargs)
        assert 200 <= status < 300, f"{method} {path}: {status} {doc.get('message')}"
        return doc

    def get(self, path: str) -> dict | None:
        status, doc = self.call("GET", path)
        if status == 404:
            return None
        assert status == 200, f"GET {path}: {status} {doc.get('message')}"
        return doc


def wait_for(what: str, probe, timeout: float = 60.0, interval: float = 0.25):
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


def established(api: Api, name: str) -> bool:
    doc = api.get(f"{CRD_PATH}/{name}") or {}
    return any(c.get("type") == "Established" and c.get("status") == "True"
               for c in (doc.get("status") or {}).get("conditions") or [])


def create_crd(api: Api, crd: dict) -> dict:
    return api.ok("POST", CRD_PATH, crd)
