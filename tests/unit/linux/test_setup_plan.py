"""The container setup plan without root: linux/rootfs.py, caps.py and pty.py run for real against
RecordingSyscalls, and each test asserts the exact kernel calls, in order, for a realistic config.

The rootfs is a tmp_path directory: target directories and files are made there for real (unprivileged),
every mount, device node, /dev link, root switch, name and capability change is only recorded.
"""

from __future__ import annotations

import ast
import copy
import errno
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from inclavare.errors import ConfigError, SysError
from inclavare.formats.oci_spec import default_spec
from inclavare.linux import caps as capmod
from inclavare.linux import pty
from inclavare.linux import rootfs as rf
from inclavare.linux import syscalls as sc
from inclavare.testing.syscalls import RecordingSyscalls

SRC = Path(__file__).resolve().parents[3] / "src" / "inclavare"

BIND, REC, RO, REMOUNT = sc.MS_BIND, sc.MS_REC, sc.MS_RDONLY, sc.MS_REMOUNT
NOSUID, NODEV, NOEXEC = sc.MS_NOSUID, sc.MS_NODEV, sc.MS_NOEXEC
SLAVE, PRIVATE, SHARED, UNBINDABLE = sc.MS_SLAVE, sc.MS_PRIVATE, sc.MS_SHARED, sc.MS_UNBINDABLE

# / is a shared mount, as on a systemd host: pivot_root needs the rootfs's parent mount made private
HOST_MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
24 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
"""

# runc's default device nodes: path, major, minor
DEFAULT_NODES = [("/dev/null", 1, 3), ("/dev/zero", 1, 5), ("/dev/full", 1, 7),
                 ("/dev/tty", 5, 0), ("/dev/urandom", 1, 9), ("/dev/random", 1, 8)]

CGROUP_HOST = "/sys/fs/cgroup/machine/c1"


def mnt(source: str | None, target: str, fstype: str | None = None, flags: int = 0,
        data: str | None = None) -> tuple[Any, ...]:
    return ("mount", source, target, fstype, flags, data)


def node(r: str, path: str, major: int, minor: int, kind: int = stat.S_IFCHR, mode: int = 0o666,
         uid: int = 0, gid: int = 0) -> list[tuple[Any, ...]]:
    return [("mknod", r + path, kind | mode, os.makedev(major, minor)), ("chown", r + path, uid, gid),
            ("chmod", r + path, mode)]


def dev_links(r: str) -> list[tuple[Any, ...]]:
    links = [("symlink", "/proc/self/fd", f"{r}/dev/fd"), ("symlink", "/proc/self/fd/0", f"{r}/dev/stdin"),
             ("symlink", "/proc/self/fd/1", f"{r}/dev/stdout"), ("symlink", "/proc/self/fd/2", f"{r}/dev/stderr")]
    if os.path.exists("/proc/kcore"):  # the plan links /dev/core only where the host has it
        links.append(("symlink", "/proc/kcore", f"{r}/dev/core"))
    return links + [("unlink", f"{r}/dev/ptmx"), ("symlink", "pts/ptmx", f"{r}/dev/ptmx")]


@pytest.fixture
def root(tmp_path: Path) -> str:
    r = tmp_path / "rootfs"
    r.mkdir()
    return os.path.realpath(r)


@pytest.fixture
def k() -> RecordingSyscalls:
    return RecordingSyscalls(mountinfo=HOST_MOUNTINFO)


def ctx(r: str, **kw: Any) -> rf.RootfsContext:
    kw.setdefault("cgroup_paths", {"": CGROUP_HOST})
    return rf.RootfsContext(rootfs=r, **kw)


# ------------------------------------------------------------------------------------ the default runc spec


def test_default_spec_prepare(root: str, k: RecordingSyscalls) -> None:
    r = root
    rf.prepare_rootfs(r, default_spec(), ctx(r), in_userns=False, kernel=k)
    expected = [
        mnt(None, "/", None, SLAVE | REC),  # no rootfsPropagation: rslave
        mnt(None, "/", None, PRIVATE),  # the rootfs's parent mount was shared
        mnt(r, r, None, BIND | REC),
        mnt("proc", f"{r}/proc", "proc"),
        mnt("tmpfs", f"{r}/dev", "tmpfs", NOSUID | sc.MS_STRICTATIME, "mode=755,size=65536k"),
        mnt("devpts", f"{r}/dev/pts", "devpts", NOSUID | NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"),
        mnt("shm", f"{r}/dev/shm", "tmpfs", NOSUID | NOEXEC | NODEV, "mode=1777,size=65536k"),
        mnt("mqueue", f"{r}/dev/mqueue", "mqueue", NOSUID | NOEXEC | NODEV),
        mnt("sysfs", f"{r}/sys", "sysfs", NOSUID | NOEXEC | NODEV | RO),
        # cgroup v2 without a cgroup namespace: the container's own cgroup bound, then made read-only
        mnt(CGROUP_HOST, f"{r}/sys/fs/cgroup", None, BIND),
        mnt(None, f"{r}/sys/fs/cgroup", None, BIND | REMOUNT | NOSUID | NOEXEC | NODEV | sc.MS_RELATIME | RO),
    ]
    for path, major, minor in DEFAULT_NODES:
        expected += node(r, path, major, minor)
    expected += dev_links(r)
    assert k.calls == expected
    # mount targets are real directories of the rootfs
    for d in ("proc", "dev/pts", "dev/shm", "dev/mqueue", "sys/fs/cgroup"):
        assert os.path.isdir(os.path.join(r, d))


def test_default_spec_pivot_and_finish(root: str, k: RecordingSyscalls) -> None:
    r = root
    spec = default_spec()
    spec["root"] = {"path": "rootfs", "readonly": True}
    rf.enter_rootfs(r, has_mntns=True, no_pivot=False, kernel=k)
    rf.finish_rootfs(spec, {t["type"] for t in spec["linux"]["namespaces"]}, kernel=k)
    expected: list[tuple[Any, ...]] = [
        ("fchdir", r), ("pivot_root", ".", "."), ("fchdir", "/"),
        mnt(None, ".", None, SLAVE | REC), ("umount", ".", sc.MNT_DETACH), ("chdir", "/"),
    ]
    expected += [mnt("/dev/null", p, None, BIND) for p in spec["linux"]["maskedPaths"]]
    for p in spec["linux"]["readonlyPaths"]:
        expected += [mnt(p, p, None, BIND | REC), mnt(None, p, None, BIND | REMOUNT | RO | REC)]
    expected += [mnt(None, "/", None, BIND | REMOUNT | RO), ("sethostname", "runc")]
    assert k.calls == expected
    assert "/proc/kcore" in spec["linux"]["maskedPaths"] and "/proc/sys" in spec["linux"]["readonlyPaths"]


def test_rootfs_parent_mount_made_private_only_when_shared(root: str) -> None:
    k = RecordingSyscalls(mountinfo="22 1 8:1 / / rw,relatime - ext4 /dev/vda rw\n"
                                    f"30 22 0:40 / {os.path.dirname(root)} rw shared:9 - tmpfs tmpfs rw\n")
    rf.make_parent_private(root, kernel=k)
    assert k.calls == [mnt(None, os.path.dirname(root), None, PRIVATE)]  # the longest prefix decides
    k = RecordingSyscalls(mountinfo="22 1 8:1 / / rw,relatime - ext4 /dev/vda rw\n")
    rf.make_parent_private(root, kernel=k)
    assert k.calls == []


# ------------------------------------------------------------------------------------ bind mounts


def test_bind_mounts_ro_rro_nosuid(root: str, tmp_path: Path, k: RecordingSyscalls) -> None:
    r = root
    data = tmp_path / "data"
    data.mkdir()
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\n")
    config = {"mounts": [
        {"destination": "/data", "type": "bind", "source": str(data), "options": ["rbind", "ro", "nosuid"]},
        {"destination": "/etc/resolv.conf", "type": "bind", "source": str(resolv), "options": ["bind", "rro"]},
        {"destination": "/plain", "source": str(data), "options": ["bind"]},
    ]}
    for i, m in enumerate(config["mounts"]):
        rf.mount_one(i, m, ctx(r), kernel=k)
    assert k.calls == [
        mnt(str(data), f"{r}/data", None, BIND | REC),
        mnt(None, f"{r}/data", None, BIND | REMOUNT | RO | NOSUID),
        mnt(str(resolv), f"{r}/etc/resolv.conf", None, BIND),
        ("mount_setattr", f"{r}/etc/resolv.conf", sc.MOUNT_ATTR_RDONLY, 0, sc.AT_RECURSIVE),
        mnt(str(data), f"{r}/plain", None, BIND),
    ]
    # a file source gets a file target, a directory source a directory
    assert os.path.isdir(f"{r}/data") and os.path.isfile(f"{r}/etc/resolv.conf")


def test_bind_target_follows_symlinks_inside_the_rootfs(root: str, tmp_path: Path, k: RecordingSyscalls) -> None:
    r = root
    os.symlink("/../../var/lib", f"{r}/lib")  # an image symlink must not lead the mount out of the rootfs
    rf.mount_one(0, {"destination": "/lib/x", "type": "bind", "source": str(tmp_path)}, ctx(r), kernel=k)
    assert k.calls == [mnt(str(tmp_path), f"{r}/var/lib/x", None, BIND)]


def test_bind_source_missing_is_a_config_error(root: str, k: RecordingSyscalls) -> None:
    with pytest.raises(ConfigError) as ei:
        rf.mount_one(3, {"destination": "/x", "type": "bind", "source": "/nonexistent/src"}, ctx(root), kernel=k)
    assert str(ei.value) == "mounts[3] (/x): bind source /nonexistent/src: No such file or directory"
    assert k.calls == []


def test_bind_remount_in_a_user_namespace_keeps_locked_flags(root: str, tmp_path: Path,
                                                             k: RecordingSyscalls) -> None:
    r = root
    k.fail("mount", errno.EPERM, target=f"{r}/ro", skip=1)  # the remount, which dropped locked flags
    rf.mount_one(0, {"destination": "/ro", "type": "bind", "source": str(tmp_path), "options": ["rbind", "ro"]},
                 ctx(r), kernel=k)
    locked = rf.statfs_flags(f"{r}/ro")
    assert k.calls == [
        mnt(str(tmp_path), f"{r}/ro", None, BIND | REC),
        mnt(None, f"{r}/ro", None, BIND | REMOUNT | RO),
        mnt(None, f"{r}/ro", None, BIND | REMOUNT | RO | locked),
    ]


def test_recursive_option_without_mount_setattr(root: str, tmp_path: Path, k: RecordingSyscalls) -> None:
    k.fail("mount_setattr", errno.ENOSYS)
    with pytest.raises(SysError) as ei:
        rf.mount_one(1, {"destination": "/r", "type": "bind", "source": str(tmp_path), "options": ["rbind", "rro"]},
                     ctx(root), kernel=k)
    assert ei.value.errno == errno.ENOSYS
    assert str(ei.value) == (f"mounts[1] (/r): recursive mount options (rro, rnosuid, ...) need mount_setattr(2), "
                             f"Linux 5.12 or later: mount_setattr {root}/r: Function not implemented")


def test_bind_source_opened_by_the_runtime_is_reached_through_its_fd(root: str, tmp_path: Path,
                                                                      k: RecordingSyscalls) -> None:
    r = root
    fd = os.open(tmp_path, os.O_PATH | os.O_CLOEXEC)
    spec: dict[str, Any] = {"mounts": [{"destination": "/src", "type": "bind", "source": "/not/visible/here"}]}
    rf.prepare_rootfs(r, spec, ctx(r, source_fds={0: fd}), in_userns=True, kernel=k)
    assert k.calls[3] == mnt(f"/proc/self/fd/{fd}", f"{r}/src", None, BIND)
    with pytest.raises(OSError) as ei:  # prepare_rootfs closed it once the mounts were done
        os.fstat(fd)
    assert ei.value.errno == errno.EBADF


# ------------------------------------------------------------------------------------ propagation


@pytest.mark.parametrize(("opt", "flags"), [("rslave", SLAVE | REC), ("rprivate", PRIVATE | REC),
                                            ("shared", SHARED), ("runbindable", UNBINDABLE | REC)])
def test_mount_propagation_follows_the_mount(root: str, tmp_path: Path, k: RecordingSyscalls,
                                             opt: str, flags: int) -> None:
    r = root
    rf.mount_one(0, {"destination": "/b", "type": "bind", "source": str(tmp_path), "options": ["rbind", opt]},
                 ctx(r), kernel=k)
    rf.mount_one(1, {"destination": "/t", "type": "tmpfs", "source": "tmpfs", "options": [opt, "size=1m"]},
                 ctx(r), kernel=k)
    assert k.calls == [mnt(str(tmp_path), f"{r}/b", None, BIND | REC), mnt(None, f"{r}/b", None, flags),
                       mnt("tmpfs", f"{r}/t", "tmpfs", 0, "size=1m"), mnt(None, f"{r}/t", None, flags)]


@pytest.mark.parametrize(("prop", "before", "after"), [
    ("", SLAVE | REC, None),
    ("rslave", SLAVE | REC, None),
    ("private", PRIVATE, None),
    ("rprivate", PRIVATE | REC, None),
    ("shared", SHARED, SHARED),
    ("rshared", SHARED | REC, SHARED | REC),
    # the rootfs must stay bindable until pivot_root: private first, unbindable after
    ("unbindable", PRIVATE, UNBINDABLE),
    ("runbindable", PRIVATE | REC, UNBINDABLE | REC),
])
def test_rootfs_propagation(root: str, prop: str, before: int, after: int | None) -> None:
    k = RecordingSyscalls()
    config: dict[str, Any] = {"linux": {"rootfsPropagation": prop}}
    rf.prepare_rootfs(root, config, ctx(root), in_userns=False, kernel=k)
    assert k.calls[:2] == [mnt(None, "/", None, before), mnt(root, root, None, BIND | REC)]
    k.calls.clear()
    rf.finish_rootfs(config, {"mount"}, kernel=k)
    assert k.calls == ([] if after is None else [mnt(None, "/", None, after)])


# ------------------------------------------------------------------------------------ masked and read-only paths


def test_masked_paths_missing_directory_and_refused(k: RecordingSyscalls) -> None:
    k.fail("mount", errno.ENOENT, target="/proc/asound")
    k.fail("mount", errno.ENOTDIR, target="/sys/firmware")  # a directory: covered by an empty read-only tmpfs
    config = {"linux": {"maskedPaths": ["/proc/kcore", "/proc/asound", "/sys/firmware"]}}
    rf.finish_rootfs(config, {"mount"}, kernel=k)
    assert k.calls == [mnt("/dev/null", "/proc/kcore", None, BIND), mnt("/dev/null", "/proc/asound", None, BIND),
                       mnt("/dev/null", "/sys/firmware", None, BIND), mnt("tmpfs", "/sys/firmware", "tmpfs", RO)]
    k = RecordingSyscalls()
    k.fail("mount", errno.EPERM, target="/proc/kcore")
    with pytest.raises(SysError) as ei:
        rf.finish_rootfs(config, {"mount"}, kernel=k)
    assert str(ei.value) == "maskedPaths: /proc/kcore: mount /dev/null on /proc/kcore: Operation not permitted"
    assert ei.value.errno == errno.EPERM


def test_readonly_paths(k: RecordingSyscalls) -> None:
    k.fail("mount", errno.ENOENT, target="/proc/bus")  # absent: skipped
    k.fail("mount", errno.EPERM, target="/proc", skip=1)  # the remount refused: retried keeping locked flags
    config = {"linux": {"readonlyPaths": ["/proc/bus", "/proc"], "maskedPaths": []}}
    rf.finish_rootfs(config, {"mount"}, kernel=k)
    ro = BIND | REMOUNT | RO | REC
    assert k.calls == [mnt("/proc/bus", "/proc/bus", None, BIND | REC), mnt("/proc", "/proc", None, BIND | REC),
                       mnt(None, "/proc", None, ro), mnt(None, "/proc", None, ro | rf.statfs_flags("/proc"))]
    k = RecordingSyscalls()
    k.fail("mount", errno.EACCES, target="/proc/sys")
    with pytest.raises(SysError) as ei:
        rf.readonly_path("/proc/sys", kernel=k)
    assert str(ei.value) == "readonlyPaths: /proc/sys: mount /proc/sys on /proc/sys: Permission denied"


def test_sysctls_come_before_readonly_paths_and_fail_clearly(k: RecordingSyscalls) -> None:
    config = {"linux": {"sysctl": {"net.ipv4.ip_forward": "1", "kernel.msgmax": "8192"},
                        "readonlyPaths": ["/proc/sys"]}, "hostname": "h", "domainname": "d.example"}
    rf.finish_rootfs(config, {"mount", "uts"}, kernel=k)
    assert k.names() == ["write_sysctl", "write_sysctl", "mount", "mount", "sethostname", "setdomainname"]
    assert k.calls[:2] == [("write_sysctl", "net.ipv4.ip_forward", "1"), ("write_sysctl", "kernel.msgmax", "8192")]
    k = RecordingSyscalls()
    k.fail("write_sysctl", errno.EACCES)
    with pytest.raises(SysError) as ei:
        rf.finish_rootfs(config, {"mount", "uts"}, kernel=k)
    assert str(ei.value) == "linux.sysctl: net.ipv4.ip_forward=1: Permission denied"
    assert k.names() == ["write_sysctl"]


def test_no_mount_or_uts_namespace(root: str, k: RecordingSyscalls) -> None:
    spec = default_spec()
    rf.enter_rootfs(root, has_mntns=False, no_pivot=False, kernel=k)
    rf.finish_rootfs(spec, {"pid"}, kernel=k)  # no masks, read-only paths or hostname outside their namespaces
    assert k.calls == [("chroot", root), ("chdir", "/")]


def test_hostname_refused(k: RecordingSyscalls) -> None:
    k.fail("sethostname", errno.EPERM)
    with pytest.raises(SysError) as ei:
        rf.finish_rootfs({"hostname": "box"}, {"uts"}, kernel=k)
    assert str(ei.value) == "sethostname 'box': Operation not permitted"


# ------------------------------------------------------------------------------------ devices


def test_config_devices_after_the_defaults_they_do_not_replace(root: str, k: RecordingSyscalls) -> None:
    r = root
    devices = [
        {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o666, "uid": 0, "gid": 0},
        {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o620, "uid": 1000, "gid": 5},
        {"path": "/dev/sda", "type": "b", "major": 8, "minor": 0},
        {"path": "/dev/fifo0", "type": "p"},
    ]
    rf.create_devices(r, devices, in_userns=False, kernel=k)
    expected = []
    for path, major, minor in DEFAULT_NODES[1:]:
        expected += node(r, path, major, minor)
    expected += node(r, "/dev/fuse", 10, 229)
    expected += node(r, "/dev/null", 1, 3, mode=0o620, uid=1000, gid=5)
    expected += node(r, "/dev/sda", 8, 0, kind=stat.S_IFBLK)  # no fileMode: 0666
    expected += node(r, "/dev/fifo0", 0, 0, kind=stat.S_IFIFO)
    assert k.calls == expected
    assert os.path.isdir(f"{r}/dev")


def test_existing_device_node_is_kept(root: str, k: RecordingSyscalls) -> None:
    k.fail("mknod", errno.EEXIST, target=f"{root}/dev/null")
    rf.create_devices(root, [], in_userns=False, kernel=k)
    assert k.calls[:2] == [("mknod", f"{root}/dev/null", stat.S_IFCHR | 0o666, os.makedev(1, 3)),
                           ("mknod", f"{root}/dev/zero", stat.S_IFCHR | 0o666, os.makedev(1, 5))]


def test_device_node_refused(root: str, k: RecordingSyscalls) -> None:
    k.fail("mknod", errno.EPERM, target=f"{root}/dev/fuse")
    with pytest.raises(SysError) as ei:
        rf.create_devices(root, [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}], False, kernel=k)
    assert str(ei.value) == "devices: creating /dev/fuse: Operation not permitted"
    assert ei.value.errno == errno.EPERM


def test_device_symlinks_over_an_existing_dev(root: str, k: RecordingSyscalls) -> None:
    k.fail("symlink", errno.EEXIST, target=f"{root}/dev/fd")  # an image's own /dev/fd link stays
    k.fail("unlink", errno.ENOENT)
    rf.dev_symlinks(root, kernel=k)
    assert k.calls == dev_links(root)


# ------------------------------------------------------------------------------------ a user namespace


def test_rootless_spec_in_a_user_namespace(root: str) -> None:
    r = root
    k = RecordingSyscalls(mountinfo=HOST_MOUNTINFO)
    spec = default_spec(rootless=True)
    k.fail("mount", errno.EPERM, target=f"{r}/dev/mqueue")  # no mqueue of its own without an ipc ns it owns
    k.fail("mount", errno.EPERM, target=f"{r}/sys", skip=1)  # the rbind's ro remount: /sys's locked flags kept
    rf.prepare_rootfs(r, spec, ctx(r), in_userns=True, kernel=k)
    sys_locked = rf.statfs_flags(f"{r}/sys")
    expected = [
        mnt(None, "/", None, SLAVE | REC), mnt(None, "/", None, PRIVATE), mnt(r, r, None, BIND | REC),
        mnt("proc", f"{r}/proc", "proc"),
        mnt("tmpfs", f"{r}/dev", "tmpfs", NOSUID | sc.MS_STRICTATIME, "mode=755,size=65536k"),
        mnt("devpts", f"{r}/dev/pts", "devpts", NOSUID | NOEXEC, "newinstance,ptmxmode=0666,mode=0620"),
        mnt("shm", f"{r}/dev/shm", "tmpfs", NOSUID | NOEXEC | NODEV, "mode=1777,size=65536k"),
        mnt("mqueue", f"{r}/dev/mqueue", "mqueue", NOSUID | NOEXEC | NODEV),
        mnt("/dev/mqueue", f"{r}/dev/mqueue", None, BIND | REC),  # the host's, bound instead
        mnt(None, f"{r}/dev/mqueue", None, BIND | REMOUNT | NOSUID | NOEXEC | NODEV),
        mnt("/sys", f"{r}/sys", None, BIND | REC),
        mnt(None, f"{r}/sys", None, BIND | REMOUNT | NOSUID | NOEXEC | NODEV | RO),
        mnt(None, f"{r}/sys", None, BIND | REMOUNT | NOSUID | NOEXEC | NODEV | RO | sys_locked),
        mnt(CGROUP_HOST, f"{r}/sys/fs/cgroup", None, BIND),
        mnt(None, f"{r}/sys/fs/cgroup", None, BIND | REMOUNT | NOSUID | NOEXEC | NODEV | sc.MS_RELATIME | RO),
    ]
    # no mknod in a user namespace: each device is the host's node bound onto an empty file
    expected += [mnt(p, r + p, None, BIND) for p, _major, _minor in DEFAULT_NODES]
    expected += dev_links(r)
    assert k.calls == expected
    assert all(os.path.isfile(r + p) for p, _major, _minor in DEFAULT_NODES)


def test_sysfs_refused_in_a_user_namespace_binds_the_hosts(root: str, k: RecordingSyscalls) -> None:
    r = root
    k.fail("mount", errno.EPERM, target=f"{r}/sys")
    rf.mount_one(5, {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "ro"]},
                 ctx(r), kernel=k)
    assert k.calls == [mnt("sysfs", f"{r}/sys", "sysfs", NOSUID | RO), mnt("/sys", f"{r}/sys", None, BIND | REC),
                       mnt(None, f"{r}/sys", None, BIND | REMOUNT | NOSUID | RO)]


def test_mount_refused_is_one_line_naming_the_mount(root: str, k: RecordingSyscalls) -> None:
    k.fail("mount", errno.EPERM, target=f"{root}/proc")
    with pytest.raises(SysError) as ei:
        rf.prepare_rootfs(root, default_spec(), ctx(root), in_userns=False, kernel=k)
    assert str(ei.value) == f"mounts[0] (/proc): mount proc on {root}/proc (proc): Operation not permitted"
    assert ei.value.errno == errno.EPERM
    assert k.calls[-1] == mnt("proc", f"{root}/proc", "proc")  # nothing after the failed mount


def test_proc_elsewhere_is_refused_before_any_mount(root: str, k: RecordingSyscalls) -> None:
    with pytest.raises(ConfigError) as ei:
        rf.mount_one(2, {"destination": "/mnt/proc", "type": "proc", "source": "proc"}, ctx(root), kernel=k)
    assert str(ei.value) == "mounts[2] (/mnt/proc): proc can only be mounted on /proc"
    assert k.calls == []


# ------------------------------------------------------------------------------------ cgroups v1, tmpcopyup


def test_cgroup_v1_hierarchies(root: str, k: RecordingSyscalls) -> None:
    r = root
    paths = {"memory": "/sys/fs/cgroup/memory/c1", "cpu,cpuacct": "/sys/fs/cgroup/cpu,cpuacct/c1",
             "name=systemd": "/sys/fs/cgroup/systemd/c1"}
    m = {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "ro"]}
    rf.mount_one(6, m, ctx(r, cgroup_paths=paths), kernel=k)
    cg = f"{r}/sys/fs/cgroup"
    assert k.calls == [
        mnt("tmpfs", cg, "tmpfs", NOSUID | NODEV | NOEXEC, "mode=755"),
        mnt("/sys/fs/cgroup/cpu,cpuacct/c1", f"{cg}/cpu,cpuacct", None, BIND | REC),
        mnt(None, f"{cg}/cpu,cpuacct", None, BIND | REMOUNT | NOSUID | RO),
        mnt("/sys/fs/cgroup/memory/c1", f"{cg}/memory", None, BIND | REC),
        mnt(None, f"{cg}/memory", None, BIND | REMOUNT | NOSUID | RO),
        mnt("/sys/fs/cgroup/systemd/c1", f"{cg}/name=systemd", None, BIND | REC),
        mnt(None, f"{cg}/name=systemd", None, BIND | REMOUNT | NOSUID | RO),
        ("symlink", "cpu,cpuacct", f"{cg}/cpu"), ("symlink", "cpu,cpuacct", f"{cg}/cpuacct"),
        mnt(None, cg, None, REMOUNT | RO | NOSUID | NODEV | NOEXEC, "mode=755"),
    ]


def test_cgroup_namespace_mounts_cgroup2(root: str, k: RecordingSyscalls) -> None:
    m = {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "ro"]}
    rf.mount_one(0, m, ctx(root, cgroupns=True), kernel=k)
    assert k.calls == [mnt("cgroup2", f"{root}/sys/fs/cgroup", "cgroup2", NOSUID | RO)]


def test_tmpcopyup(root: str, k: RecordingSyscalls) -> None:
    m = {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["tmpcopyup", "nosuid", "size=1m"]}
    rf.mount_one(0, m, ctx(root), kernel=k)
    (_m, src, tmp, fstype, flags, data), move = k.calls
    assert (src, fstype, flags, data) == ("tmpfs", "tmpfs", NOSUID, "size=1m")
    assert os.path.basename(tmp).startswith("rune-tmpcopyup-") and not os.path.exists(tmp)
    assert move == mnt(tmp, f"{root}/run", None, sc.MS_MOVE)


# ------------------------------------------------------------------------------------ --no-pivot


def test_no_pivot_detaches_host_proc_and_sys_then_moves_the_root(root: str) -> None:
    r = root
    escaped = r.replace(" ", "\\040")
    k = RecordingSyscalls(mountinfo=HOST_MOUNTINFO + (
        f"40 22 0:50 / {escaped} rw shared:30 - ext4 /dev/vda rw\n"
        f"41 40 0:51 / {escaped}/proc rw - proc proc rw\n"  # the container's own: kept
        "42 23 0:21 /sys /proc/sys rw - proc proc rw\n"  # a part of procfs, not a whole one: kept
        "43 22 0:52 / /run/host\\040proc rw - proc proc rw\n"
    ))
    k.fail("umount", errno.EINVAL, target="/sys")  # locked: covered by a tmpfs instead
    k.fail("mount", errno.ENOENT, target="/run/host proc")  # already gone with an earlier detach
    rf.enter_rootfs(r, has_mntns=True, no_pivot=True, kernel=k)
    assert k.calls == [
        mnt(None, "/proc", None, SLAVE | REC), ("umount", "/proc", sc.MNT_DETACH),
        mnt(None, "/sys", None, SLAVE | REC), ("umount", "/sys", sc.MNT_DETACH), mnt("tmpfs", "/sys", "tmpfs"),
        mnt(None, "/run/host proc", None, SLAVE | REC),
        ("chdir", r), mnt(r, "/", None, sc.MS_MOVE), ("chroot", "."), ("chdir", "/"),
    ]


def test_pivot_root_refused(root: str, k: RecordingSyscalls) -> None:
    k.fail("pivot_root", errno.EINVAL)
    with pytest.raises(SysError) as ei:
        rf.enter_rootfs(root, has_mntns=True, no_pivot=False, kernel=k)
    assert str(ei.value) == "pivot_root .: Invalid argument"
    assert k.calls == [("fchdir", root), ("pivot_root", ".", ".")]


# ------------------------------------------------------------------------------------ console, capabilities


def test_console_is_the_pty_slave_bound_on_dev_console(root: str, k: RecordingSyscalls) -> None:
    os.mkdir(f"{root}/dev")
    pty.attach_console(f"{root}/dev/console", "/dev/pts/3", kernel=k)
    assert k.calls == [mnt("/dev/pts/3", f"{root}/dev/console", None, BIND)]
    assert os.path.isfile(f"{root}/dev/console")


def _mask(*caps: int) -> int:
    return sum(1 << c for c in caps)


CAP_CHOWN, CAP_KILL, CAP_NET_BIND_SERVICE, CAP_SYS_ADMIN = 0, 5, 10, 21


def test_capabilities_apply(k: RecordingSyscalls) -> None:
    caps = {"bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "effective": ["CAP_CHOWN", "CAP_KILL"], "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
            "inheritable": ["CAP_NET_BIND_SERVICE"], "ambient": ["CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN"]}
    k.fail("prctl", errno.EPERM, target=sc.PR_CAP_AMBIENT, times=None)  # ambient raises are best effort
    capmod.apply(caps, kernel=k)
    assert k.calls == [
        ("capset", _mask(CAP_CHOWN, CAP_KILL), _mask(CAP_CHOWN, CAP_KILL, CAP_NET_BIND_SERVICE),
         _mask(CAP_NET_BIND_SERVICE)),
        ("prctl", sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0),
        ("prctl", sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE, 0, 0),
        ("prctl", sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE, CAP_SYS_ADMIN, 0, 0),
    ]
    k = RecordingSyscalls()
    k.fail("capset", errno.EPERM)
    with pytest.raises(SysError) as ei:
        capmod.apply(caps, kernel=k)
    assert str(ei.value) == "capset: Operation not permitted"
    k = RecordingSyscalls()
    k.fail("prctl", errno.EFAULT, target=sc.PR_CAP_AMBIENT, times=None)
    with pytest.raises(SysError) as ei:  # an unexpected ambient failure is not swallowed
        capmod.apply({"ambient": ["CAP_KILL"]}, kernel=k)
    assert str(ei.value) == f"prctl {sc.PR_CAP_AMBIENT}: Bad address"


def test_bounding_set_drop(k: RecordingSyscalls) -> None:
    top = capmod.last_cap()
    k.fail("prctl", errno.EINVAL, target=sc.PR_CAPBSET_DROP)  # a cap this kernel does not know: ignored
    capmod.drop_bounding([CAP_CHOWN, CAP_KILL], kernel=k)
    assert k.calls == [("prctl", sc.PR_CAPBSET_DROP, c, 0, 0, 0) for c in range(top + 1)
                       if c not in (CAP_CHOWN, CAP_KILL)]
    k = RecordingSyscalls()
    k.fail("prctl", errno.EPERM)
    with pytest.raises(SysError) as ei:
        capmod.drop_bounding([], kernel=k)
    assert str(ei.value) == f"dropping capability 0 from the bounding set: prctl {sc.PR_CAPBSET_DROP}: " \
                            "Operation not permitted"


# ------------------------------------------------------------------------------------ the double itself


def test_double_overrides_every_operation() -> None:
    """A method the double forgot would run the real call in a unit test."""
    ops = {n for n, v in vars(sc.Syscalls).items() if isinstance(v, staticmethod)}
    assert ops and ops <= set(vars(RecordingSyscalls))
    assert {"mount", "umount", "pivot_root", "mknod", "symlink", "chroot", "sethostname", "capset"} <= ops


def test_real_one_is_the_default_everywhere() -> None:
    import inspect

    for fn in (rf.prepare_rootfs, rf.enter_rootfs, rf.finish_rootfs, rf.mount_one, rf.create_devices,
               rf.dev_symlinks, rf.pivot, rf.move_root, rf.mask_path, rf.readonly_path, rf.set_readonly_root,
               rf.make_parent_private, capmod.apply, capmod.drop_bounding, pty.attach_console):
        assert inspect.signature(fn).parameters["kernel"].default is sc.KERNEL, fn.__name__
    assert type(sc.KERNEL) is sc.Syscalls
    assert sc.KERNEL.mount is sc.mount and sc.KERNEL.chroot is os.chroot  # the functions themselves
    # no library module imports the double
    for py in SRC.rglob("*.py"):
        if "testing" in py.relative_to(SRC).parts:
            continue
        for n in ast.walk(ast.parse(py.read_text())):
            names = [a.name for a in n.names] if isinstance(n, ast.Import) else \
                [f"{n.module}.{a.name}" for a in n.names] if isinstance(n, ast.ImportFrom) else []
            assert not any(x.startswith("inclavare.testing") for x in names), py


@pytest.mark.parametrize(("call", "args"), [
    ("mount", ("proc", "/r/proc", "proc", 0, None)),
    ("mount", (None, "/r/x", None, BIND | REMOUNT, None)),
    ("umount", ("/proc", sc.MNT_DETACH)),
    ("pivot_root", (".", ".")),
    ("mount_setattr", ("/r/x", 1, 0, sc.AT_RECURSIVE)),
    ("sethostname", ("box",)),
    ("setdomainname", ("example.org",)),
    ("prctl", (sc.PR_CAPBSET_DROP, 3, 0, 0, 0)),
])
def test_double_errors_are_the_real_ones(monkeypatch: pytest.MonkeyPatch, call: str, args: tuple[Any, ...]) -> None:
    class FailingLibc:
        def __getattr__(self, name: str) -> Any:
            return lambda *a: -1

    monkeypatch.setattr(sc, "libc", lambda: FailingLibc())
    monkeypatch.setattr(sc.ctypes, "get_errno", lambda: errno.EPERM)
    with pytest.raises(SysError) as real:
        getattr(sc.KERNEL, call)(*args)
    k = RecordingSyscalls()
    k.fail(call, errno.EPERM)
    with pytest.raises(SysError) as double:
        getattr(k, call)(*args)
    assert (str(double.value), double.value.errno) == (str(real.value), real.value.errno) != ("", 0)
    assert k.calls == [(call, *args)]


def test_double_os_errors_are_the_real_ones(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    k = RecordingSyscalls()
    for name, args in (("chdir", (missing,)), ("unlink", (missing,)), ("chmod", (missing, 0o600))):
        with pytest.raises(OSError) as real:
            getattr(sc.KERNEL, name)(*args)
        k.fail(name, errno.ENOENT)
        with pytest.raises(OSError) as double:
            getattr(k, name)(*args)
        assert type(double.value) is type(real.value) is FileNotFoundError
        assert str(double.value) == str(real.value)
    (tmp_path / "f").write_text("")
    with pytest.raises(FileExistsError) as real_link:
        sc.KERNEL.symlink("x", str(tmp_path / "f"))
    k.fail("symlink", errno.EEXIST)
    with pytest.raises(FileExistsError) as double_link:
        k.symlink("x", str(tmp_path / "f"))
    assert str(double_link.value) == str(real_link.value)


def test_double_faults_match_and_count() -> None:
    k = RecordingSyscalls()
    k.fail("mount", errno.EBUSY, target="/a", times=2)
    k.mount(None, "/b", None)
    for _ in range(2):
        with pytest.raises(SysError):
            k.mount(None, "/a", None)
    k.mount(None, "/a", None)  # the fault is used up
    assert len(k.calls) == 4
    with pytest.raises(ValueError, match="no call named 'mkdir'"):
        k.fail("mkdir", errno.EPERM)
    assert RecordingSyscalls(caps=(1, 2, 3)).capget() == (1, 2, 3)
    spec = copy.deepcopy(default_spec())  # the plan does not change the config it is given
    before = copy.deepcopy(spec)
    rf.finish_rootfs(spec, {"mount", "uts"}, kernel=RecordingSyscalls())
    assert spec == before
