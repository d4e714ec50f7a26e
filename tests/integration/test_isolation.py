"""Isolation of real rune containers: namespaces, mounts, /dev, masked and read-only paths."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import needs_busybox, needs_root, ok
from tests.conftest import run_script as run

pytestmark = [pytest.mark.root, needs_root, needs_busybox]


def add_ns(cfg, **entry):  # type: ignore[no-untyped-def]
    nss = [n for n in cfg["linux"]["namespaces"] if n["type"] != entry["type"]]
    nss.append(entry)
    cfg["linux"]["namespaces"] = nss


def wait_running(rune, cid, timeout=10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = rune.state(cid)
        if s["status"] == "running":
            return s
        time.sleep(0.02)
    raise AssertionError(f"{cid} never became running: {rune.state(cid)}")


def mountinfo(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        f = left.split()
        r = right.split()
        out.append({"id": f[0], "parent": f[1], "root": f[3], "mnt": f[4], "opts": f[5],
                    "optional": f[6:], "fstype": r[0], "source": r[1], "super": r[2] if len(r) > 2 else ""})
    return out


# ------------------------------------------------------------------------------ namespaces

def test_workload_is_pid_1(rune, cid, make_bundle):
    script = "echo $$; cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /proc | grep -c '^[0-9]'"
    out = ok(run(rune, cid, make_bundle, script))
    lines = out.splitlines()
    assert lines[0] == "1"
    assert lines[1].startswith("sh -c ")
    # only pid 1 and the pipeline's own processes exist in the new pid namespace
    assert int(lines[2]) <= 5


def test_hostname_and_domainname_from_config(rune, cid, make_bundle):
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["hostname"] = "box-a"
        cfg["domainname"] = "dom.example"

    out = ok(run(rune, cid, make_bundle, "hostname; cat /proc/sys/kernel/domainname", edit=edit))
    assert out.splitlines() == ["box-a", "dom.example"]
    assert os.uname().nodename != "box-a"


def test_new_network_namespace_has_only_lo(rune, cid, make_bundle):
    out = ok(run(rune, cid, make_bundle, "tail -n +3 /proc/net/dev | cut -d: -f1; ls /sys/class/net"))
    names = out.split()
    assert names == ["lo", "lo"]
    host = Path("/proc/net/dev").read_text().splitlines()[2:]
    assert len(host) >= 1


def test_join_namespaces_of_another_container_by_path(rune, make_bundle, cid):
    first = cid + "-a"

    def edit_first(cfg):  # type: ignore[no-untyped-def]
        cfg["hostname"] = "first-box"

    b1 = make_bundle(["sleep", "60"], edit=edit_first)
    rune.run("run", "-d", "--bundle", b1, first, check=True)
    pid = rune.state(first)["pid"]
    net = os.readlink(f"/proc/{pid}/ns/net")
    uts = os.readlink(f"/proc/{pid}/ns/uts")

    def edit_second(cfg):  # type: ignore[no-untyped-def]
        cfg.pop("hostname", None)
        add_ns(cfg, type="network", path=f"/proc/{pid}/ns/net")
        add_ns(cfg, type="uts", path=f"/proc/{pid}/ns/uts")

    out = ok(run(rune, cid, make_bundle,
                 "hostname; readlink /proc/self/ns/net; readlink /proc/self/ns/uts; readlink /proc/self/ns/ipc",
                 edit=edit_second))
    lines = out.splitlines()
    assert lines[0] == "first-box"
    assert lines[1] == net and lines[2] == uts
    # namespaces that were not joined are still new ones
    assert lines[3] != os.readlink(f"/proc/{pid}/ns/ipc")
    assert lines[3] != os.readlink("/proc/self/ns/ipc")


@pytest.fixture
def open_dir():  # type: ignore[no-untyped-def]
    """A world-traversable temp dir (user namespaces need every path component searchable)."""
    d = tempfile.mkdtemp(prefix="rune-userns-", dir="/tmp")
    os.chmod(d, 0o755)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def test_user_namespace_with_mappings(rune, cid, open_dir):
    from inclavare.testing.bundle import make_bundle as mk

    shared = open_dir / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    b = mk(str(open_dir / "bundle"), ["sh", "-c", "id -u; id -g; cat /proc/self/uid_map; cat /proc/self/gid_map; "
                                       "touch /shared/made-inside"])
    Path(b, "rootfs", "shared").mkdir()  # container root (host uid 100000) cannot create it in a root-owned dir
    cfg_path = Path(b, "config.json")
    cfg = json.loads(cfg_path.read_text())
    add_ns(cfg, type="user")
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 65536}]
    cfg["mounts"].append({"destination": "/shared", "type": "bind", "source": str(shared),
                          "options": ["rbind", "rw"]})
    cfg_path.write_text(json.dumps(cfg))
    out = ok(rune.run("run", "--bundle", b, cid))
    lines = out.splitlines()
    assert lines[0] == "0" and lines[1] == "0"
    assert lines[2].split() == ["0", "100000", "65536"]
    assert lines[3].split() == ["0", "200000", "65536"]
    st = os.stat(shared / "made-inside")
    assert (st.st_uid, st.st_gid) == (100000, 200000)


def test_cgroup_namespace_shows_root(rune, cid, make_bundle):
    out = ok(run(rune, cid, make_bundle, "cat /proc/self/cgroup", edit=lambda c: add_ns(c, type="cgroup")))
    lines = out.splitlines()
    assert lines
    assert all(line.split(":", 2)[2] == "/" for line in lines), out
    # without a cgroup namespace the container's own cgroup path is visible
    out2 = ok(run(rune, cid + "-b", make_bundle, "cat /proc/self/cgroup"))
    assert any(line.split(":", 2)[2] != "/" for line in out2.splitlines())


@pytest.mark.skipif(not os.path.exists("/proc/self/ns/time"), reason="kernel has no time namespaces")
def test_time_namespace_offsets(rune, cid, make_bundle):
    shift = 10 * 86400

    def edit(cfg):  # type: ignore[no-untyped-def]
        add_ns(cfg, type="time")
        cfg["linux"]["timeOffsets"] = {"boottime": {"secs": shift, "nanosecs": 0},
                                      "monotonic": {"secs": shift, "nanosecs": 0}}

    before = float(Path("/proc/uptime").read_text().split()[0])
    out = ok(run(rune, cid, make_bundle, "cat /proc/uptime; readlink /proc/self/ns/time", edit=edit))
    after = float(Path("/proc/uptime").read_text().split()[0])
    inside = float(out.split()[0])
    assert before + shift <= inside <= after + shift
    assert out.splitlines()[1] != os.readlink("/proc/self/ns/time")


# ------------------------------------------------------------------------------ mounts

def test_readonly_rootfs(rune, cid, make_bundle):
    p = run(rune, cid, make_bundle, "touch /newfile; echo rc=$?; awk '$5 == \"/\"' /proc/self/mountinfo")
    out = ok(p)
    assert "rc=1" in out
    assert "Read-only file system" in p.stderr
    root = [m for m in mountinfo(out.split("\n", 1)[1]) if m["mnt"] == "/"]
    assert root and "ro" in root[-1]["opts"].split(",")


def test_writable_rootfs(rune, cid, make_bundle):
    out = ok(run(rune, cid, make_bundle, "touch /newfile && echo made", writable_rootfs=True))
    assert out == "made\n"


def test_tmpfs_mount_with_options(rune, cid, make_bundle):
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["mounts"].append({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                              "options": ["nosuid", "nodev", "size=1m", "mode=1750"]})

    out = ok(run(rune, cid, make_bundle,
                 "stat -c %a /scratch; grep ' /scratch ' /proc/self/mountinfo; echo hi > /scratch/f && cat /scratch/f",
                 edit=edit))
    lines = out.splitlines()
    assert lines[0] == "1750"
    m = mountinfo(lines[1])[0]
    assert m["fstype"] == "tmpfs"
    assert {"nosuid", "nodev"} <= set(m["opts"].split(","))
    assert "size=1024k" in m["super"].split(",") and "mode=1750" in m["super"].split(",")
    assert lines[2] == "hi"


def test_bind_mounts_rw_and_ro(rune, cid, make_bundle, tmp_path):
    host = tmp_path / "hostdir"
    host.mkdir()
    (host / "hello").write_text("from host\n")

    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["mounts"].append({"destination": "/rw", "type": "bind", "source": str(host), "options": ["bind", "rw"]})
        cfg["mounts"].append({"destination": "/ro", "type": "bind", "source": str(host), "options": ["bind", "ro"]})

    p = run(rune, cid, make_bundle,
            "cat /rw/hello; cat /ro/hello; echo inside > /rw/new; echo rc=$?; echo x > /ro/other; echo rc=$?",
            edit=edit)
    lines = ok(p).splitlines()
    assert lines == ["from host", "from host", "rc=0", "rc=1"]
    assert "Read-only file system" in p.stderr
    assert (host / "new").read_text() == "inside\n"
    assert not (host / "other").exists()


@pytest.fixture
def host_submount(tmp_path):  # type: ignore[no-untyped-def]
    top = tmp_path / "top"
    (top / "sub").mkdir(parents=True)
    (top / "file").write_text("top\n")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(top / "sub")], check=True)
    try:
        (top / "sub" / "inner").write_text("inner\n")
        yield top
    finally:
        subprocess.run(["umount", "-l", str(top / "sub")], check=False)


def test_rbind_includes_submounts_and_bind_does_not(rune, cid, make_bundle, host_submount):
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["mounts"].append({"destination": "/r", "type": "bind", "source": str(host_submount),
                              "options": ["rbind", "ro"]})
        cfg["mounts"].append({"destination": "/b", "type": "bind", "source": str(host_submount),
                              "options": ["bind", "ro"]})

    out = ok(run(rune, cid, make_bundle, "cat /r/file /b/file; cat /r/sub/inner; ls -A /b/sub | wc -l", edit=edit))
    assert out.splitlines() == ["top", "top", "inner", "0"]


def test_masked_paths(rune, cid, make_bundle, tmp_path):
    host = tmp_path / "data"
    (host / "secretdir").mkdir(parents=True)
    (host / "secret").write_text("do not read\n")
    (host / "secretdir" / "f").write_text("hidden\n")
    (host / "visible").write_text("fine\n")

    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["mounts"].append({"destination": "/data", "type": "bind", "source": str(host), "options": ["bind"]})
        cfg["linux"]["maskedPaths"] = list(cfg["linux"].get("maskedPaths") or []) + ["/data/secret", "/data/secretdir"]

    out = ok(run(rune, cid, make_bundle,
                 "wc -c < /data/secret; ls -A /data/secretdir | wc -l; cat /data/visible; "
                 "wc -c < /proc/timer_list; ls -A /sys/firmware | wc -l",
                 edit=edit))
    assert [x.strip() for x in out.splitlines()] == ["0", "0", "fine", "0", "0"]
    assert Path("/proc/timer_list").stat().st_size == 0 and Path("/proc/timer_list").read_text()
    assert (host / "secret").read_text() == "do not read\n"


def test_readonly_paths(rune, cid, make_bundle):
    p = run(rune, cid, make_bundle,
            "cat /proc/sys/net/ipv4/ip_forward; echo 1 > /proc/sys/net/ipv4/ip_forward; echo rc=$?; "
            "grep ' /proc/sys ' /proc/self/mountinfo")
    lines = ok(p).splitlines()
    assert lines[0] in ("0", "1")
    assert lines[1] == "rc=1"
    assert "Read-only file system" in p.stderr
    assert "ro" in mountinfo(lines[2])[0]["opts"].split(",")


def test_dev_contents(rune, cid, make_bundle):
    script = (
        "for d in null zero full tty random urandom; do stat -c '%n %F %t %T %a' /dev/$d; done; "
        "for l in ptmx fd stdin stdout stderr; do echo /dev/$l $(readlink /dev/$l); done; "
        "grep -E ' /dev/(pts|shm) ' /proc/self/mountinfo; "
        "head -c 4 /dev/zero | wc -c; echo x > /dev/full; echo full_rc=$?"
    )
    p = run(rune, cid, make_bundle, script)
    lines = ok(p).splitlines()
    nodes = {f[0]: f[1:] for f in (x.split(maxsplit=1) for x in lines[:6])}
    expect = {"/dev/null": (1, 3), "/dev/zero": (1, 5), "/dev/full": (1, 7), "/dev/tty": (5, 0),
              "/dev/random": (1, 8), "/dev/urandom": (1, 9)}
    for name, (major, minor) in expect.items():
        kind, *rest = nodes[name][0].rsplit(" ", 3)
        assert kind == "character special file", nodes[name]
        assert (int(rest[0], 16), int(rest[1], 16)) == (major, minor), nodes[name]
        assert rest[2] == "666"
    links = dict(x.split() for x in lines[6:11])
    assert links == {"/dev/ptmx": "pts/ptmx", "/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0",
                     "/dev/stdout": "/proc/self/fd/1", "/dev/stderr": "/proc/self/fd/2"}
    mounts = {m["mnt"]: m for m in mountinfo("\n".join(lines[11:13]))}
    assert mounts["/dev/pts"]["fstype"] == "devpts"
    assert mounts["/dev/shm"]["fstype"] == "tmpfs"
    assert lines[13].strip() == "4"
    assert lines[14] == "full_rc=1"


def test_linux_devices_creates_node(rune, cid, make_bundle):
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["linux"]["devices"] = [{"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3,
                                    "fileMode": 0o640, "uid": 0, "gid": 0}]
        cfg["linux"]["resources"]["devices"].append({"allow": True, "type": "c", "major": 1, "minor": 3,
                                                     "access": "rwm"})

    out = ok(run(rune, cid, make_bundle,
                 "stat -c '%F %t %T %a %u %g' /dev/mynull; echo data > /dev/mynull && echo wrote", edit=edit))
    lines = out.splitlines()
    kind, major, minor, mode, uid, gid = lines[0].rsplit(" ", 5)
    assert kind == "character special file"
    assert (int(major, 16), int(minor, 16), mode, uid, gid) == (1, 3, "640", "0", "0")
    assert lines[1] == "wrote"


def test_linux_devices_denied_by_cgroup_without_rule(rune, cid, make_bundle):
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["linux"]["devices"] = [{"path": "/dev/mydisk", "type": "b", "major": 7, "minor": 200,
                                    "fileMode": 0o600}]

    p = run(rune, cid, make_bundle, "stat -c '%F %t %T %a' /dev/mydisk; head -c 1 /dev/mydisk; echo rc=$?", edit=edit)
    lines = ok(p).splitlines()
    kind, major, minor, mode = lines[0].rsplit(" ", 3)
    assert kind == "block special file" and (int(major, 16), int(minor, 16), mode) == (7, 200, "600")
    assert lines[-1] == "rc=1"
    assert "Operation not permitted" in p.stderr


@pytest.mark.parametrize("prop,shared", [("shared", True), ("rshared", True), ("private", False),
                                         ("rprivate", False), ("rslave", False)])
def test_rootfs_propagation(rune, cid, make_bundle, prop, shared):
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["linux"]["rootfsPropagation"] = prop

    out = ok(run(rune, cid, make_bundle, "cat /proc/self/mountinfo", edit=edit))
    root = [m for m in mountinfo(out) if m["mnt"] == "/"][-1]
    tags = [t.split(":")[0] for t in root["optional"]]
    assert ("shared" in tags) is shared, root
    if prop in ("private", "rprivate"):
        assert tags == [], root


def test_no_pivot(rune, cid, make_bundle):
    b = make_bundle(["sh", "-c", "echo $$; ls /; test -e /work && echo host-visible; cat /proc/self/mountinfo"])
    p = rune.run("run", "--no-pivot", "--bundle", b, cid)
    out = ok(p)
    lines = out.splitlines()
    assert lines[0] == "1"
    assert "bin" in lines and "proc" in lines
    assert "host-visible" not in lines
    mounts = mountinfo("\n".join(x for x in lines if " - " in x))
    assert any(m["mnt"] == "/proc" and m["fstype"] == "proc" for m in mounts)
    assert not Path(rune.root, cid).exists()
