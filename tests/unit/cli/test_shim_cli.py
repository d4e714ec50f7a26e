"""containerd-shim-rune-v2's command-line contract without containerd: Go flag parsing, the socket address
and grouping, `start` finding a live group shim (prints only the address), bad options, and `delete`
(a DeleteResponse on stdout, a dead shim's socket removed, a live one kept)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import any_pb2

from inclavare.cli import shim as cli
from inclavare.shim import startup
from inclavare.shim.proto.runc import oci_pb2
from inclavare.shim.proto.task import shim_pb2

BASE = ["-namespace", "ns1", "-address", "/run/c/containerd.sock", "-publish-binary", "/usr/bin/containerd"]


# ------------------------------------------------------------------------------------------ flags


def test_go_flag_forms() -> None:
    f = cli.parse_flags([*BASE, "-id", "c1", "--bundle=/b", "-debug", "start"])
    assert (f["namespace"], f["address"], f["publish-binary"], f["id"], f["bundle"], f["debug"], f["action"]) == (
        "ns1", "/run/c/containerd.sock", "/usr/bin/containerd", "c1", "/b", True, "start")
    f = cli.parse_flags(["-namespace=n", "-debug=false", "-id", "x", "delete", "-ignored"])
    assert (f["namespace"], f["debug"], f["action"]) == ("n", False, "delete")
    assert cli.parse_flags(["-namespace", "n", "--", "-id"])["action"] == "-id"
    assert cli.parse_flags(["-namespace", "n"])["action"] == ""


@pytest.mark.parametrize(("argv", "words"), [
    (["-bogus", "start"], "flag provided but not defined: -bogus"),
    (["-namespace"], "flag needs an argument: -namespace"),
    (["-debug=maybe"], 'invalid boolean value "maybe" for -debug'),
])
def test_go_flag_errors(argv: list[str], words: str) -> None:
    with pytest.raises(cli.FlagError, match=words):
        cli.parse_flags(argv)


def test_main_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-bogus"]) == 2
    assert "flag provided but not defined: -bogus" in capsys.readouterr().err
    assert cli.main(["-id", "x", "start"]) == 1
    assert capsys.readouterr().err == "io.containerd.rune.v2: shim namespace cannot be empty"
    assert cli.main([*BASE, "-id", "x", "frobnicate"]) == 1
    assert "unknown action 'frobnicate'" in capsys.readouterr().err
    assert cli.main(["-v"]) == 0
    assert capsys.readouterr().out.startswith("containerd-shim-rune-v2:\n  Version:")


# ------------------------------------------------------------------------------------------ address, group


def test_socket_address_is_containerds() -> None:
    digest = hashlib.sha256(b"/run/c/containerd.sock/k8s.io/pod1").hexdigest()
    want = f"unix:///run/containerd/s/{digest}"
    assert cli.socket_address("/run/c/containerd.sock", "k8s.io", "pod1") == want
    # filepath.Join cleans: doubled and trailing slashes, dot elements
    assert cli.socket_address("/run/c//./containerd.sock/", "k8s.io", "pod1") == want
    assert len(want) - len("unix://") <= startup.SOCKET_PATH_LIMIT


def _bundle(tmp: Path, annotations: dict[str, str] | None) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "config.json").write_text(json.dumps({"ociVersion": "1.0.2", "annotations": annotations or {}}))
    return tmp


def test_group_of(tmp_path: Path) -> None:
    assert cli.group_of(str(_bundle(tmp_path / "a", None)), "c1") == "c1"
    assert cli.group_of(str(_bundle(tmp_path / "b", {"io.kubernetes.cri.sandbox-id": "pod9"})), "c1") == "pod9"
    assert cli.group_of(str(_bundle(tmp_path / "c", {"io.containerd.runc.v2.group": "g"})), "c1") == "g"
    both = {"io.containerd.runc.v2.group": "g", "io.kubernetes.cri.sandbox-id": "pod9"}
    assert cli.group_of(str(_bundle(tmp_path / "d", both)), "c1") == "pod9"
    assert cli.group_of(str(tmp_path / "missing"), "c1") == "c1"


# ------------------------------------------------------------------------------------------ start, delete


@pytest.fixture
def sockdir(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="ss", dir="/tmp")  # short: unix socket paths are limited
    monkeypatch.setattr(startup, "SOCKET_DIR", d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def test_start_finds_the_groups_live_shim(tmp_path: Path, sockdir: str, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    bundle = _bundle(tmp_path / "b2", {"io.kubernetes.cri.sandbox-id": "pod1"})
    address = cli.socket_address("/run/c/containerd.sock", "ns1", "pod1")
    path = address[len("unix://"):]
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(path)
    live.listen(4)
    monkeypatch.chdir(bundle)
    monkeypatch.setenv("RUNE_SHIM_ROOT", str(tmp_path / "root"))
    _stdin(monkeypatch, b"")
    try:
        assert cli.main([*BASE, "-id", "c2", "start"]) == 0
    finally:
        live.close()
    out = capsys.readouterr()
    assert (out.out, out.err) == (address, "")
    assert (bundle / "address").read_text() == address
    assert (bundle / cli.ROOT_FILE).read_text() == str(tmp_path / "root" / "ns1")


def test_start_root_from_options_on_stdin(tmp_path: Path, sockdir: str, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    bundle = _bundle(tmp_path / "b3", None)
    path = cli.socket_address("/run/c/containerd.sock", "ns1", "c3")[len("unix://"):]
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(path)
    live.listen(4)
    monkeypatch.chdir(bundle)
    opts = any_pb2.Any(type_url="containerd.runc.v1.Options",
                       value=oci_pb2.Options(root=str(tmp_path / "r")).SerializeToString())
    _stdin(monkeypatch, opts.SerializeToString())
    try:
        assert cli.main([*BASE, "-id", "c3", "start"]) == 0
    finally:
        live.close()
    capsys.readouterr()
    assert (bundle / cli.ROOT_FILE).read_text() == str(tmp_path / "r" / "ns1")


def test_start_refuses_bad_options_with_one_line(tmp_path: Path, sockdir: str, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bundle = _bundle(tmp_path / "b4", None)
    monkeypatch.chdir(bundle)
    opts = any_pb2.Any(type_url="containerd.runc.v1.Options",
                       value=oci_pb2.Options(systemd_cgroup=True).SerializeToString())
    _stdin(monkeypatch, opts.SerializeToString())
    assert cli.main([*BASE, "-id", "c4", "start"]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.startswith("io.containerd.rune.v2: runtime options: SystemdCgroup") and "\n" not in out.err
    assert not (bundle / "address").exists() and os.listdir(sockdir) == []
    _stdin(monkeypatch, b"\xff\x00garbage")
    assert cli.main([*BASE, "-id", "c4", "start"]) == 1
    assert "undecodable google.protobuf.Any" in capsys.readouterr().err


def test_start_fails_when_the_shim_cannot_join_its_shim_cgroup(tmp_path: Path, sockdir: str,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """As runc's shim: a ShimCgroup the new shim cannot join fails start with one line, and neither the shim
    nor its socket stays (the forked shim exits at its join; start reaps it and removes the socket)."""
    bundle = _bundle(tmp_path / "b5", None)
    monkeypatch.chdir(bundle)
    monkeypatch.setenv("RUNE_SHIM_ROOT", str(tmp_path / "root"))
    missing = f"/rune-shim-test-missing-{os.getpid()}"
    for cgroup, words in ((missing, "io.containerd.rune.v2: failed to "),
                          ("rune-shim", "io.containerd.rune.v2: runtime options: ShimCgroup 'rune-shim': want an")):
        opts = any_pb2.Any(type_url="containerd.runc.v1.Options",
                           value=oci_pb2.Options(shim_cgroup=cgroup).SerializeToString())
        _stdin(monkeypatch, opts.SerializeToString())
        assert cli.main([*BASE, "-id", "c5", "start"]) == 1
        out = capsys.readouterr()
        assert out.out == "" and out.err.startswith(words) and "\n" not in out.err, out.err
        if cgroup == missing:
            assert f"cgroup {missing}" in out.err
        assert os.listdir(sockdir) == []


def _delete(bundle: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> shim_pb2.DeleteResponse:
    before = time.time()
    assert cli.main([*BASE, "-id", "c5", "-bundle", str(bundle), "delete"]) == 0
    out = capsysbinary.readouterr()
    resp = shim_pb2.DeleteResponse.FromString(out.out)
    assert resp.exit_status == 137
    assert before - 1 <= resp.exited_at.seconds <= time.time() + 1
    return resp


def test_delete_of_a_dead_shims_container(tmp_path: Path, sockdir: str, monkeypatch: pytest.MonkeyPatch,
                                          capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    bundle = _bundle(tmp_path / "b5", None)
    (bundle / cli.ROOT_FILE).write_text(str(tmp_path / "root" / "ns1"))  # no state there: nothing to delete
    stale = os.path.join(sockdir, "dead")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(stale)  # bound, never listening: what a killed shim leaves
    s.close()
    (bundle / "address").write_text("unix://" + stale)
    assert _delete(bundle, capsysbinary).pid == 0
    assert not os.path.exists(stale)


def test_delete_keeps_a_live_group_shims_socket(tmp_path: Path, sockdir: str,
                                                capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    bundle = _bundle(tmp_path / "b6", None)
    live_path = os.path.join(sockdir, "live")
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(live_path)
    live.listen(4)
    (bundle / "address").write_text("unix://" + live_path)
    try:
        _delete(bundle, capsysbinary)
        assert os.path.exists(live_path)
    finally:
        live.close()


def test_delete_never_removes_a_socket_outside_containerds_directory(
        tmp_path: Path, sockdir: str, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    bundle = _bundle(tmp_path / "b7", None)
    other = tmp_path / "other.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(other))
    s.close()
    (bundle / "address").write_text(f"unix://{other}")
    _delete(bundle, capsysbinary)
    assert other.exists()


def test_delete_answers_with_the_response_the_shim_left(tmp_path: Path, sockdir: str,
                                                       capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    from inclavare.shim.service import write_deleted

    bundle = _bundle(tmp_path / "b8", None)
    left = shim_pb2.DeleteResponse(pid=4242, exit_status=7)
    left.exited_at.FromNanoseconds(1_700_000_000_000_000_123)
    write_deleted(str(bundle), left)
    assert cli.main([*BASE, "-id", "c8", "-bundle", str(bundle), "delete"]) == 0
    assert shim_pb2.DeleteResponse.FromString(capsysbinary.readouterr().out) == left


def test_mountinfo_unescape() -> None:
    assert cli._unescape(r"/a\040b/c\134d") == "/a b/c\\d"
    assert cli._unescape("/plain") == "/plain"
    assert cli._unescape(r"/x\04") == r"/x\04"  # too short: kept
    assert cli._unescape(r"/x\089") == r"/x\089"  # not octal: kept
    assert cli._is_mount_point("/proc") and not cli._is_mount_point("/proc/self")


def test_delete_finds_the_socket_without_the_address_file(tmp_path: Path, sockdir: str,
                                                          capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    bundle = _bundle(tmp_path / "b9", {"io.kubernetes.cri.sandbox-id": "pod7"})
    dead = cli.socket_address("/run/c/containerd.sock", "ns1", "pod7")[len("unix://"):]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(dead)
    s.close()
    _delete(bundle, capsysbinary)
    assert not os.path.exists(dead)
