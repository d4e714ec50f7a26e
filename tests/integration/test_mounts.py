"""Mount behaviours checked side by side with runc 1.1.5 on the same bundle (the runc half is skipped
when runc is absent): recursive mount attributes (rro, rnosuid, ...), bind sources only the host's
root can reach in a user namespace, what --no-pivot leaves in the mount namespace, and images whose
/proc or /sys is a symlink."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import shutil
import struct
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Rune, needs_busybox, needs_root, ok
from tests.integration.test_bad_input import check_clean_failure, mounts_mentioning

pytestmark = [pytest.mark.root, needs_root, needs_busybox]

def both(rune: Rune, runc: Rune | None) -> list[tuple[str, Rune]]:
    return [("rune", rune)] + ([("runc", runc)] if runc is not None else [])


def fresh_id() -> str:
    return "t-" + uuid.uuid4().hex[:12]


def edit_config(bundle: str, fn) -> None:  # type: ignore[no-untyped-def]
    path = Path(bundle, "config.json")
    cfg = json.loads(path.read_text())
    fn(cfg)
    path.write_text(json.dumps(cfg))


def mount_opts(mountinfo: str, point: str) -> list[str]:
    """The per-mount options of the last mount at ``point``."""
    found = [line.split()[5] for line in mountinfo.splitlines() if line.split()[4:5] == [point]]
    assert found, f"no mount at {point} in:\n{mountinfo}"
    return found[-1].split(",")


# ------------------------------------------------------------------------------ recursive attributes


@pytest.fixture
def host_tree(tmp_path: Path) -> Iterator[Path]:
    """A directory with a tmpfs mounted under it: the submount a plain bind remount leaves alone."""
    top = tmp_path / "top"
    (top / "sub").mkdir(parents=True)
    (top / "file").write_text("top\n")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(top / "sub")], check=True)
    try:
        (top / "sub" / "tool").write_text("#!/bin/sh\necho ran\n")
        (top / "sub" / "tool").chmod(0o755)
        yield top
    finally:
        subprocess.run(["umount", "-l", str(top / "sub")], check=False)


SCRIPT = ("touch /r/new && echo top-rw || echo top-ro; touch /r/sub/new && echo sub-rw || echo sub-ro; "
          "/r/sub/tool || echo no-exec; cat /proc/self/mountinfo")


@pytest.mark.parametrize("options,expect_top,expect_sub", [
    (["rbind", "ro", "rro"], {"ro"}, {"ro"}),
    (["rbind", "rro"], {"ro"}, {"ro"}),
    (["rbind", "ro"], {"ro"}, {"rw"}),  # without rro the submount stays writable (runc alike)
    (["rbind", "rnoexec", "rnosuid", "rnodev"], {"rw", "noexec", "nosuid", "nodev"},
     {"rw", "noexec", "nosuid", "nodev"}),
    (["rbind", "rnoatime"], {"rw", "noatime"}, {"rw", "noatime"}),
])
def test_recursive_mount_attributes(rune, runc, make_bundle, host_tree, options, expect_top, expect_sub):
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["mounts"].append({"destination": "/r", "type": "bind", "source": str(host_tree),
                              "options": options})

    b = make_bundle(["sh", "-c", SCRIPT], edit=edit)
    results = {}
    for name, rt in both(rune, runc):
        out = ok(rt.run("run", "--bundle", b, fresh_id())).splitlines()
        info = "\n".join(out[3:])
        top, sub = set(mount_opts(info, "/r")), set(mount_opts(info, "/r/sub"))
        assert expect_top <= top, (name, top)
        assert expect_sub <= sub, (name, sub)
        readonly_sub = "ro" in expect_sub
        assert out[0] == ("top-ro" if "ro" in expect_top else "top-rw"), (name, out)
        assert out[1] == ("sub-ro" if readonly_sub else "sub-rw"), (name, out)
        assert out[2] == ("no-exec" if "noexec" in expect_sub else "ran"), (name, out)
        results[name] = (out[:3], sorted(top), sorted(sub))
    if "runc" in results:
        assert results["rune"] == results["runc"]
    assert not (host_tree / "new").exists() or "rw" in expect_top
    assert not (host_tree / "sub" / "new").exists() or "rw" in expect_sub


def test_recursive_attributes_leave_the_host_alone(rune, make_bundle, host_tree):
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["mounts"].append({"destination": "/r", "type": "bind", "source": str(host_tree),
                              "options": ["rbind", "rro", "rnoexec"]})

    ok(rune.run("run", "--bundle", make_bundle(["true"], edit=edit), fresh_id()))
    opts = mount_opts(Path("/proc/self/mountinfo").read_text(), str(host_tree / "sub"))
    assert "rw" in opts and "noexec" not in opts
    (host_tree / "sub" / "after").write_text("still writable\n")


# ------------------------------------------------------------------------------ user namespace + private bind sources


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A world-traversable temp dir: the container's root (host uid 100000) must reach its rootfs."""
    d = tempfile.mkdtemp(prefix="rune-mounts-", dir="/tmp")
    os.chmod(d, 0o755)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def userns_bundle(base: Path, args: list[str], mounts: list[dict]) -> str:
    from inclavare.testing.bundle import make_bundle as mk

    b = mk(str(base / "bundle"), args)

    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["linux"]["namespaces"].append({"type": "user"})
        cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        cfg["mounts"].extend(mounts)

    edit_config(b, edit)
    for m in mounts:  # container root cannot create mount points in the root-owned rootfs
        target = Path(b, "rootfs", m["destination"].lstrip("/"))
        if Path(m["source"]).is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.touch()
    return b


def test_userns_bind_sources_only_host_root_can_reach(rune, runc, open_dir):
    private = open_dir / "private"
    (private / "dir").mkdir(parents=True)
    (private / "dir" / "data").write_text("secret dir\n")
    (private / "file").write_text("secret file\n")
    private.chmod(0o700)  # neither uid 100000 nor anyone but host root gets past this
    b = userns_bundle(open_dir, ["sh", "-c", "cat /d/data /f; id -u; touch /d/x || echo ro"], [
        {"destination": "/d", "type": "bind", "source": str(private / "dir"), "options": ["rbind", "ro"]},
        {"destination": "/f", "type": "bind", "source": str(private / "file"), "options": ["bind", "ro"]},
    ])
    for name, rt in both(rune, runc):
        p = rt.run("run", "--bundle", b, fresh_id())
        assert ok(p).splitlines() == ["secret dir", "secret file", "0", "ro"], (name, p.stderr)
    assert oct(private.stat().st_mode & 0o777) == "0o700"


def test_userns_missing_bind_source_is_a_clean_error(rune, runc, open_dir):
    missing = open_dir / "private" / "absent"
    (open_dir / "private").mkdir(mode=0o700)
    b = userns_bundle(open_dir, ["true"], [])

    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["mounts"].append({"destination": "/d", "type": "bind", "source": str(missing), "options": ["rbind"]})

    edit_config(b, edit)
    Path(b, "rootfs", "d").mkdir()
    if runc is not None:
        assert runc.run("create", "--bundle", b, fresh_id()).returncode != 0
    cid = fresh_id()
    before = mounts_mentioning(b, rune.root)
    p = rune.run("create", "--bundle", b, cid)
    check_clean_failure(rune, cid, b, p, "(/d)", f"bind source {missing}", "No such file or directory",
                        before=before)


# ------------------------------------------------------------------------------ --no-pivot

PROC_SUPER_MAGIC, SYSFS_MAGIC = 0x9FA0, 0x62656572
NS_GET_MNTNS_ID = 0x8008B705  # _IOR(0xb7, 5, __u64)
SYS_STATMOUNT, SYS_LISTMOUNT = 457, 458
LSMT_ROOT = 0xFFFFFFFFFFFFFFFF
STATMOUNT_SB_BASIC, STATMOUNT_MNT_ROOT = 0x1, 0x8


def full_mounts_by_magic(pid: int) -> dict[int, int]:
    """Count, per superblock magic, the mounts of a whole filesystem (root "/") in the mount
    namespace of ``pid``, including those no path reaches any more (listmount/statmount, Linux 6.8+:
    /proc/PID/mountinfo only shows what the process's root reaches)."""
    if os.uname().machine != "x86_64":
        pytest.skip("listmount/statmount numbers are wired for x86_64 only here")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        buf = bytearray(8)
        try:
            fcntl.ioctl(fd, NS_GET_MNTNS_ID, buf)
        except OSError as e:
            pytest.skip(f"NS_GET_MNTNS_ID unsupported here: {e}")
        (nsid,) = struct.unpack("Q", buf)
    finally:
        os.close(fd)
    ids = (ctypes.c_uint64 * 4096)()
    req = struct.pack("IIQQQ", 32, 0, LSMT_ROOT, 0, nsid)
    n = libc.syscall(SYS_LISTMOUNT, req, ids, len(ids), 0)
    if n < 0:
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EINVAL, errno.E2BIG):
            pytest.skip(f"listmount with a namespace id unsupported here: {os.strerror(err)}")
        raise OSError(err, "listmount")
    counts: dict[int, int] = {}
    out = ctypes.create_string_buffer(1 << 16)
    for mnt_id in ids[:n]:
        req = struct.pack("IIQQQ", 32, 0, mnt_id, STATMOUNT_SB_BASIC | STATMOUNT_MNT_ROOT, nsid)
        if libc.syscall(SYS_STATMOUNT, req, out, len(out), 0) < 0:
            raise OSError(ctypes.get_errno(), "statmount")
        raw = out.raw
        (magic,) = struct.unpack_from("Q", raw, 24)  # struct statmount.sb_magic
        (root_off,) = struct.unpack_from("I", raw, 104)  # .mnt_root, an offset into .str at 512
        root = raw[512 + root_off:raw.index(b"\0", 512 + root_off)]
        if root == b"/":
            counts[magic] = counts.get(magic, 0) + 1
    return counts


def test_no_pivot_leaves_no_host_proc_or_sysfs(rune, runc, make_bundle):
    b = make_bundle(["sleep", "60"])
    for name, rt in both(rune, runc):
        cid = fresh_id()
        ok(rt.run("create", "--no-pivot", "--bundle", b, cid))
        try:
            pid = rt.state(cid)["pid"]
            counts = full_mounts_by_magic(pid)
            # the container's own /proc and /sys, nothing of the host's
            assert counts.get(PROC_SUPER_MAGIC) == 1, (name, counts)
            assert counts.get(SYSFS_MAGIC) == 1, (name, counts)
            here = full_mounts_by_magic(os.getpid())
            assert here.get(PROC_SUPER_MAGIC, 0) >= 1 and here.get(SYSFS_MAGIC, 0) >= 1  # the host kept its own
        finally:
            rt.run("delete", "--force", cid)
    assert os.path.ismount("/proc") and os.path.exists("/proc/self/mountinfo")


def test_no_pivot_container_still_has_its_proc(rune, make_bundle):
    b = make_bundle(["sh", "-c", "cat /proc/self/mountinfo; ls /sys/fs | wc -l; wc -c < /proc/timer_list"])
    lines = ok(rune.run("run", "--no-pivot", "--bundle", b, fresh_id())).splitlines()
    assert mount_opts("\n".join(lines[:-2]), "/proc")
    assert int(lines[-2]) > 0
    assert lines[-1].strip() == "0"  # masked as usual


# ------------------------------------------------------------------------------ /proc or /sys as a symlink


@pytest.mark.parametrize("entry,fstype", [("proc", "proc"), ("sys", "sysfs")])
def test_proc_or_sys_symlink_in_rootfs_is_refused(rune, runc, make_bundle, entry, fstype):
    b = make_bundle(["true"])
    rootfs = Path(b, "rootfs")
    (rootfs / "evil").mkdir()
    (rootfs / entry).rmdir()
    (rootfs / entry).symlink_to("/evil")
    if runc is not None:
        p = runc.run("run", "--bundle", b, fresh_id())
        assert p.returncode != 0
        assert f'filesystem \\"{fstype}\\" must be mounted on ordinary directory' in p.stderr, p.stderr
    cid = fresh_id()
    before = mounts_mentioning(b, rune.root)
    p = rune.run("create", "--bundle", b, cid)
    check_clean_failure(rune, cid, b, p, f"(/{entry})",
                        f'filesystem "{fstype}" must be mounted on ordinary directory',
                        f"/{entry} in the rootfs is a symlink", before=before)
    assert os.listdir(rootfs / "evil") == []


def test_no_pivot_in_user_namespace(rune, runc, open_dir):
    """In a user namespace the host's proc and sysfs are locked and cannot be detached: runc covers
    them with a tmpfs; rune does the same, so the counts match runc's."""
    private = open_dir / "private"
    private.mkdir(mode=0o700)
    b = userns_bundle(open_dir, ["sleep", "60"], [
        {"destination": "/p", "type": "bind", "source": str(private), "options": ["rbind", "rro"]}])
    counts = {}
    for name, rt in both(rune, runc):
        cid = fresh_id()
        ok(rt.run("create", "--no-pivot", "--bundle", b, cid))
        try:
            counts[name] = full_mounts_by_magic(rt.state(cid)["pid"])
            assert counts[name].get(PROC_SUPER_MAGIC, 0) >= 1, (name, counts[name])
        finally:
            rt.run("delete", "--force", cid)
    if "runc" in counts:
        def pick(c: dict[int, int]) -> tuple[int, int]:
            return c.get(PROC_SUPER_MAGIC, 0), c.get(SYSFS_MAGIC, 0)

        assert pick(counts["rune"]) == pick(counts["runc"]), counts
