"""deploy/kubernetes: every kustomization renders offline with ``kubectl kustomize`` and every object it renders
is valid against the Kubernetes API schema, as the official Python client's models carry it (strictly: an
unknown field or a wrong type fails, which the client itself lets through; required fields are the models'
own client-side validation). Then the facts the pieces rely on each other for: the RuntimeClass handler is the
runtime the installer writes, its nodeSelector the label the installer sets, the installer is privileged with
the host's directories, the device plugin sees the kubelet's socket, the samples ask for what exists.

``KUBECTL`` picks another kubectl (Debian 12's kubernetes-client 1.20 renders these too)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from inclavare.services.nodeinstall import containerdconf, kube

yaml = pytest.importorskip("yaml", reason="PyYAML comes with the dev dependency kubernetes")
k8s = pytest.importorskip("kubernetes.client", reason="the kubernetes client is a dev dependency (uv sync)")

DEPLOY = Path(__file__).resolve().parents[4] / "deploy" / "kubernetes"
KUSTOMIZATIONS = [".", "samples", "verdictd"]
KUBECTL = os.environ.get("KUBECTL") or shutil.which("kubectl")
NAMESPACE = "inclavare-system"
IMAGE = "localhost/inclavare-containers:latest"
CLUSTER_SCOPED = {"Namespace", "RuntimeClass", "ClusterRole", "ClusterRoleBinding"}

needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed (Debian: kubernetes-client; "
                                                           "scripts/setup.sh installs it)")


class SchemaError(AssertionError):
    pass


_LIST = re.compile(r"^(?:List\[|list\[)(.+)\]$")
_DICT = re.compile(r"^(?:Dict\[str, |dict\(str, )(.+)[\])]$")
_PRIMITIVES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (float, int), "bool": (bool,)}


def check(value: Any, typ: str, where: str) -> None:
    """``value`` (plain JSON) against the client's type name ``typ``: models by their attribute maps, recursively;
    every field must be known and of its type."""
    if value is None:
        return
    if m := _LIST.match(typ):
        if not isinstance(value, list):
            raise SchemaError(f"{where}: expected a list, got {type(value).__name__}")
        for i, v in enumerate(value):
            check(v, m.group(1), f"{where}[{i}]")
        return
    if m := _DICT.match(typ):
        if not isinstance(value, dict):
            raise SchemaError(f"{where}: expected a map, got {type(value).__name__}")
        for k, v in value.items():
            check(v, m.group(1), f"{where}.{k}")
        return
    if typ in _PRIMITIVES:
        if not isinstance(value, _PRIMITIVES[typ]) or (typ != "bool" and isinstance(value, bool)):
            raise SchemaError(f"{where}: expected {typ}, got {type(value).__name__} {value!r}")
        return
    if typ in ("object", "datetime", "date"):
        return
    model = getattr(k8s, typ, None)
    if model is None:
        raise SchemaError(f"{where}: the client knows no type {typ}")
    if not isinstance(value, dict):
        raise SchemaError(f"{where}: expected a {typ} object, got {type(value).__name__}")
    by_json = {j: attr for attr, j in model.attribute_map.items()}
    for key, v in value.items():
        if key not in by_json:
            raise SchemaError(f"{where}.{key}: unknown field of {typ}")
        check(v, model.openapi_types[by_json[key]], f"{where}.{key}")


def model_name(obj: dict[str, Any]) -> str:
    version = obj["apiVersion"].split("/")[-1]
    return version[0].upper() + version[1:] + obj["kind"]


def validate(obj: dict[str, Any]) -> Any:
    """Strict schema check, then the client's own deserialization (its required-field validation); returns the
    model object."""
    name = model_name(obj)
    where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    check(obj, name, where)

    try:
        return k8s.ApiClient().deserialize(json.dumps(obj), name, "application/json")
    except (ValueError, TypeError) as e:
        raise SchemaError(f"{where}: {e}") from None


def render(kdir: str) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    r = subprocess.run([KUBECTL, "kustomize", str(DEPLOY / kdir)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Warning" not in r.stderr, r.stderr  # no deprecated kustomize fields
    return [d for d in yaml.safe_load_all(r.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed")
    return {k: render(k) for k in KUSTOMIZATIONS}


def _one(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


# -- the validator itself --------------------------------------------------------------------------------


def test_the_strict_check_catches_what_the_client_lets_through() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    assert validate(pod).spec.containers[0].name == "c"
    bad = json.loads(json.dumps(pod))
    bad["spec"]["containers"][0]["securtyContext"] = {"privileged": True}  # a typo the API server would refuse
    with pytest.raises(SchemaError, match=r"Pod/p.spec.containers\[0\].securtyContext: unknown field of V1Container"):
        validate(bad)
    bad = json.loads(json.dumps(pod))
    bad["spec"]["hostPID"] = "yes"
    with pytest.raises(SchemaError, match=r"spec\.hostPID: expected bool, got str"):
        validate(bad)
    bad = json.loads(json.dumps(pod))
    del bad["spec"]["containers"][0]["name"]  # required: the client's own validation
    with pytest.raises(SchemaError, match="name"):
        validate(bad)
    rc = {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "r"}, "handler": "rune",
          "scheduling": {"nodeSelector": {"a": 1}}}
    with pytest.raises(SchemaError, match=r"scheduling\.nodeSelector\.a: expected str, got int"):
        validate(rc)


# -- the manifests -------------------------------------------------------------------------------------------


@needs_kubectl
@pytest.mark.parametrize("kdir", KUSTOMIZATIONS)
def test_every_rendered_object_is_valid(rendered: dict[str, list[dict[str, Any]]], kdir: str) -> None:
    objs = rendered[kdir]
    assert objs
    for obj in objs:
        validate(obj)
        ns = obj["metadata"].get("namespace")
        if obj["kind"] in CLUSTER_SCOPED:
            assert ns is None, f"{obj['kind']}/{obj['metadata']['name']} is cluster-scoped"
        elif kdir != "samples":
            assert ns == NAMESPACE, f"{obj['kind']}/{obj['metadata']['name']} in {ns}"
    images = [c["image"] for o in objs if o["kind"] in ("DaemonSet", "Deployment")
              for c in o["spec"]["template"]["spec"]["containers"]]
    assert all(i == IMAGE for i in images), images


@needs_kubectl
def test_runtime_classes_match_the_installer(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = rendered["."]
    for name in ("rune", "rune-sim"):
        rc = _one(objs, "RuntimeClass", name)
        assert rc["handler"] == containerdconf.RUNTIME_NAME  # the CRI runtime inclavare-node-install writes
        assert rc["scheduling"]["nodeSelector"] == {kube.LABEL: kube.LABEL_VALUE}  # the label it sets
        assert set(rc["overhead"]["podFixed"]) == {"cpu", "memory"}


@needs_kubectl
def test_the_installer_daemonset(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objs = rendered["."]
    ds = _one(objs, "DaemonSet", "inclavare-node-install")
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostPID"] is True  # nsenter into PID 1 (systemd) or the host's containerd pid
    (c,) = spec["containers"]
    assert c["securityContext"]["privileged"] is True
    assert "inclavare-node-install --host-root /host" in " ".join(c["command"] + c["args"])
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in c["env"]
    volumes = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}
    for host_dir in ("/etc/containerd", "/usr/local/bin", "/opt/inclavare", "/run"):
        assert mounts["/host" + host_dir] == host_dir
    # RBAC: its service account may get and patch nodes, nothing more
    sa = spec["serviceAccountName"]
    _one(objs, "ServiceAccount", sa)
    (binding,) = [b for b in objs if b["kind"] == "ClusterRoleBinding"
                  and {"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE} in b["subjects"]]
    role = _one(objs, "ClusterRole", binding["roleRef"]["name"])
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}]
    ns = _one(objs, "Namespace", NAMESPACE)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


@needs_kubectl
def test_the_device_plugin_daemonset(rendered: dict[str, list[dict[str, Any]]]) -> None:
    ds = _one(rendered["."], "DaemonSet", "inclavare-sgx-device-plugin")
    spec = ds["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert c["command"] == ["inclavare-sgx-device-plugin"]
    sock = c["args"][c["args"].index("--kubelet-socket") + 1]
    volumes = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}
    assert mounts["/var/lib/kubelet/device-plugins"] == "/var/lib/kubelet/device-plugins"
    assert os.path.dirname(sock) == "/var/lib/kubelet/device-plugins"
    assert mounts["/dev"] == "/dev"
    assert spec["nodeSelector"] == {kube.LABEL: kube.LABEL_VALUE}


@needs_kubectl
def test_the_samples(rendered: dict[str, list[dict[str, Any]]]) -> None:
    classes = {o["metadata"]["name"] for o in rendered["."] if o["kind"] == "RuntimeClass"}
    pods = {o["metadata"]["name"]: o for o in rendered["samples"] if o["kind"] == "Pod"}
    sgx = pods["confidential-hello"]
    assert sgx["spec"]["runtimeClassName"] == "rune" and "rune" in classes
    (c,) = sgx["spec"]["containers"]
    res = c["resources"]
    assert res["requests"]["sgx.intel.com/epc"] == res["limits"]["sgx.intel.com/epc"]  # extended: request = limit
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["ENCLAVE_TYPE"] == "intelSgx" and env["ENCLAVE_RUNTIME_PATH"].startswith("/")
    assert any(k.startswith("enclave.") for k in sgx["metadata"]["annotations"])  # passed by pod_annotations
    enc = pods["encrypted-app"]
    assert enc["spec"]["runtimeClassName"] == "rune-sim" and "rune-sim" in classes
    env = {e["name"]: e.get("value") for e in enc["spec"]["containers"][0]["env"]}
    assert (env["ENCLAVE_TYPE"], env["ENCLAVE_RUNTIME_PATH"]) == ("sim", "builtin:sim")  # opens sealed layers
    assert env["ENCLAVE_KBS_KEY"].count("/") == 2
    # the KBS URL names the verdictd Service and its KBS port
    svc = _one(rendered["verdictd"], "Service", "verdictd")
    port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "kbs")
    assert env["ENCLAVE_KBS_URL"] == f"https://verdictd.{NAMESPACE}.svc:{port}"


@needs_kubectl
def test_verdictd_state_and_secrets_pass_its_privacy_checks(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """verdictd refuses a state directory or a secret file that other users can reach (services.statedb,
    verdictd.store.read_secret_file): the state directory must be one it makes below the volume's root (a
    mount's root is not 0700), the Secret's files 0400 and readable by the uid it runs as (Kubernetes makes them
    root's), and the KEK outside the state directory."""
    dep = _one(rendered["verdictd"], "Deployment", "verdictd")
    spec = dep["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    flags = dict(a[2:].split("=", 1) for a in c["args"])
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    state_mount = next(mounts[n] for n, v in volumes.items() if "persistentVolumeClaim" in v)
    assert os.path.dirname(flags["state-dir"]) == state_mount
    secret_mount = next(mounts[n] for n, v in volumes.items() if "secret" in v)
    secret = next(v["secret"] for v in volumes.values() if "secret" in v)
    assert secret["defaultMode"] & 0o077 == 0
    assert c["securityContext"]["runAsUser"] == 0 and c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    for f in ("kek-file", "admin-token-file", "kbs-key"):
        assert os.path.dirname(flags[f]) == secret_mount
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
