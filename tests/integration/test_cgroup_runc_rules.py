"""runc 1.1.5's cgroup rules with real rune containers: `unified` next to v1 limits, pre-existing cgroups
(non-empty: a warning; frozen: refused), `exec --cgroup` on v1 and v2, and OOM kills in `events`."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import needs_busybox, needs_root

CG = Path("/sys/fs/cgroup")
V1 = (CG / "memory").is_dir() and (CG / "devices").is_dir() and (CG / "freezer").is_dir()
UNIFIED = CG / "unified"


def _is_cgroup2(path: Path) -> bool:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(path) and line.split(" - ", 1)[1].startswith("cgroup2 "):
            return True
    return False


HYBRID = V1 and _is_cgroup2(UNIFIED)

pytestmark = [pytest.mark.root, needs_root, needs_busybox,
              pytest.mark.skipif(not V1, reason="needs the cgroup v1 memory, devices and freezer hierarchies")]


def ok(p):  # type: ignore[no-untyped-def]
    assert p.returncode == 0, f"rc={p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p.stdout


def leftovers(name: str) -> list[Path]:
    return [p for p in CG.glob(f"*/{name}")]


@pytest.fixture
def cgname(cid):  # type: ignore[no-untyped-def]
    """An absolute cgroupsPath of the test's own, removed (with anything below) afterwards."""
    name = f"rune-test-{cid}"
    yield name
    for top in CG.glob(f"*/{name}"):
        freezer = top / "freezer.state"
        if freezer.exists():
            freezer.write_text("THAWED")
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [top]:
            for pid in (d / "cgroup.procs").read_text().split() if (d / "cgroup.procs").exists() else []:
                try:
                    os.kill(int(pid), 9)
                except ProcessLookupError:
                    pass
            for _ in range(100):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def at(cgname: str, extra=None):  # type: ignore[no-untyped-def]
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["linux"]["cgroupsPath"] = "/" + cgname
        if extra:
            extra(cfg)

    return edit


# ------------------------------------------------------------------------------ unified + v1

@pytest.mark.skipif(not HYBRID, reason="needs the hybrid layout (cgroup v1 + cgroup2 at /sys/fs/cgroup/unified)")
def test_unified_next_to_v1_limits_is_refused(rune, cid, make_bundle, cgname):
    def extra(cfg):  # type: ignore[no-untyped-def]
        cfg["linux"]["resources"]["memory"] = {"limit": 64 << 20}
        cfg["linux"]["resources"]["unified"] = {"cgroup.max.depth": "5"}

    b = make_bundle(["true"], edit=at(cgname, extra))
    p = rune.run("create", "--bundle", b, cid)
    assert p.returncode == 1
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("rune: invalid configuration: cannot use unified on cgroup v1")
    assert "linux.resources.memory" in lines[0]
    assert not Path(rune.root, cid).exists()
    assert leftovers(cgname) == []


@pytest.mark.skipif(not HYBRID, reason="needs the hybrid layout (cgroup v1 + cgroup2 at /sys/fs/cgroup/unified)")
def test_unified_alone_goes_to_the_unified_hierarchy(rune, cid, make_bundle, cgname):
    # rune's documented extension on hybrid hosts (runc refuses `unified` on anything but pure v2)
    def extra(cfg):  # type: ignore[no-untyped-def]
        cfg["linux"]["resources"] = {"unified": {"cgroup.max.depth": "5"}}

    b = make_bundle(["sleep", "60"], edit=at(cgname, extra))
    ok(rune.run("run", "-d", "--bundle", b, cid))
    assert (UNIFIED / cgname / "cgroup.max.depth").read_text().strip() == "5"


# ------------------------------------------------------------------------------ pre-existing cgroups

@pytest.mark.parametrize("with_log", [True, False])
def test_non_empty_existing_cgroup_is_a_warning(rune, cid, make_bundle, cgname, tmp_path, with_log):
    devices = CG / "devices" / cgname
    devices.mkdir()
    squatter = subprocess.Popen(["sleep", "120"])
    try:
        (devices / "cgroup.procs").write_text(str(squatter.pid))
        log = tmp_path / "log.json"
        b = make_bundle(["sleep", "60"], edit=at(cgname))
        flags = ["--log", str(log), "--log-format", "json"] if with_log else []
        p = rune.run(*flags, "create", "--bundle", b, cid)
        assert p.returncode == 0, p.stderr
        words = "container's cgroup is not empty: 1 process(es) found"
        if with_log:
            entries = [json.loads(x) for x in log.read_text().splitlines()]
            assert [e["msg"] for e in entries if e["level"] == "warning"] == [words]
            assert p.stderr == ""
        else:
            assert p.stderr.splitlines() == [f"rune: warning: {words}"]
        assert rune.state(cid)["status"] == "created"
    finally:
        squatter.kill()
        squatter.wait()


def test_frozen_existing_cgroup_is_refused(rune, cid, make_bundle, cgname):
    freezer = CG / "freezer" / cgname
    freezer.mkdir()
    (freezer / "freezer.state").write_text("FROZEN")
    b = make_bundle(["true"], edit=at(cgname))
    p = rune.run("create", "--bundle", b, cid, timeout=30)
    assert p.returncode == 1
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rune: container's cgroup unexpectedly frozen"), p.stderr
    assert not Path(rune.root, cid).exists()
    # the cgroup was not rune's: it is left as it was, and nothing else was made
    assert (freezer / "freezer.state").read_text().strip() == "FROZEN"
    assert leftovers(cgname) == [freezer]


# ------------------------------------------------------------------------------ exec --cgroup

def _cgroup_of(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        _, ctrls, path = line.split(":", 2)
        out[ctrls] = path
    return out


def test_exec_cgroup_v1(rune, cid, make_bundle, cgname):
    b = make_bundle(["sleep", "120"], edit=at(cgname))
    ok(rune.run("run", "-d", "--bundle", b, cid))
    (CG / "memory" / cgname / "sub").mkdir()
    (CG / "pids" / cgname / "sub").mkdir()
    seen = _cgroup_of(ok(rune.run("exec", "--cgroup", "memory,pids:sub", cid, "cat", "/proc/self/cgroup")))
    assert seen["memory"] == f"/{cgname}/sub" and seen["pids"] == f"/{cgname}/sub"
    assert seen["devices"] == f"/{cgname}" and seen["cpu"] == f"/{cgname}"
    seen = _cgroup_of(ok(rune.run("exec", "--cgroup", "memory:sub", "--cgroup", "pids:.", cid,
                                  "cat", "/proc/self/cgroup")))
    assert seen["memory"] == f"/{cgname}/sub" and seen["pids"] == f"/{cgname}"
    # runc's words, exit status 255, one line each
    cases = [
        (["--cgroup", "sub"], "error adding pid"),  # exists only in two hierarchies
        (["--cgroup", "nosuch:sub"], "unknown controller nosuch in SubCgroupPaths"),
        (["--cgroup", "a:b:c"], "invalid --cgroup argument: a:b:c"),
        (["--cgroup", "memory:sub", "--cgroup", "sub"],
         "invalid --cgroup argument: sub (missing <controller>: prefix)"),
        (["--cgroup", "memory:../x"], "../x is not a sub cgroup path"),
        (["--cgroup", "memory:gone"], "failed to write"),
    ]
    for flags, words in cases:
        p = rune.run("exec", *flags, cid, "true")
        assert p.returncode == 255, (flags, p.stderr)
        lines = p.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("rune: ") and words in lines[0], (flags, p.stderr)
    assert "no such file or directory" in rune.run("exec", "--cgroup", "memory:gone", cid, "true").stderr
    # nothing was made for the failed ones
    assert not (CG / "memory" / cgname / "gone").exists()
    assert not (CG / "cpu" / cgname / "sub").exists()


V2_SCRIPT = """set -e
mount -t cgroup2 none /sys/fs/cgroup
R="$RUNE --root $ROOT"
$R run -d --bundle "$BUNDLE" "$CID" </dev/null
mkdir "/sys/fs/cgroup/$CG/sub"
echo "== sub"; $R exec --cgroup sub "$CID" cat /proc/self/cgroup
echo "== plain"; $R exec "$CID" cat /proc/self/cgroup
echo "== memory"; $R exec --cgroup memory:sub "$CID" true 2>&1 || echo "rc=$?"
echo "== missing"; $R exec --cgroup nosuch "$CID" true 2>&1 || echo "rc=$?"
rmdir "/sys/fs/cgroup/$CG/sub"
$R delete --force "$CID"
"""


@pytest.mark.skipif(not _is_cgroup2(UNIFIED) or not shutil.which("unshare"),
                    reason="needs a cgroup2 hierarchy (mounted at /sys/fs/cgroup/unified) and unshare(1)")
def test_exec_cgroup_v2(rune, rune_bin, cid, make_bundle, cgname):
    # a private mount namespace where /sys/fs/cgroup is the cgroup2 hierarchy: a pure-v2 host for rune
    b = make_bundle(["sleep", "120"], edit=at(cgname))
    env = dict(os.environ, RUNE=rune_bin, ROOT=rune.root, BUNDLE=b, CID=cid, CG=cgname)
    p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", V2_SCRIPT], env=env,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    parts = {}
    for chunk in p.stdout.split("== ")[1:]:
        name, _, body = chunk.partition("\n")
        parts[name] = body
    assert _cgroup_of(parts["sub"])[""] == f"/{cgname}/sub"
    assert _cgroup_of(parts["plain"])[""] == f"/{cgname}"
    assert "unknown controller memory in SubCgroupPaths" in parts["memory"] and "rc=255" in parts["memory"]
    assert "failed to write" in parts["missing"] and "rc=255" in parts["missing"]
    assert not (UNIFIED / cgname).exists()


# ------------------------------------------------------------------------------ events: OOM kills

def test_events_reports_oom_kill(rune, cid, make_bundle, cgname, tmp_path):
    def extra(cfg):  # type: ignore[no-untyped-def]
        # 32 MiB, no swap on top; dd's 64 MiB buffer is OOM-killed once /tmp/go appears
        cfg["linux"]["resources"]["memory"] = {"limit": 32 << 20, "swap": 32 << 20}
        cfg["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777"]})

    script = "while [ ! -e /tmp/go ]; do sleep 0.05; done; dd if=/dev/zero of=/dev/null bs=64M count=1; sleep 120"
    b = make_bundle(["sh", "-c", script], edit=at(cgname, extra))
    ok(rune.run("run", "-d", "--bundle", b, cid))
    ev = subprocess.Popen(rune.cmd("events", "--interval", "1s", cid), stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in ev.stdout or []], daemon=True)
    reader.start()
    try:
        first = json.loads(lines.get(timeout=30))
        assert first["type"] == "stats" and first["id"] == cid  # events is watching by now
        ok(rune.run("exec", cid, "touch", "/tmp/go"))
        seen = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and {"type": "oom", "id": cid} not in seen:
            seen.append(json.loads(lines.get(timeout=max(deadline - time.monotonic(), 0.1))))
        assert {"type": "oom", "id": cid} in seen
    finally:
        ev.kill()
        ev.wait()
        reader.join(5)


def test_events_of_a_stopped_container(rune, cid, make_bundle):
    b = make_bundle(["true"])
    ok(rune.run("run", "-d", "--bundle", b, cid))
    deadline = time.monotonic() + 10
    while rune.state(cid)["status"] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.02)
    p = rune.run("events", cid)
    assert p.returncode == 1
    assert p.stderr.splitlines() == [f"rune: container with id {cid} is not running"]


def test_events_ends_when_the_container_goes(rune, cid, make_bundle, cgname):
    b = make_bundle(["sleep", "120"], edit=at(cgname))
    ok(rune.run("run", "-d", "--bundle", b, cid))
    ev = subprocess.Popen(rune.cmd("events", "--interval", "1s", cid), stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert ev.stdout is not None
        first = json.loads(ev.stdout.readline())  # watching by now
        assert first["type"] == "stats"
        ok(rune.run("delete", "--force", cid))
        out, err = ev.communicate(timeout=30)
        assert ev.returncode == 0, err
        assert all(json.loads(x)["type"] == "stats" for x in out.splitlines())
    finally:
        if ev.poll() is None:
            ev.kill()
            ev.wait()
