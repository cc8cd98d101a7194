"""The kopf operator (operator/controller.py, run as `kopf run` in its own process) against the real
API server code: server-side apply of the rendered children, status conditions with
observedGeneration, readiness following the children, drift correction after a child is
edited or deleted, deletion of children no longer desired, an invalid spec reported without
touching children, and deletion of the monitor.

The expected children are what `modelmonitor.cluster.render` renders for the same spec (the
pure tests check render against the upstream schemas); here the question is whether the real
server ends up holding exactly that, owned by the operator's field manager.
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import time

import pytest

from kube import ROOT, wait_for
from modelmonitor.cluster import k8s_apply, reconcile, render
from modelmonitor.core.spec import parse_monitor
from test_operator import inline_example

NS = "op-test"
MONITORS = f"/apis/monitoring.modelmonitor.io/v1alpha1/namespaces/{NS}/modelmonitors"
RESYNC_SECONDS = 4  # the drift-correction timer; child events usually correct sooner


def child_path(api_version: str, kind: str, name: str | None = None, subresource: str | None = None) -> str:
    return k8s_apply.resource_path(api_version, kind, NS, name, subresource)


def children(api, name: str) -> dict[tuple[str, str], dict]:
    found = {}
    for api_version, kind in k8s_apply.CHILD_TYPES:
        doc = api.ok("GET", child_path(api_version, kind), query="labelSelector=" + render.child_selector(name))
        for item in doc["items"]:
            found[(kind, item["metadata"]["name"])] = item
    return found


def conditions(doc: dict) -> dict[str, dict]:
    return {c["type"]: c for c in (doc.get("status") or {}).get("conditions") or []}


def new_monitor(name: str) -> dict:
    doc = inline_example()
    doc["metadata"] = {"name": name, "namespace": NS}
    return doc


def expected_children(doc: dict, uid: str) -> list[dict]:
    body = copy.deepcopy(doc)
    body["metadata"]["uid"] = uid
    return reconcile.desired_children(body, None, None)


@pytest.fixture(scope="module")
def operator(control_plane, api, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("operator") / "kopf.log"
    env = dict(os.environ, KUBECONFIG=str(control_plane.kubeconfig_path),
               MODELMONITOR_RESYNC_SECONDS=str(RESYNC_SECONDS))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces",
                                 str(ROOT / "operator" / "controller.py")],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log_path = log_path
    yield proc
    # The operator's own log, for whoever reads a failure.
    sys.stderr.write("---- kopf log (tail) ----\n" + operator_log(proc) + "\n")
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def operator_log(proc) -> str:
    return "\n".join(proc.log_path.read_text(errors="replace").splitlines()[-60:])


def test_operator_applies_children_and_reports_status(api, operator):
    doc = new_monitor("iris")
    created = api.ok("POST", MONITORS, doc)
    uid = created["metadata"]["uid"]
    # What the operator sees is the stored object, with the server's defaults filled in.
    desired = expected_children(created, uid)
    want = {reconcile.child_key(o) for o in desired}
    found = wait_for("every rendered child on the server", lambda: (lambda c: c if set(c) == want else None)(
        children(api, "iris")), timeout=90)
    for obj in desired:
        stored = found[reconcile.child_key(obj)]
        assert reconcile.changed_fields(obj, stored) == [], obj["metadata"]["name"]
        [owner] = stored["metadata"]["ownerReferences"]
        assert owner["uid"] == uid and owner["kind"] == "ModelMonitor" and owner["controller"] is True
        managers = {(m["manager"], m["operation"]) for m in stored["metadata"]["managedFields"]}
        assert (k8s_apply.FIELD_MANAGER, "Apply") in managers, managers
    # Knative has no controller here: the children exist but are not Ready.
    monitor = wait_for("status for generation 1", lambda: (lambda m: m if (m.get("status") or {}).get(
        "observedGeneration") == 1 else None)(api.get(f"{MONITORS}/iris")))
    conds = conditions(monitor)
    assert conds["ConfigValid"]["status"] == "True"
    assert conds["WiringReady"]["status"] == "False" and conds["WiringReady"]["reason"] == "ChildrenNotReady"
    assert all(c["observedGeneration"] == 1 for c in conds.values())
    assert monitor["status"]["loggerUrl"] == render.broker_url(NS, parse_monitor(copy.deepcopy(doc)).broker)
    # kopf keeps its bookkeeping in annotations and adds no finalizer.
    assert not monitor["metadata"].get("finalizers")


def _mark_ready(api, obj: dict) -> None:
    api_version, kind, name = obj["apiVersion"], obj["kind"], obj["metadata"]["name"]
    if not api_version.split("/")[0].endswith(reconcile.KNATIVE_GROUP_SUFFIX):
        return
    current = api.ok("GET", child_path(api_version, kind, name))
    current["status"] = {"observedGeneration": current["metadata"].get("generation", 1),
                         "conditions": [{"type": "Ready", "status": "True", "reason": "TestReady"}]}
    api.ok("PUT", child_path(api_version, kind, name, "status"), current)


def test_monitor_turns_ready_when_the_children_do(api, operator):
    for obj in children(api, "iris").values():
        _mark_ready(api, obj)
    monitor = wait_for("Ready=True", lambda: (lambda m: m if conditions(m).get("Ready", {}).get("status") == "True"
                                              else None)(api.get(f"{MONITORS}/iris")), timeout=60)
    assert conditions(monitor)["WiringReady"]["reason"] == "AllChildrenReady"
    assert monitor["status"]["observedGeneration"] == monitor["metadata"]["generation"]


def test_spec_change_is_applied_and_observed_generation_follows(api, operator):
    monitor = api.get(f"{MONITORS}/iris")
    patch = {"spec": {"window": {"duration": "30s", "slide": "10s"}}}
    updated = api.ok("PATCH", f"{MONITORS}/iris", patch, content_type="application/merge-patch+json")
    generation = updated["metadata"]["generation"]
    assert generation == monitor["metadata"]["generation"] + 1
    wait_for("observedGeneration of the new spec", lambda: (api.get(f"{MONITORS}/iris").get("status") or {}).get(
        "observedGeneration") == generation)
    desired = expected_children(updated, updated["metadata"]["uid"])
    found = children(api, "iris")
    for obj in desired:
        assert reconcile.changed_fields(obj, found[reconcile.child_key(obj)]) == [], obj["metadata"]["name"]
    conds = conditions(api.get(f"{MONITORS}/iris"))
    assert {c["observedGeneration"] for c in conds.values()} == {generation}
    assert api.get(f"{MONITORS}/iris")["status"]["window"] == "30s every 10s"


def test_edited_child_is_corrected(api, operator):
    [service] = [o for (kind, name), o in children(api, "iris").items() if kind == "Service" and name.endswith("-drift")]
    name = service["metadata"]["name"]
    rendered = service["spec"]["template"]["spec"]["containers"][0]["image"]
    edit = {"spec": {"template": {"spec": {"containers": [dict(service["spec"]["template"]["spec"]["containers"][0],
                                                               image="example.invalid/hijacked:1")]}}}}
    api.ok("PATCH", child_path(render.SERVING_API, "Service", name) + "?fieldManager=someone-else", edit,
           content_type="application/merge-patch+json")
    wait_for("the operator to restore the image", lambda: api.get(child_path(render.SERVING_API, "Service", name))[
        "spec"]["template"]["spec"]["containers"][0]["image"] == rendered, timeout=60)


def test_deleted_child_is_recreated(api, operator):
    [trigger] = [o for (kind, _), o in children(api, "iris").items() if kind == "Trigger"][:1]
    name = trigger["metadata"]["name"]
    api.ok("DELETE", child_path(render.EVENTING_API, "Trigger", name))
    recreated = wait_for("the Trigger to come back", lambda: api.get(child_path(render.EVENTING_API, "Trigger", name)),
                         timeout=60)
    assert recreated["metadata"]["uid"] != trigger["metadata"]["uid"]
    monitor = api.get(f"{MONITORS}/iris")
    [desired] = [o for o in expected_children(monitor, monitor["metadata"]["uid"]) if reconcile.child_key(o) == ("Trigger", name)]
    assert reconcile.changed_fields(desired, recreated) == []


def test_children_no_longer_desired_are_deleted(api, operator):
    before = children(api, "iris")
    api.ok("PATCH", f"{MONITORS}/iris", {"spec": {"drift": None}}, content_type="application/merge-patch+json")
    updated = api.get(f"{MONITORS}/iris")
    want = {reconcile.child_key(o) for o in expected_children(updated, updated["metadata"]["uid"])}
    assert want < set(before)  # dropping drift removes children
    wait_for("the drift children to be deleted", lambda: set(children(api, "iris")) == want, timeout=60)


def test_invalid_spec_is_reported_and_children_are_left_alone(api, operator):
    """A spec the CRD admits but the parser refuses (day windows escape the CEL slide rule)."""
    before = children(api, "iris")
    updated = api.ok("PATCH", f"{MONITORS}/iris", {"spec": {"window": {"duration": "1d", "slide": "2d"}}},
                     content_type="application/merge-patch+json")
    generation = updated["metadata"]["generation"]
    monitor = wait_for("ConfigValid=False", lambda: (lambda m: m if conditions(m).get("ConfigValid", {}).get(
        "observedGeneration") == generation else None)(api.get(f"{MONITORS}/iris")))
    conds = conditions(monitor)
    assert conds["ConfigValid"]["status"] == "False" and "spec.window.slide" in conds["ConfigValid"]["message"]
    assert conds["Ready"]["reason"] == "InvalidSpec"
    events = api.ok("GET", f"/api/v1/namespaces/{NS}/events")["items"]
    mine = [e for e in events if e["involvedObject"].get("uid") == monitor["metadata"]["uid"]
            and e["reason"] == "InvalidSpec"]
    assert mine and "spec.window.slide" in mine[0]["message"] and mine[0]["apiVersion"] == "v1"
    time.sleep(RESYNC_SECONDS + 1)  # a resync later, nothing was deleted or rewritten
    after = children(api, "iris")
    assert {k: v["metadata"]["resourceVersion"] for k, v in after.items()} == {
        k: v["metadata"]["resourceVersion"] for k, v in before.items()}


def test_monitor_deletion(api, operator):
    monitor = api.get(f"{MONITORS}/iris")
    api.ok("DELETE", f"{MONITORS}/iris")
    wait_for("the monitor to be gone", lambda: api.get(f"{MONITORS}/iris") is None, timeout=30)
    # This server runs no garbage collector (kube-controller-manager does that in a cluster):
    # the children stay, each owned by the deleted monitor, which is what the collector acts on.
    left = children(api, "iris")
    assert left
    for obj in left.values():
        [owner] = obj["metadata"]["ownerReferences"]
        assert owner["uid"] == monitor["metadata"]["uid"] and owner["blockOwnerDeletion"] is True
    assert "Traceback" not in operator.log_path.read_text(errors="replace"), operator_log(operator)
