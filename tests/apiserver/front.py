"""A small HTTP front for the standalone apiextensions-apiserver, for the tests only.

The upstream server for custom resources serves CustomResourceDefinitions and the resources
they define, but no core API (``/api/v1``) and no ``/apis`` root listing of the custom groups
(in a full cluster kube-apiserver and its aggregator provide both). kopf and the operator need
a little of that, so this front, listening on plain HTTP on 127.0.0.1:

- answers ``/api`` and ``/api/v1`` discovery (ConfigMaps, Events and, for kopf's start-up
  check only, Namespaces, which kopf never requests when it watches all namespaces) and builds the ``/apis`` group list from the
  upstream's own list plus the CRDs the upstream reports Established;
- maps the two core kinds the operator writes, ConfigMap and Event, onto CustomResourceDefinitions
  in the test group ``core.apiserver-test.modelmonitor.io`` (see ``cluster.CORE_CRDS``): the path
  ``/api/v1/namespaces/<ns>/<configmaps|events>...`` is forwarded to
  ``/apis/core.apiserver-test.modelmonitor.io/v1/namespaces/<ns>/...`` and ``apiVersion: v1`` is
  rewritten both ways; storage, validation, server-side apply, label selection and field
  management stay the real server's;
- forwards everything else unchanged (watches are streamed), authenticating upstream with
  the test's client certificate (group ``system:masters``).

Nothing else is emulated: there are no namespace objects (the server runs without the
NamespaceLifecycle admission) and no garbage collector.

Run: ``python front.py --upstream https://127.0.0.1:PORT --ca ca.crt --cert c.crt --key c.key --port N``
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import sys
import ssl
from typing import Any

import aiohttp
from aiohttp import web

CORE_GROUP = "core.apiserver-test.modelmonitor.io"
CORE_API_VERSION = f"{CORE_GROUP}/v1"
CORE_RESOURCES = {  # plural -> (kind, singular, verbs)
    "configmaps": ("ConfigMap", "configmap",
                   ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]),
    "events": ("Event", "event",
               ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]),
}
CORE_KINDS = {kind for kind, _, _ in CORE_RESOURCES.values()}
CORE_PATH = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/(?P<plural>configmaps|events)(?P<rest>(/.*)?)$")
CORE_CLUSTER_PATH = re.compile(r"^/api/v1/(?P<plural>configmaps|events)$")
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host",
               "content-encoding", "upgrade", "proxy-authorization", "te", "trailer"}


def to_core(value: Any) -> Any:
    """Upstream objects of the test core group back to ``apiVersion: v1`` (recursively: lists,
    items, managedFields)."""
    if isinstance(value, dict):
        out = {k: to_core(v) for k, v in value.items()}
        if out.get("apiVersion") == CORE_API_VERSION:
            out["apiVersion"] = "v1"
        return out
    if isinstance(value, list):
        return [to_core(v) for v in value]
    return value


def from_core(value: Any) -> Any:
    """A client's ``apiVersion: v1`` ConfigMap or Event to the test group (other bodies, such as
    DeleteOptions, stay as they are)."""
    if isinstance(value, dict):
        out = dict(value)
        if out.get("apiVersion") == "v1" and out.get("kind") in CORE_KINDS:
            out["apiVersion"] = CORE_API_VERSION
        return out
    return value


class Front:
    def __init__(self, upstream: str, ssl_context: ssl.SSLContext):
        self.upstream = upstream.rstrip("/")
        self.ssl = ssl_context
        self.session: aiohttp.ClientSession | None = None

    async def start(self, app: web.Application) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.ssl, limit=64),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10), auto_decompress=True)

    async def stop(self, app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    # -- discovery --------------------------------------------------------------------------
    async def get_json(self, path: str) -> Any:
        """The upstream's JSON at ``path``, or None when it serves nothing there (404)."""
        assert self.session is not None
        async with self.session.get(self.upstream + path, headers={"Accept": "application/json"}) as rsp:
            if rsp.status == 404:
                return None
            rsp.raise_for_status()
            return await rsp.json(content_type=None)

    async def api(self, request: web.Request) -> web.Response:
        return web.json_response({"kind": "APIVersions", "versions": ["v1"],
                                  "serverAddressByClientCIDRs": []})

    async def api_v1(self, request: web.Request) -> web.Response:
        resources = [{"name": plural, "singularName": singular, "namespaced": True, "kind": kind,
                      "verbs": verbs} for plural, (kind, singular, verbs) in CORE_RESOURCES.items()]
        # kopf waits for namespaces to be discoverable before it starts, even when it watches
        # all namespaces and therefore never lists them; nothing here serves them.
        resources.append({"name": "namespaces", "singularName": "namespace", "namespaced": False,
                          "kind": "Namespace", "verbs": ["get", "list", "watch"]})
        return web.json_response({"kind": "APIResourceList", "groupVersion": "v1", "resources": resources})

    async def apis(self, request: web.Request) -> web.Response:
        # The standalone server answers 404 on /apis; its own group it does describe.
        listing = await self.get_json("/apis") or {}
        groups = {g["name"]: g for g in listing.get("groups") or []}
        own = await self.get_json("/apis/apiextensions.k8s.io")
        if own and own.get("name"):
            groups.setdefault(own["name"], {k: own[k] for k in ("name", "versions", "preferredVersion")})
        crds = await self.get_json("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
        for crd in crds.get("items") or []:
            conditions = {c.get("type"): c.get("status") for c in (crd.get("status") or {}).get("conditions") or []}
            if conditions.get("Established") != "True":
                continue
            group = crd["spec"]["group"]
            served = [v["name"] for v in crd["spec"]["versions"] if v.get("served")]
            storage = next((v["name"] for v in crd["spec"]["versions"] if v.get("storage")), served[0])
            entry = groups.setdefault(group, {"name": group, "versions": [],
                                              "preferredVersion": {"groupVersion": f"{group}/{storage}",
                                                                   "version": storage}})
            known = {v["version"] for v in entry["versions"]}
            for version in served:
                if version not in known:
                    entry["versions"].append({"groupVersion": f"{group}/{version}", "version": version})
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1",
                                  "groups": sorted(groups.values(), key=lambda g: g["name"])})

    # -- forwarding ---------------------------------------------------------------------------
    async def forward(self, request: web.Request) -> web.StreamResponse:
        assert self.session is not None
        path = request.path
        core = CORE_PATH.match(path)
        core_cluster = CORE_CLUSTER_PATH.match(path)
        if core:
            path = f"/apis/{CORE_API_VERSION}/namespaces/{core['ns']}/{core['plural']}{core['rest']}"
        elif core_cluster:
            path = f"/apis/{CORE_API_VERSION}/{core_cluster['plural']}"
        elif path.startswith("/api/"):
            return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                      "reason": "NotFound", "code": 404,
                                      "message": f"the test front serves no {path}"}, status=404)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        data = await request.read() if request.can_read_body else None
        if (core or core_cluster) and data:
            data = json.dumps(from_core(json.loads(data))).encode()
        async with self.session.request(request.method, self.upstream + path, params=request.query,
                                        headers=headers, data=data) as rsp:
            out_headers = {k: v for k, v in rsp.headers.items() if k.lower() not in HOP_HEADERS}
            watching = request.query.get("watch") in ("1", "true")
            if not watching and not (core or core_cluster):
                return web.Response(status=rsp.status, headers=out_headers, body=await rsp.read())
            if not watching:
                body = await rsp.read()
                try:
                    body = json.dumps(to_core(json.loads(body))).encode()
                except ValueError:
                    pass
                return web.Response(status=rsp.status, headers=out_headers, body=body)
            stream = web.StreamResponse(status=rsp.status, headers=out_headers)
            await stream.prepare(request)
            buffer = b""
            async for chunk in rsp.content.iter_any():
                if core or core_cluster:
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    chunk = b"".join(json.dumps(to_core(json.loads(line))).encode() + b"\n"
                                     for line in lines if line.strip())
                if chunk:
                    await stream.write(chunk)
            await stream.write_eof()
            return stream


def make_app(upstream: str, ca: str, cert: str, key: str) -> web.Application:
    context = ssl.create_default_context(cafile=ca)
    context.load_cert_chain(cert, key)
    front = Front(upstream, context)
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.on_startup.append(front.start)
    app.on_cleanup.append(front.stop)
    app.router.add_get("/api", front.api)
    app.router.add_get("/api/", front.api)
    app.router.add_get("/api/v1", front.api_v1)
    app.router.add_get("/api/v1/", front.api_v1)
    app.router.add_get("/apis", front.apis)
    app.router.add_get("/apis/", front.apis)
    app.router.add_route("*", "/{tail:.*}", front.forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--access-log", action="store_true", help="log every request to stderr")
    args = parser.parse_args()
    if args.access_log:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    web.run_app(make_app(args.upstream, args.ca, args.cert, args.key), host="127.0.0.1", port=args.port,
                print=None, access_log=logging.getLogger("front.access") if args.access_log else None,
                handle_signals=True)


if __name__ == "__main__":
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    main()
