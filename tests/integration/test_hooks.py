"""OCI hooks with real rune containers: order, state on stdin, namespaces, failures, timeouts."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.conftest import needs_busybox, needs_root

pytestmark = [pytest.mark.root, needs_root, needs_busybox]

KINDS = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"]
CG = Path("/sys/fs/cgroup")

# Appends "<kind> <mnt ns>" and then the state JSON from stdin as one line. Only /bin/sh, /bin/cat and
# /bin/readlink are used, which exist both on the host and in the busybox rootfs.
HOOK = """#!/bin/sh
log="$(/bin/readlink -f "$0")"
log="${log%/*}/log"
ns=$(/bin/readlink /proc/self/ns/mnt)
state=$(/bin/cat)
echo "$1 $ns $state" >> "$log"
exit "${2:-0}"
"""


@pytest.fixture
def hookdir(tmp_path: Path) -> Path:
    d = tmp_path / "hooks"
    d.mkdir()
    script = d / "hook.sh"
    script.write_text(HOOK)
    script.chmod(0o755)
    return d


def with_hooks(hookdir: Path, kinds=KINDS, extra=None):  # type: ignore[no-untyped-def]
    """A config edit: one logging hook per kind; the hook dir is bind-mounted at the same path inside,
    so the script path resolves on the host and in the container alike."""
    script = str(hookdir / "hook.sh")

    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["hooks"] = {k: [{"path": script, "args": ["hook.sh", k]}] for k in kinds}
        cfg["mounts"].append({"destination": str(hookdir), "type": "bind", "source": str(hookdir),
                              "options": ["bind", "rw"]})
        if extra:
            extra(cfg)

    return edit


def log_entries(hookdir: Path) -> list[tuple[str, str, dict]]:
    path = hookdir / "log"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        kind, ns, state = line.split(" ", 2)
        out.append((kind, ns, json.loads(state)))
    return out


def cgroup_leftovers(cid: str) -> list[Path]:
    found = list(CG.glob(f"*/{cid}"))
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if path != "/" and ctrls:
            found += list(CG.glob(f"{ctrls.split(',')[0]}{path}/{cid}"))
    return found


def test_all_hooks_run_in_order_with_state(rune, cid, make_bundle, hookdir):
    b = make_bundle(["sh", "-c", "echo workload"], edit=with_hooks(hookdir))
    p = rune.run("run", "--bundle", b, cid)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "workload\n"
    entries = log_entries(hookdir)
    assert [e[0] for e in entries] == KINDS
    states = {kind: state for kind, _ns, state in entries}
    for kind, state in states.items():
        assert state["id"] == cid, kind
        assert state["bundle"] == b, kind
        assert "ociVersion" in state, kind
        # as runc: a stopped container's state carries no pid (the spec requires one only while it lives)
        assert ("pid" in state) == (kind != "poststop"), kind
    # "created", as crun sends and the OCI validation suite (hooks_stdin) requires; runc 1.1.5 sends "creating"
    assert states["prestart"]["status"] == "created"
    assert states["createRuntime"]["status"] == "created"
    assert states["createContainer"]["status"] == "created"
    assert states["startContainer"]["status"] == "created"
    assert states["poststart"]["status"] == "running"
    assert states["poststop"]["status"] == "stopped"
    pid = states["prestart"]["pid"]
    assert pid > 0
    assert states["createRuntime"]["pid"] == pid and states["poststart"]["pid"] == pid


def test_hooks_run_in_the_right_mount_namespace(rune, cid, make_bundle, hookdir):
    b = make_bundle(["sleep", "60"], edit=with_hooks(hookdir))
    rune.run("create", "--bundle", b, cid, check=True)
    pid = rune.state(cid)["pid"]
    container_mnt = os.readlink(f"/proc/{pid}/ns/mnt")
    host_mnt = os.readlink("/proc/self/ns/mnt")
    assert container_mnt != host_mnt
    rune.run("start", cid, check=True)
    rune.run("delete", "--force", cid, check=True)
    ns = {kind: n for kind, n, _s in log_entries(hookdir)}
    assert set(ns) == set(KINDS)
    for kind in ("prestart", "createRuntime", "poststart", "poststop"):
        assert ns[kind] == host_mnt, kind
    for kind in ("createContainer", "startContainer"):
        assert ns[kind] == container_mnt, kind


def test_create_runs_only_create_time_hooks(rune, cid, make_bundle, hookdir):
    b = make_bundle(["sleep", "60"], edit=with_hooks(hookdir))
    rune.run("create", "--bundle", b, cid, check=True)
    assert [e[0] for e in log_entries(hookdir)] == ["prestart", "createRuntime", "createContainer"]
    rune.run("start", cid, check=True)
    assert [e[0] for e in log_entries(hookdir)][3:] == ["startContainer", "poststart"]
    rune.run("kill", cid, "KILL", check=True)
    deadline = time.monotonic() + 10
    while rune.state(cid)["status"] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(log_entries(hookdir)) == 5
    rune.run("delete", cid, check=True)
    assert [e[0] for e in log_entries(hookdir)][5:] == ["poststop"]


def _assert_failed_create_left_nothing(rune, cid, p):  # type: ignore[no-untyped-def]
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("rune: ")
    assert not Path(rune.root, cid).exists()
    assert rune.run("state", cid).returncode == 1
    assert cgroup_leftovers(cid) == []
    return lines[0]


def test_failing_prestart_hook_fails_create_and_cleans_up(rune, cid, make_bundle, hookdir):
    def extra(cfg):  # type: ignore[no-untyped-def]
        cfg["hooks"]["prestart"] = [{"path": str(hookdir / "hook.sh"), "args": ["hook.sh", "prestart", "3"]}]

    b = make_bundle(["sleep", "60"], edit=with_hooks(hookdir, extra=extra))
    p = rune.run("create", "--bundle", b, cid)
    line = _assert_failed_create_left_nothing(rune, cid, p)
    assert "hooks.prestart[0]" in line
    assert "3" in line
    kinds = [e[0] for e in log_entries(hookdir)]
    assert kinds[0] == "prestart"
    assert "createRuntime" not in kinds and "startContainer" not in kinds
    # the container process it started is gone: no process still sees the bundle's rootfs as its root
    rootfs = os.path.join(b, "rootfs")
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                root = os.readlink(d / "root")
            except OSError:
                continue
            assert root != rootfs, f"process {d.name} left behind"


def test_missing_hook_binary_names_the_hook(rune, cid, make_bundle):
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["hooks"] = {"createRuntime": [{"path": "/bin/true"}, {"path": "/nonexistent/hook"}]}

    b = make_bundle(["true"], edit=edit)
    p = rune.run("create", "--bundle", b, cid)
    line = _assert_failed_create_left_nothing(rune, cid, p)
    assert "hooks.createRuntime[1]" in line and "/nonexistent/hook" in line


def test_hook_timeout(rune, cid, make_bundle):
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["hooks"] = {"prestart": [{"path": "/bin/sleep", "args": ["sleep", "5"], "timeout": 1}]}

    b = make_bundle(["true"], edit=edit)
    p = rune.run("create", "--bundle", b, cid)
    line = _assert_failed_create_left_nothing(rune, cid, p)
    assert "hooks.prestart[0]" in line and "timed out" in line


def test_hook_env_and_args(rune, cid, make_bundle, tmp_path):
    out = tmp_path / "env-out"

    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["hooks"] = {"createRuntime": [{"path": "/bin/sh",
                                           "args": ["sh", "-c", 'echo "$0 $1 $HOOKVAR" > "$OUT"', "a0", "a1"],
                                           "env": ["HOOKVAR=set", f"OUT={out}"]}]}

    b = make_bundle(["true"], edit=edit)
    p = rune.run("run", "--bundle", b, cid)
    assert p.returncode == 0, p.stderr
    assert out.read_text() == "a0 a1 set\n"


def test_failing_poststop_hook_does_not_fail_delete(rune, cid, make_bundle, hookdir):
    def extra(cfg):  # type: ignore[no-untyped-def]
        cfg["hooks"]["poststop"] = [{"path": str(hookdir / "hook.sh"), "args": ["hook.sh", "poststop", "5"]},
                                    {"path": str(hookdir / "hook.sh"), "args": ["hook.sh", "poststop-2"]}]

    b = make_bundle(["true"], edit=with_hooks(hookdir, kinds=["poststop"], extra=extra))
    rune.run("create", "--bundle", b, cid, check=True)
    rune.run("start", cid, check=True)
    deadline = time.monotonic() + 10
    while rune.state(cid)["status"] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.02)
    p = rune.run("delete", cid)
    assert p.returncode == 0, p.stderr
    assert not Path(rune.root, cid).exists()
    assert cgroup_leftovers(cid) == []
    kinds = [e[0] for e in log_entries(hookdir)]
    assert kinds[0] == "poststop"


def test_failing_poststart_hook(rune, cid, make_bundle):
    # runtime-spec: a failing poststart hook is logged, the container keeps running and start succeeds
    # (runc 1.1 instead kills the container and fails start); either way start must not hang and
    # the container must be deletable afterwards
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["hooks"] = {"poststart": [{"path": "/bin/false"}]}

    b = make_bundle(["sleep", "60"], edit=edit)
    rune.run("create", "--bundle", b, cid, check=True)
    p = rune.run("start", cid)
    if p.returncode != 0:
        assert len(p.stderr.strip().splitlines()) == 1 and "hooks.poststart[0]" in p.stderr
    rune.run("delete", "--force", cid, check=True)
    assert not Path(rune.root, cid).exists()
    assert cgroup_leftovers(cid) == []


# A poststart hook (host side) that records what the container's pid runs at that moment.
EXE_PROBE = """#!/bin/sh
pid=$(/bin/cat | /bin/sed -n 's/.*"pid": *\\([0-9]*\\).*/\\1/p')
/bin/tr '\\0' ' ' < /proc/$pid/cmdline > "$1"
"""


def test_poststart_runs_after_the_workload_is_executed(rune, cid, make_bundle, hookdir, tmp_path):
    # runtime-spec: poststart hooks run after the user-specified process is executed. A slow
    # startContainer hook delays that exec; `start` must still wait for it before running poststart.
    probe = hookdir / "probe.sh"
    probe.write_text(EXE_PROBE)
    probe.chmod(0o755)
    seen = tmp_path / "seen"

    def extra(cfg):  # type: ignore[no-untyped-def]
        cfg["hooks"]["startContainer"] = [{"path": "/bin/sh", "args": ["sh", "-c", 'sleep 0.5; exec "$0" "$@"',
                                                                      str(hookdir / "hook.sh"), "startContainer"]}]
        cfg["hooks"]["poststart"] = [{"path": str(probe), "args": ["probe.sh", str(seen)]},
                                     {"path": str(hookdir / "hook.sh"), "args": ["hook.sh", "poststart"]}]

    b = make_bundle(["sleep", "60"], edit=with_hooks(hookdir, kinds=["startContainer", "poststart"], extra=extra))
    rune.run("create", "--bundle", b, cid, check=True)
    rune.run("start", cid, check=True)
    assert [e[0] for e in log_entries(hookdir)] == ["startContainer", "poststart"]
    assert seen.read_text().split() == ["sleep", "60"]
    rune.run("delete", "--force", cid, check=True)


# Records, per hook kind: its argv, cwd, environment and stdin (one file each, in the hook dir).
ENV_PROBE = """#!/bin/sh
out="$(/bin/readlink -f "$0")"
out="${out%/*}/$1.out"
{ echo "argv=$0 $*"; echo "cwd=$(pwd)"; /usr/bin/env; echo "stdin=$(/bin/cat)"; } > "$out"
"""


def _probe_out(hookdir: Path, kind: str) -> tuple[dict[str, str], dict]:
    fields: dict[str, str] = {}
    for line in (hookdir / f"{kind}.out").read_text().splitlines():
        k, _, v = line.partition("=")
        fields.setdefault(k, v)
    return fields, json.loads(fields["stdin"])


def test_hooks_environment_cwd_and_state_as_runc(rune, cid, make_bundle, hookdir, monkeypatch):
    """runc 1.1.5 on this machine, hook by hook: a hook without `env` inherits the environment of
    whoever runs it (rune for the host-side hooks; the container process's for createContainer and
    startContainer), one with `env` gets exactly that; createContainer runs from the rootfs."""
    probe = hookdir / "probe.sh"
    probe.write_text(ENV_PROBE)
    probe.chmod(0o755)
    script = str(probe)

    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["process"]["env"] = ["PATH=/bin:/usr/bin", "FROM_PROCESS=yes"]
        cfg["annotations"] = {"org.example.key": "value"}
        cfg["hooks"] = {k: [{"path": script, "args": ["probe", k], "timeout": 10}] for k in KINDS}
        cfg["hooks"]["createRuntime"][0]["env"] = ["ONLY=this"]
        cfg["hooks"]["startContainer"][0]["env"] = []
        cfg["mounts"].append({"destination": str(hookdir), "type": "bind", "source": str(hookdir),
                              "options": ["bind", "rw"]})

    b = make_bundle(["true"], edit=edit)
    monkeypatch.setenv("FROM_RUNTIME", "inherited")
    p = rune.run("run", "--bundle", b, cid, env=dict(os.environ))
    assert p.returncode == 0, p.stderr
    out = {kind: _probe_out(hookdir, kind) for kind in KINDS}
    for kind, (fields, state) in out.items():
        assert fields["argv"] == f"{script} {kind}", kind
        assert state["id"] == cid and state["bundle"] == b, kind
        assert state["annotations"] == {"org.example.key": "value"}, kind
    # host-side hooks without env: rune's own environment
    for kind in ("prestart", "poststart", "poststop"):
        fields, _ = out[kind]
        assert fields.get("FROM_RUNTIME") == "inherited" and "FROM_PROCESS" not in fields, kind
        assert fields["cwd"] == b, kind
    fields, _ = out["createRuntime"]
    assert fields.get("ONLY") == "this" and "FROM_RUNTIME" not in fields and fields["cwd"] == b
    # container-side hooks without env: the container process's environment
    fields, _ = out["createContainer"]
    assert fields.get("FROM_PROCESS") == "yes" and "FROM_RUNTIME" not in fields
    assert fields["cwd"] == os.path.join(b, "rootfs")
    fields, _ = out["startContainer"]
    assert "FROM_PROCESS" not in fields and "FROM_RUNTIME" not in fields  # env: [] means none
    assert fields["cwd"] == "/"
    assert "pid" not in out["poststop"][1] and out["poststart"][1]["pid"] == out["prestart"][1]["pid"]
