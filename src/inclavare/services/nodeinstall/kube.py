"""The node label, through the Kubernetes API server: ``PATCH /api/v1/nodes/NAME`` with a strategic merge
patch of ``metadata.labels`` (a null value removes a label), authenticated with the pod's service account.

In a pod, the API server is ``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`` with the token and CA
under /var/run/secrets/kubernetes.io/serviceaccount; ``--kube-api``/``--kube-token-file``/``--kube-ca`` name
others (tests: a fake server over plain http). Outside a cluster the label step is skipped with a message.
The DaemonSet's ServiceAccount may only get and patch nodes (deploy/kubernetes/base/installer-rbac.yaml).
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from inclavare.services.nodeinstall import NodeInstallError

LABEL = "inclavare-containers.io/rune"
LABEL_VALUE = "true"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
MAX_RESPONSE = 1 << 20


@dataclass(frozen=True)
class Api:
    """Where the API server is and how to authenticate."""

    url: str  # scheme://host:port
    token: str
    ca_file: str | None


def in_cluster(api_url: str | None = None, token_file: str | None = None, ca_file: str | None = None) -> Api | None:
    """The API server to talk to, or None outside a cluster (no --kube-api and no KUBERNETES_SERVICE_HOST)."""
    if api_url is None:
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        if not host:
            return None
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        api_url = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        ca_file = ca_file or os.path.join(SA_DIR, "ca.crt")
    u = urllib.parse.urlsplit(api_url)
    if u.scheme not in ("http", "https") or not u.netloc:
        raise NodeInstallError(f"--kube-api {api_url!r}: not an http(s)://HOST:PORT URL")
    token_file = token_file or os.path.join(SA_DIR, "token")
    try:
        with open(token_file) as f:
            token = f.read(16384).strip()
    except OSError as e:
        raise NodeInstallError(f"service account token {token_file}: {e.strerror}") from None
    if not token or any(c.isspace() for c in token):
        raise NodeInstallError(f"service account token {token_file}: empty or not one token")
    return Api(api_url.rstrip("/"), token, ca_file if u.scheme == "https" else None)


def node_name(flag: str | None) -> str:
    """--node, else NODE_NAME (the DaemonSet sets it from spec.nodeName)."""
    name = flag or os.environ.get("NODE_NAME", "")
    if not name:
        raise NodeInstallError("in a cluster, the node's name is needed: --node NAME or NODE_NAME")
    if len(name) > 253 or not all(c.isalnum() or c in "-." for c in name) or name != name.lower():
        raise NodeInstallError(f"node name {name[:64]!r} is not a DNS subdomain")
    return name


def get_node(api: Api, node: str, timeout: float = 15.0) -> dict[str, object]:
    """GET the node: the installer's check, before it changes anything, that the API server, its certificate,
    the token and the node's name all work."""
    obj = _call(api, node, "GET", None, None, timeout, "reading")
    if not isinstance(obj, dict) or obj.get("kind") != "Node":
        raise NodeInstallError(f"reading node {node}: the API server's answer is not a Node")
    return obj


def set_labels(api: Api, node: str, labels: dict[str, str | None], timeout: float = 15.0) -> None:
    """Strategic-merge ``labels`` into the node's metadata (None: remove the label)."""
    body = json.dumps({"metadata": {"labels": labels}}).encode()
    _call(api, node, "PATCH", body, "application/strategic-merge-patch+json", timeout, "labelling")


def _call(api: Api, node: str, method: str, body: bytes | None, content_type: str | None, timeout: float,
          doing: str) -> object:
    """One request on /api/v1/nodes/NODE; the decoded JSON answer."""
    headers = {"Authorization": f"Bearer {api.token}", "Accept": "application/json"}
    if content_type:
        headers["Content-Type"] = content_type
    req = urllib.request.Request(f"{api.url}/api/v1/nodes/{urllib.parse.quote(node)}", data=body, method=method,
                                 headers=headers)
    ctx = None
    if api.url.startswith("https:"):
        try:
            ctx = ssl.create_default_context(cafile=api.ca_file)
        except OSError as e:
            raise NodeInstallError(f"API server CA {api.ca_file}: {e.strerror}") from None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
            data = r.read(MAX_RESPONSE)
    except urllib.error.HTTPError as e:
        raise NodeInstallError(f"{doing} node {node}: the API server answered {e.code}: "
                               f"{_status_message(e.read(MAX_RESPONSE))}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise NodeInstallError(f"{doing} node {node}: {api.url}: {reason}") from None
    try:
        return json.loads(data)
    except ValueError:
        raise NodeInstallError(f"{doing} node {node}: the API server's answer is not JSON") from None


def _status_message(body: bytes) -> str:
    """The ``message`` of a Kubernetes Status body, else its first line."""
    try:
        msg = json.loads(body).get("message")
        if isinstance(msg, str) and msg:
            return msg.splitlines()[0][:300]
    except (ValueError, AttributeError):
        pass
    return (body.decode(errors="replace").strip().splitlines() or ["(no body)"])[0][:300]
