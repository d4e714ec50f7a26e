"""inclavare-node-install without containerd: the config.toml merge (idempotent, comments kept, conflicts), and
install/uninstall on a temp host root (exact bytes back, launchers put back, nothing of ours left), the restart
decision, and the node label against a fake API server."""

from __future__ import annotations

import datetime
import json
import os
import ssl
import stat
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import tomlkit

from inclavare.cli.node_install import main
from inclavare.services.nodeinstall import NodeInstallError, containerdconf, restart
from inclavare.services.nodeinstall.containerdconf import Runtime

RT = Runtime(config_path="/opt/inclavare/etc/rune-shim.toml")
CFG_V2 = b"""# my containerd
version = 2
root = "/var/lib/containerd"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.6"  # pinned by ops
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes]
        # the default runtime
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"
          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
            SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/opt/cni/bin"

[metrics]
  address = ""
"""


def _runtimes(text: bytes, plugin: str = "io.containerd.grpc.v1.cri") -> dict[str, Any]:
    return dict(tomlkit.parse(text.decode()).unwrap()["plugins"][plugin]["containerd"]["runtimes"])


# -- the merge ---------------------------------------------------------------------------------------------


def test_add_keeps_everything_and_is_idempotent() -> None:
    out = containerdconf.add_runtime(CFG_V2, RT, "config.toml")
    rts = _runtimes(out)
    assert rts["rune"] == {"runtime_type": "io.containerd.rune.v2", "pod_annotations": ["enclave.*"],
                           "options": {"ConfigPath": "/opt/inclavare/etc/rune-shim.toml"}}
    assert rts["runc"] == {"runtime_type": "io.containerd.runc.v2", "options": {"SystemdCgroup": False}}
    text = out.decode()
    for line in CFG_V2.decode().splitlines():  # every line of the admin's file, comments and indentation too
        assert line in text.splitlines()
    assert text.index("# the default runtime") < text.index(".runtimes.rune]") < text.index("cni]")
    assert containerdconf.add_runtime(out, RT, "config.toml") is out  # the second run changes nothing
    assert containerdconf.remove_runtime(out, "config.toml").replace(b"\n\n", b"\n") == CFG_V2.replace(b"\n\n", b"\n")


@pytest.mark.parametrize(("text", "plugin"), [
    (b"", "cri"),                      # version 1 (the default)
    (b"version = 2\n", "io.containerd.grpc.v1.cri"),
    (b"version = 3\n", "io.containerd.cri.v1.runtime"),
    (b'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\nsnapshotter = "overlayfs"\n',
     "io.containerd.grpc.v1.cri"),
])
def test_the_table_goes_where_the_version_says(text: bytes, plugin: str) -> None:
    out = containerdconf.add_runtime(text, RT, "c.toml")
    assert _runtimes(out, plugin)["rune"]["runtime_type"] == "io.containerd.rune.v2"
    assert containerdconf.current(out, "c.toml") == RT.table()


@pytest.mark.parametrize(("text", "message"), [
    (b"version = 2\n[plugins\n", "c.toml: not valid TOML"),
    (b"\xff\xfe", "c.toml: not UTF-8 text"),
    (b"version = 7\n", "c.toml: version = 7: containerd config versions are 1, 2 and 3"),
    (b'version = 2\nplugins = "x"\n', "c.toml: plugins is a String, not a table"),
    (b'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.rune]\n'
     b'runtime_type = "io.containerd.kata.v2"\n',
     "c.toml: a CRI runtime 'rune' is already configured (runtime_type = 'io.containerd.kata.v2') and was not added"),
])
def test_bad_configs_are_one_line_errors(text: bytes, message: str) -> None:
    with pytest.raises(NodeInstallError) as e:
        containerdconf.add_runtime(text, RT, "c.toml")
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_an_older_table_of_ours_is_replaced_on_upgrade() -> None:
    old = containerdconf.add_runtime(CFG_V2, Runtime(config_path="/old/rune-shim.toml"), "c")
    with pytest.raises(NodeInstallError, match="already configured"):
        containerdconf.add_runtime(old, RT, "c")
    assert containerdconf.current(containerdconf.add_runtime(old, RT, "c", replace=True), "c") == RT.table()


# -- install / uninstall on a temp host root -----------------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with the bytes of each file (None: a directory or a link)."""
    out: dict[str, bytes | None] = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = p.read_bytes() if p.is_file() and not p.is_symlink() else None
    return out


@pytest.fixture
def host(tmp_path: Path) -> Path:
    h = tmp_path / "host"
    (h / "etc/containerd").mkdir(parents=True)
    (h / "etc/containerd/config.toml").write_bytes(CFG_V2)
    os.chmod(h / "etc/containerd/config.toml", 0o640)
    (h / "usr/bin").mkdir(parents=True)
    (h / "usr/bin/python3.11").symlink_to(sys.executable)
    (h / "usr/local/bin").mkdir(parents=True)
    (h / "usr/local/bin/rune").write_bytes(b"#!/bin/sh\necho someone else's rune\n")
    os.chmod(h / "usr/local/bin/rune", 0o755)
    return h


def _args(h: Path, *more: str) -> list[str]:
    return ["--host-root", str(h), "--host-view", str(h), "--restart", "none", *more]


def test_install_then_uninstall_leaves_the_host_as_it_was(host: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    before = _tree(host)
    assert main(_args(host)) == 0
    out = capsys.readouterr().out
    assert "not in a Kubernetes cluster: node not labelled" in out
    cfg = (host / "etc/containerd/config.toml").read_bytes()
    assert _runtimes(cfg)["rune"]["options"]["ConfigPath"] == f"{host}/opt/inclavare/etc/rune-shim.toml"
    assert stat.S_IMODE(os.stat(host / "etc/containerd/config.toml").st_mode) == 0o640
    assert (host / "opt/inclavare/backup/config.toml").read_bytes() == CFG_V2
    lib = host / "opt/inclavare/lib"
    assert (lib / "inclavare/cli/rune.py").is_file() and (lib / "tomlkit").is_dir() and (lib / "grpc").is_dir()
    assert not list(lib.rglob("__pycache__"))
    for name in ("rune", "containerd-shim-rune-v2", "epm", "sgx-tools", "inclavare-enclave-info"):
        text = (host / "usr/local/bin" / name).read_text()
        assert text.startswith(f"#!{host}/usr/bin/python3.11 -IS\n") and repr(str(lib)) in text
    # the launcher runs from the copy alone (-I -S: no venv, no site-packages)
    import subprocess

    r = subprocess.run([str(host / "usr/local/bin/rune"), "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    # idempotent: the second run leaves config.toml alone and keeps the first backup
    assert main(_args(host)) == 0
    assert "unchanged, containerd not restarted" in capsys.readouterr().out
    assert (host / "etc/containerd/config.toml").read_bytes() == cfg
    assert (host / "opt/inclavare/backup/config.toml").read_bytes() == CFG_V2
    assert main(_args(host, "--uninstall")) == 0
    assert _tree(host) == before  # exact bytes: config.toml, someone else's rune; nothing of ours
    assert stat.S_IMODE(os.stat(host / "etc/containerd/config.toml").st_mode) == 0o640
    assert main(_args(host, "--uninstall")) == 0
    assert "nothing installed" in capsys.readouterr().out


def test_uninstall_of_an_edited_config_takes_out_only_our_table(host: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(_args(host)) == 0
    cfg = host / "etc/containerd/config.toml"
    cfg.write_bytes(cfg.read_bytes() + b'\n[debug]\n  level = "debug"  # added later\n')
    (host / "usr/local/bin/epm").write_text("#!/bin/sh\n# replaced by hand\n")
    assert main(_args(host, "--uninstall")) == 0
    text = cfg.read_text()
    assert "rune" not in _runtimes(cfg.read_bytes()) and 'level = "debug"  # added later' in text
    assert (host / "usr/local/bin/epm").read_text() == "#!/bin/sh\n# replaced by hand\n"
    assert not (host / "opt/inclavare").exists()


def test_no_config_before_means_none_after(host: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    (host / "etc/containerd/config.toml").unlink()
    assert main(_args(host)) == 0
    assert _runtimes((host / "etc/containerd/config.toml").read_bytes())["rune"]
    assert main(_args(host, "--uninstall")) == 0
    assert not (host / "etc/containerd/config.toml").exists()


@pytest.mark.parametrize(("config", "extra", "message"), [
    (b"version = 2\n[plugins\n", [], "config.toml: not valid TOML"),
    (b'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.rune]\nruntime_type = "x"\n', [],
     "a CRI runtime 'rune' is already configured"),
    (CFG_V2, ["--python", "/usr/bin/python9"], "the host has no /usr/bin/python9"),
    (CFG_V2, ["--restart", "auto"], "cannot restart containerd: the host does not run systemd"),
    (CFG_V2, ["--restart", "auto", "--containerd-pid-file", "/run/none.pid"], "containerd pid file"),
    (CFG_V2, ["--install-dir", "opt"], "--install-dir 'opt': a host path must be absolute"),
    (CFG_V2, ["--containerd-config", "/etc/containerd/link.toml"],
     "/etc/containerd/link.toml is a symbolic link: pass --containerd-config with the file it names"),
])
def test_bad_input_changes_nothing(host: Path, config: bytes, extra: list[str], message: str,
                                   capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    (host / "etc/containerd/config.toml").write_bytes(config)
    (host / "etc/containerd/link.toml").symlink_to("config.toml")
    before = _tree(host)
    args = _args(host, *extra)
    if "--restart" in extra:
        args.remove("none")
        args.remove("--restart")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("inclavare-node-install: ") and message in err and err.count("\n") == 1, err
    assert _tree(host) == before


def test_restart_plan(tmp_path: Path) -> None:
    (tmp_path / "run/systemd/system").mkdir(parents=True)
    p = restart.plan(str(tmp_path))
    assert p is not None and p.kind == "systemd" and p.unit == "containerd"
    assert restart.systemd_command("containerd", str(tmp_path)) == \
        ["nsenter", "--target", "1", "--mount", "--", "systemctl", "restart", "containerd"]
    assert restart.systemd_command("containerd", "/") == ["systemctl", "restart", "containerd"]
    assert restart.plan(str(tmp_path), method="none") is None
    with pytest.raises(NodeInstallError, match="did not boot with systemd"):
        restart.plan(str(tmp_path / "run"), method="systemd")
    with pytest.raises(NodeInstallError, match=f"pid {os.getpid()} is .*, not containerd"):
        restart.plan(str(tmp_path / "run"), pid=os.getpid())
    (tmp_path / "bad.pid").write_text("12ab\n")
    with pytest.raises(NodeInstallError, match="'12ab' is not a pid"):
        restart.plan("/nonexistent", pid_file=str(tmp_path / "bad.pid"))


# -- the node label -----------------------------------------------------------------------------------------


class FakeApi:
    """An API server that accepts PATCH /api/v1/nodes/NAME with the right token and records the patches."""

    TOKEN = "s3cret-token"

    def __init__(self, tls: tuple[str, str] | None = None) -> None:
        self.patches: list[tuple[str, str, dict[str, Any]]] = []
        self.labels: dict[str, str] = {"kubernetes.io/hostname": "node-1"}
        self.gets = 0
        api = self

        class H(BaseHTTPRequestHandler):
            def _refused(self) -> bool:
                if self.headers["Authorization"] != f"Bearer {api.TOKEN}":
                    self._answer(401, {"kind": "Status", "message": "Unauthorized"})
                elif self.path != "/api/v1/nodes/node-1":
                    name = self.path.rsplit("/", 1)[-1]
                    self._answer(404, {"kind": "Status", "message": f'nodes "{name}" not found'})
                else:
                    return False
                return True

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                api.gets += 1
                if not self._refused():
                    self._answer(200, {"kind": "Node", "metadata": {"name": "node-1", "labels": api.labels}})

            def do_PATCH(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self._refused():
                    return
                patch = json.loads(body)
                api.patches.append((self.path, self.headers["Content-Type"], patch))
                for k, v in patch["metadata"]["labels"].items():  # a strategic merge of a map: null deletes
                    if v is None:
                        api.labels.pop(k, None)
                    else:
                        api.labels[k] = v
                self._answer(200, {"kind": "Node", "metadata": {"name": "node-1", "labels": api.labels}})

            def _answer(self, code: int, obj: dict[str, Any]) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        if tls is not None:  # (cert file, key file)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            self.url = f"https://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    api = FakeApi()
    try:
        yield api
    finally:
        api.server.shutdown()
        api.server.server_close()


def test_the_node_label_is_patched_and_removed(host: Path, tmp_path: Path, fake_api: FakeApi,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "token"
    token.write_text(FakeApi.TOKEN + "\n")
    monkeypatch.setenv("NODE_NAME", "node-1")
    kube = ["--kube-api", fake_api.url, "--kube-token-file", str(token)]
    assert main(_args(host, *kube)) == 0
    assert fake_api.patches == [("/api/v1/nodes/node-1", "application/strategic-merge-patch+json",
                                 {"metadata": {"labels": {"inclavare-containers.io/rune": "true"}}})]
    assert fake_api.labels["inclavare-containers.io/rune"] == "true"
    assert main(_args(host, "--uninstall", *kube)) == 0
    assert fake_api.patches[-1][2] == {"metadata": {"labels": {"inclavare-containers.io/rune": None}}}
    assert fake_api.labels == {"kubernetes.io/hostname": "node-1"}


def test_label_errors_are_one_line(host: Path, tmp_path: Path, fake_api: FakeApi,
                                   capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "token"
    token.write_text("wrong\n")
    monkeypatch.delenv("NODE_NAME", raising=False)
    kube = ["--kube-api", fake_api.url, "--kube-token-file", str(token)]
    before = _tree(host)
    assert main(_args(host, *kube)) == 1  # no node name: refused before anything changes
    assert "the node's name is needed" in capsys.readouterr().err
    assert _tree(host) == before
    assert main(_args(host, *kube, "--node", "node-1")) == 1  # a wrong token: found by the GET, before changes
    assert capsys.readouterr().err == ("inclavare-node-install: reading node node-1: the API server answered "
                                       "401: Unauthorized\n")
    token.write_text(FakeApi.TOKEN)
    assert main(_args(host, *kube, "--node", "node-2")) == 1
    assert capsys.readouterr().err == ("inclavare-node-install: reading node node-2: the API server answered "
                                       "404: nodes \"node-2\" not found\n")
    assert fake_api.patches == [] and fake_api.gets == 2
    assert _tree(host) == before


def _self_signed(d: Path, name: str) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (its own CA), as files (cert, key)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (d / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    return str(d / f"{name}.crt"), str(d / f"{name}.key")


def test_in_cluster_over_https_checks_the_ca(host: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-cluster path: KUBERNETES_SERVICE_HOST/PORT, https, the API server's certificate checked against the
    service account's CA; a certificate from another CA is refused (one line) before anything changes."""
    cert, key = _self_signed(tmp_path, "apiserver")
    other, _ = _self_signed(tmp_path, "other")
    api = FakeApi(tls=(cert, key))
    try:
        token = tmp_path / "token"
        token.write_text(FakeApi.TOKEN)
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(api.port))
        monkeypatch.setenv("NODE_NAME", "node-1")
        before = _tree(host)
        assert main(_args(host, "--kube-token-file", str(token), "--kube-ca", other)) == 1
        err = capsys.readouterr().err
        assert err.startswith("inclavare-node-install: reading node node-1: https://127.0.0.1:") and \
            "CERTIFICATE_VERIFY_FAILED" in err and err.count("\n") == 1, err
        assert api.patches == [] and _tree(host) == before  # nothing changed
        assert main(_args(host, "--kube-token-file", str(token), "--kube-ca", cert)) == 0
        assert api.labels["inclavare-containers.io/rune"] == "true"
        assert main(_args(host, "--uninstall", "--kube-token-file", str(token), "--kube-ca", cert)) == 0
        assert "inclavare-containers.io/rune" not in api.labels
        assert _tree(host) == before
    finally:
        api.server.shutdown()
        api.server.server_close()


def test_backups_cross_mounts(host: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In the DaemonSet, /host/usr/local/bin and /host/opt/inclavare are separate mounts: rename(2) between them
    fails with EXDEV, so someone else's launcher is copied into the backup and back (a link stays a link)."""
    import errno

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    (host / "usr/local/bin/epm").symlink_to("/bin/true")
    before = _tree(host)
    real_rename = os.rename

    def rename(src: str, dst: str) -> None:
        if Path(src).parent.parent != Path(dst).parent.parent:  # another "mount"
            raise OSError(errno.EXDEV, "Invalid cross-device link", src)
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    assert main(_args(host)) == 0
    assert (host / "opt/inclavare/backup/bin/epm").is_symlink()
    assert (host / "opt/inclavare/backup/bin/rune").read_bytes() == before["usr/local/bin/rune"]
    assert main(_args(host, "--uninstall")) == 0
    assert _tree(host) == before
    assert os.readlink(host / "usr/local/bin/epm") == "/bin/true"
    assert stat.S_IMODE(os.stat(host / "usr/local/bin/rune").st_mode) == 0o755
