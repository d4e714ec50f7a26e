"""linux/rootfs.py without root: mount option parsing, secure_join, statfs_flags, _create_target."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from inclavare.errors import SysError
from inclavare.linux import rootfs as rf
from inclavare.linux import syscalls as sc

SET_OPTIONS = {
    "bind": sc.MS_BIND, "rbind": sc.MS_BIND | sc.MS_REC, "ro": sc.MS_RDONLY, "nosuid": sc.MS_NOSUID,
    "nodev": sc.MS_NODEV, "noexec": sc.MS_NOEXEC, "sync": sc.MS_SYNCHRONOUS, "remount": sc.MS_REMOUNT,
    "mand": sc.MS_MANDLOCK, "dirsync": sc.MS_DIRSYNC, "nosymfollow": sc.MS_NOSYMFOLLOW,
    "noatime": sc.MS_NOATIME, "nodiratime": sc.MS_NODIRATIME, "silent": sc.MS_SILENT,
    "relatime": sc.MS_RELATIME, "iversion": sc.MS_I_VERSION, "strictatime": sc.MS_STRICTATIME,
    "lazytime": sc.MS_LAZYTIME,
}

# option that clears -> option that sets the same bit
CLEAR_OPTIONS = {
    "rw": "ro", "suid": "nosuid", "dev": "nodev", "exec": "noexec", "async": "sync", "nomand": "mand",
    "atime": "noatime", "diratime": "nodiratime", "loud": "silent", "norelatime": "relatime",
    "noiversion": "iversion", "nostrictatime": "strictatime", "nolazytime": "lazytime",
}


def test_mount_flag_values_match_linux() -> None:
    # <linux/mount.h>
    assert (sc.MS_RDONLY, sc.MS_NOSUID, sc.MS_NODEV, sc.MS_NOEXEC) == (1, 2, 4, 8)
    assert (sc.MS_REMOUNT, sc.MS_BIND, sc.MS_REC) == (32, 4096, 16384)
    assert (sc.MS_PRIVATE, sc.MS_SLAVE, sc.MS_SHARED, sc.MS_UNBINDABLE) == (1 << 18, 1 << 19, 1 << 20, 1 << 17)


@pytest.mark.parametrize(("opt", "bit"), sorted(SET_OPTIONS.items()))
def test_set_option(opt: str, bit: int) -> None:
    spec = rf.parse_options([opt])
    assert spec.flags == bit
    assert spec.data == []
    assert spec.propagation == []
    assert spec.extensions == set()


@pytest.mark.parametrize(("clear", "setter"), sorted(CLEAR_OPTIONS.items()))
def test_clear_option_undoes_its_setter(clear: str, setter: str) -> None:
    bit = SET_OPTIONS[setter]
    assert rf.parse_options([clear]).flags == 0
    assert rf.parse_options([setter, clear]).flags == 0
    assert rf.parse_options([clear, setter]).flags == bit
    # clearing leaves the other bits alone
    assert rf.parse_options(["nosuid" if setter != "nosuid" else "nodev", setter, clear]).flags == (
        sc.MS_NOSUID if setter != "nosuid" else sc.MS_NODEV)


def test_defaults_sets_nothing() -> None:
    assert rf.parse_options(["defaults"]).flags == 0


def test_empty_and_none_options() -> None:
    opts: list[str] | None
    for opts in (None, []):
        spec = rf.parse_options(opts)
        assert (spec.flags, spec.propagation, spec.data, spec.extensions) == (0, [], [], set())


def test_typical_proc_and_dev_mounts() -> None:
    spec = rf.parse_options(["nosuid", "strictatime", "mode=755", "size=65536k"])
    assert spec.flags == sc.MS_NOSUID | sc.MS_STRICTATIME
    assert spec.data == ["mode=755", "size=65536k"]
    spec = rf.parse_options(["nosuid", "noexec", "nodev", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"])
    assert spec.flags == sc.MS_NOSUID | sc.MS_NOEXEC | sc.MS_NODEV
    assert spec.data == ["newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]
    assert ",".join(spec.data) == "newinstance,ptmxmode=0666,mode=0620,gid=5"


def test_bind_ro_readonly_bind() -> None:
    spec = rf.parse_options(["rbind", "ro", "nosuid"])
    assert spec.flags == sc.MS_BIND | sc.MS_REC | sc.MS_RDONLY | sc.MS_NOSUID


@pytest.mark.parametrize(("opt", "value"), [
    ("private", sc.MS_PRIVATE), ("rprivate", sc.MS_PRIVATE | sc.MS_REC),
    ("shared", sc.MS_SHARED), ("rshared", sc.MS_SHARED | sc.MS_REC),
    ("slave", sc.MS_SLAVE), ("rslave", sc.MS_SLAVE | sc.MS_REC),
    ("unbindable", sc.MS_UNBINDABLE), ("runbindable", sc.MS_UNBINDABLE | sc.MS_REC),
])
def test_propagation_options(opt: str, value: int) -> None:
    spec = rf.parse_options(["bind", opt])
    assert spec.flags == sc.MS_BIND  # propagation does not leak into the mount flags
    assert spec.propagation == [value]


def test_propagation_keeps_order() -> None:
    spec = rf.parse_options(["rshared", "rslave", "private"])
    assert spec.propagation == [sc.MS_SHARED | sc.MS_REC, sc.MS_SLAVE | sc.MS_REC, sc.MS_PRIVATE]


@pytest.mark.parametrize("ext", ["tmpcopyup", "idmap", "ridmap"])
def test_extensions(ext: str) -> None:
    spec = rf.parse_options(["mode=1777", ext])
    assert spec.extensions == {ext}
    assert spec.flags == 0
    assert spec.data == ["mode=1777"]
    assert (spec.rec_set, spec.rec_clr) == (0, 0)


# ------------------------------------------------------------------------------ recursive options (mount_setattr)

# <linux/mount.h> MOUNT_ATTR_* values
ATTR = {"RDONLY": 0x1, "NOSUID": 0x2, "NODEV": 0x4, "NOEXEC": 0x8, "_ATIME": 0x70, "RELATIME": 0,
        "NOATIME": 0x10, "STRICTATIME": 0x20, "NODIRATIME": 0x80, "NOSYMFOLLOW": 0x200000}

# runc 1.1.5 specconv recAttrFlags: option -> (attr_set, attr_clr)
REC = {
    "rro": (ATTR["RDONLY"], 0), "rrw": (0, ATTR["RDONLY"]),
    "rnosuid": (ATTR["NOSUID"], 0), "rsuid": (0, ATTR["NOSUID"]),
    "rnodev": (ATTR["NODEV"], 0), "rdev": (0, ATTR["NODEV"]),
    "rnoexec": (ATTR["NOEXEC"], 0), "rexec": (0, ATTR["NOEXEC"]),
    "rnodiratime": (ATTR["NODIRATIME"], 0), "rdiratime": (0, ATTR["NODIRATIME"]),
    # an atime mode is set together with clearing the whole atime field (mount_setattr(2))
    "rrelatime": (0, ATTR["_ATIME"]), "rnorelatime": (0, 0),
    "rnoatime": (ATTR["NOATIME"], ATTR["_ATIME"]), "ratime": (0, ATTR["NOATIME"]),
    "rstrictatime": (ATTR["STRICTATIME"], ATTR["_ATIME"]), "rnostrictatime": (0, ATTR["STRICTATIME"]),
    "rnosymfollow": (ATTR["NOSYMFOLLOW"], 0), "rsymfollow": (0, ATTR["NOSYMFOLLOW"]),
}


def test_mount_attr_values_match_linux() -> None:
    got = {k: getattr(sc, "MOUNT_ATTR_" + k) for k in ATTR}
    assert got == ATTR
    assert sc.AT_RECURSIVE == 0x8000
    assert sc._SYSCALLS["x86_64"]["mount_setattr"] == 442 == sc._SYSCALLS["aarch64"]["mount_setattr"]


@pytest.mark.parametrize(("opt", "attrs"), sorted(REC.items()))
def test_recursive_option(opt: str, attrs: tuple[int, int]) -> None:
    spec = rf.parse_options(["rbind", opt, "size=1m"])
    assert (spec.rec_set, spec.rec_clr) == attrs
    assert spec.flags == sc.MS_BIND | sc.MS_REC  # no mount(2) flag, no fs data, no extension
    assert spec.data == ["size=1m"]
    assert spec.extensions == set()


def test_recursive_options_combine_with_plain_ones() -> None:
    spec = rf.parse_options(["rbind", "ro", "rro", "rnosuid", "nodev"])
    assert spec.flags == sc.MS_BIND | sc.MS_REC | sc.MS_RDONLY | sc.MS_NODEV
    assert (spec.rec_set, spec.rec_clr) == (ATTR["RDONLY"] | ATTR["NOSUID"], 0)
    # runc accumulates set and clear bits separately: a later rrw does not undo rro
    spec = rf.parse_options(["rro", "rrw"])
    assert (spec.rec_set, spec.rec_clr) == (ATTR["RDONLY"], ATTR["RDONLY"])


class _FakeLibc:
    def __init__(self, ret: int) -> None:
        self.ret = ret
        self.calls: list[tuple[object, ...]] = []

    def syscall(self, *args: object) -> int:
        self.calls.append(args)
        return self.ret


def test_set_rec_attr_calls_mount_setattr(monkeypatch: pytest.MonkeyPatch) -> None:
    import ctypes

    fake = _FakeLibc(0)
    monkeypatch.setattr(sc, "libc", lambda: fake)
    monkeypatch.setattr(sc, "_nr", lambda name: {"mount_setattr": 442}[name])
    rf._set_rec_attr("/rootfs/r", rf.parse_options(["rbind", "rro", "rnoatime"]))
    (nr, dfd, path, flags, attr_p, size), = fake.calls
    assert nr == 442 and path == b"/rootfs/r"
    assert (dfd.value, flags.value, size.value) == (-100, 0x8000, 32)  # type: ignore[attr-defined]
    attr = ctypes.cast(attr_p, ctypes.POINTER(sc._MountAttr)).contents
    assert (attr.attr_set, attr.attr_clr, attr.propagation, attr.userns_fd) == (0x11, 0x70, 0, 0)


def test_set_rec_attr_without_mount_setattr_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sc, "libc", lambda: _FakeLibc(-1))
    monkeypatch.setattr(sc.ctypes, "get_errno", lambda: errno.ENOSYS)
    with pytest.raises(SysError) as ei:
        rf._set_rec_attr("/rootfs/r", rf.parse_options(["rro"]))
    assert ei.value.errno == errno.ENOSYS
    msg = str(ei.value)
    assert "need mount_setattr(2), Linux 5.12 or later" in msg and "/rootfs/r" in msg
    assert "Function not implemented" in msg


def test_set_rec_attr_other_errors_pass_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sc, "libc", lambda: _FakeLibc(-1))
    monkeypatch.setattr(sc.ctypes, "get_errno", lambda: errno.EINVAL)
    with pytest.raises(SysError) as ei:
        rf._set_rec_attr("/rootfs/r", rf.parse_options(["ratime"]))
    assert ei.value.errno == errno.EINVAL and "Linux 5.12" not in str(ei.value)


# ------------------------------------------------------------------------------ bind detection


@pytest.mark.parametrize(("m", "expect"), [
    ({"type": "bind", "source": "/a", "destination": "/a"}, True),
    ({"type": "none", "source": "/a", "destination": "/a", "options": ["rbind", "ro"]}, True),
    ({"source": "/a", "destination": "/a", "options": ["bind"]}, True),
    ({"type": "tmpfs", "source": "tmpfs", "destination": "/t", "options": ["nosuid"]}, False),
    ({"type": "proc", "source": "proc", "destination": "/proc"}, False),
])
def test_is_bind(m: dict, expect: bool) -> None:
    assert rf.is_bind(m) is expect


# ------------------------------------------------------------------------------ proc/sysfs on a real directory


@pytest.mark.parametrize("mtype,dest", [("proc", "/proc"), ("sysfs", "/sys")])
def test_proc_and_sys_must_not_be_symlinks(tmp_path: Path, mtype: str, dest: str) -> None:
    from inclavare.errors import ConfigError

    (tmp_path / "evil").mkdir()
    (tmp_path / dest.lstrip("/")).symlink_to("/evil")
    with pytest.raises(ConfigError) as ei:
        rf._check_plain_dir("mounts[0] (x)", mtype, str(tmp_path), dest)
    assert str(ei.value) == (f'mounts[0] (x): filesystem "{mtype}" must be mounted on ordinary directory '
                             f"({dest} in the rootfs is a symlink)")
    # the check is on the path as written: ./proc and //proc/ are the same entry
    with pytest.raises(ConfigError):
        rf._check_plain_dir("w", mtype, str(tmp_path), "/." + dest + "/")


def test_proc_on_a_file_is_refused(tmp_path: Path) -> None:
    from inclavare.errors import ConfigError

    (tmp_path / "proc").write_text("")
    with pytest.raises(ConfigError, match="is not a directory"):
        rf._check_plain_dir("w", "proc", str(tmp_path), "/proc")


def test_proc_on_a_directory_or_nothing_is_fine(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    rf._check_plain_dir("w", "proc", str(tmp_path), "/proc")
    rf._check_plain_dir("w", "sysfs", str(tmp_path), "/sys")  # absent: it will be made


# ------------------------------------------------------------------------------ mountinfo escapes


def test_unescape_mountinfo_fields() -> None:
    assert rf._unescape("/plain/path") == "/plain/path"
    assert rf._unescape("/a\\040b\\011c\\012d\\134e") == "/a b\tc\nd\\e"


def test_unknown_words_go_to_data_in_order() -> None:
    spec = rf.parse_options(["size=1m", "ro", "uid=1000", "gid=1000", "x-foo"])
    assert spec.flags == sc.MS_RDONLY
    assert spec.data == ["size=1m", "uid=1000", "gid=1000", "x-foo"]


def test_mountspec_default_flags() -> None:
    assert rf.MountSpec(flags=sc.MS_BIND).flags == sc.MS_BIND
    a, b = rf.MountSpec(), rf.MountSpec()
    a.data.append("x")
    assert b.data == []


# ------------------------------------------------------------------------------ secure_join


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "usr" / "lib").mkdir(parents=True)
    (r / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    return r


def test_plain_paths(root: Path) -> None:
    assert rf.secure_join(str(root), "/etc/passwd") == str(root / "etc/passwd")
    assert rf.secure_join(str(root), "etc//./passwd") == str(root / "etc/passwd")
    assert rf.secure_join(str(root), "/") == str(root)
    assert rf.secure_join(str(root), "") == str(root)
    # missing components are kept as they are
    assert rf.secure_join(str(root), "/does/not/exist") == str(root / "does/not/exist")


def test_relative_root_is_made_absolute(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(root.parent)
    assert rf.secure_join("root", "/etc") == str(root / "etc")


def test_dotdot_cannot_escape(root: Path) -> None:
    assert rf.secure_join(str(root), "../../../etc/passwd") == str(root / "etc/passwd")
    assert rf.secure_join(str(root), "/usr/../../..") == str(root)
    assert rf.secure_join(str(root), "/usr/lib/../../etc") == str(root / "etc")


def test_absolute_symlink_resolves_inside_root(root: Path) -> None:
    (root / "link").symlink_to("/etc")
    assert rf.secure_join(str(root), "/link/passwd") == str(root / "etc/passwd")
    (root / "escape").symlink_to("/")
    assert rf.secure_join(str(root), "/escape/etc") == str(root / "etc")


def test_relative_symlink_resolves_from_its_directory(root: Path) -> None:
    (root / "usr" / "lib" / "up").symlink_to("../../etc")
    assert rf.secure_join(str(root), "/usr/lib/up/passwd") == str(root / "etc/passwd")
    (root / "usr" / "sib").symlink_to("lib")
    assert rf.secure_join(str(root), "/usr/sib") == str(root / "usr/lib")


def test_symlink_with_dotdots_cannot_escape(root: Path) -> None:
    (root / "usr" / "evil").symlink_to("../../../../../../../tmp")
    assert rf.secure_join(str(root), "/usr/evil/x") == str(root / "tmp/x")
    (root / "etc" / "abs").symlink_to("/../../..")
    assert rf.secure_join(str(root), "/etc/abs") == str(root)


def test_host_symlink_target_not_followed_outside(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "out").symlink_to(str(outside))
    # the absolute host path is re-rooted, not followed on the host
    assert rf.secure_join(str(root), "/out/f") == str(root) + str(outside) + "/f"


def test_chained_symlinks(root: Path) -> None:
    (root / "a").symlink_to("b")
    (root / "b").symlink_to("/c")
    (root / "c").symlink_to("usr/lib")
    assert rf.secure_join(str(root), "/a") == str(root / "usr/lib")


def test_dangling_symlink_is_resolved_lexically(root: Path) -> None:
    (root / "dangle").symlink_to("/nowhere/file")
    assert rf.secure_join(str(root), "/dangle") == str(root / "nowhere/file")


def test_symlink_as_last_component_is_followed(root: Path) -> None:
    (root / "etc" / "mtab").symlink_to("/proc/self/mounts")
    assert rf.secure_join(str(root), "/etc/mtab") == str(root / "proc/self/mounts")


def test_symlink_loop_raises_eloop(root: Path) -> None:
    (root / "loop1").symlink_to("loop2")
    (root / "loop2").symlink_to("/loop1")
    with pytest.raises(SysError) as ei:
        rf.secure_join(str(root), "/loop1/x")
    assert ei.value.errno == errno.ELOOP
    assert "too many symlinks" in str(ei.value)
    (root / "self").symlink_to("self")
    with pytest.raises(SysError) as ei:
        rf.secure_join(str(root), "self")
    assert ei.value.errno == errno.ELOOP


# ------------------------------------------------------------------------------ statfs_flags


def test_statfs_flags_on_tmp_dir(tmp_path: Path) -> None:
    flags = rf.statfs_flags(str(tmp_path))
    st = os.statvfs(tmp_path)
    assert bool(flags & sc.MS_RDONLY) == bool(st.f_flag & os.ST_RDONLY)
    assert bool(flags & sc.MS_NOSUID) == bool(st.f_flag & os.ST_NOSUID)
    assert bool(flags & sc.MS_NODEV) == bool(st.f_flag & os.ST_NODEV)
    assert bool(flags & sc.MS_NOEXEC) == bool(st.f_flag & os.ST_NOEXEC)
    assert bool(flags & sc.MS_NOATIME) == bool(st.f_flag & os.ST_NOATIME)
    assert bool(flags & sc.MS_RELATIME) == bool(st.f_flag & os.ST_RELATIME)
    # only bits that have an MS_* meaning come back
    known = (sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC | sc.MS_SYNCHRONOUS | sc.MS_MANDLOCK
             | sc.MS_NOATIME | sc.MS_NODIRATIME | sc.MS_RELATIME)
    assert flags & ~known == 0
    # tmp is writable by us, so not read-only
    assert not flags & sc.MS_RDONLY


def test_statfs_flags_of_proc() -> None:
    # /proc is mounted nosuid,nodev,noexec everywhere we run
    flags = rf.statfs_flags("/proc")
    st = os.statvfs("/proc")
    for st_bit, ms_bit in ((os.ST_NOSUID, sc.MS_NOSUID), (os.ST_NODEV, sc.MS_NODEV), (os.ST_NOEXEC, sc.MS_NOEXEC)):
        assert bool(flags & ms_bit) == bool(st.f_flag & st_bit)


def test_st_to_ms_table_matches_os_constants() -> None:
    table = rf._ST_TO_MS
    assert table[os.ST_RDONLY] == sc.MS_RDONLY
    assert table[os.ST_NOSUID] == sc.MS_NOSUID
    assert table[os.ST_NODEV] == sc.MS_NODEV
    assert table[os.ST_NOEXEC] == sc.MS_NOEXEC
    assert table[os.ST_SYNCHRONOUS] == sc.MS_SYNCHRONOUS
    assert table[os.ST_MANDLOCK] == sc.MS_MANDLOCK
    assert table[os.ST_NOATIME] == sc.MS_NOATIME
    assert table[os.ST_NODIRATIME] == sc.MS_NODIRATIME
    assert table[os.ST_RELATIME] == sc.MS_RELATIME


def test_statfs_flags_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        rf.statfs_flags(str(tmp_path / "missing"))


# ------------------------------------------------------------------------------ _create_target


def test_create_target_dir(tmp_path: Path) -> None:
    dest = tmp_path / "a" / "b" / "c"
    rf._create_target(str(dest), True)
    assert dest.is_dir()
    rf._create_target(str(dest), True)  # idempotent
    assert dest.is_dir()


def test_create_target_file(tmp_path: Path) -> None:
    dest = tmp_path / "x" / "y" / "resolv.conf"
    rf._create_target(str(dest), False)
    assert stat.S_ISREG(dest.stat().st_mode)
    assert dest.read_bytes() == b""
    assert dest.parent.is_dir()


def test_create_target_keeps_existing_file_content(tmp_path: Path) -> None:
    dest = tmp_path / "hosts"
    dest.write_text("127.0.0.1 localhost\n")
    rf._create_target(str(dest), False)
    assert dest.read_text() == "127.0.0.1 localhost\n"


def test_create_target_leaves_existing_symlink(tmp_path: Path) -> None:
    dest = tmp_path / "link"
    dest.symlink_to(tmp_path / "nowhere")
    rf._create_target(str(dest), False)
    assert dest.is_symlink()
    assert not (tmp_path / "nowhere").exists()


def test_create_target_dir_over_file_fails(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(OSError):
        rf._create_target(str(f / "sub"), True)


# ------------------------------------------------------------------------------ which bind sources the parent opens


def _req(types: list[str], mounts: list[dict], exec_mode: bool = False):  # type: ignore[no-untyped-def]
    from inclavare.runtime.init import SpawnRequest

    return SpawnRequest("c", {"mounts": mounts}, {}, namespaces=[{"type": t} for t in types], exec_mode=exec_mode)


MOUNTS = [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/a", "type": "bind", "source": "/srv/a", "options": ["rbind"]},
    {"destination": "/t", "type": "tmpfs", "source": "tmpfs"},
    {"destination": "/b", "source": "/srv/b", "options": ["bind", "ro"]},
    {"destination": "/c", "type": "bind", "options": ["bind"]},  # no source: left to the child's error
]


def test_mount_sources_only_with_user_and_mount_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    from inclavare.runtime import init

    monkeypatch.setattr(init.fos, "geteuid", lambda: 0)
    assert init._mount_sources(_req(["user", "mount", "pid"], MOUNTS)) == [1, 3]
    assert init._mount_sources(_req(["mount", "pid"], MOUNTS)) == []  # runc: only with a user namespace
    assert init._mount_sources(_req(["user", "pid"], MOUNTS)) == []  # nothing is mounted without a mount ns
    assert init._mount_sources(_req(["user", "mount"], MOUNTS, exec_mode=True)) == []
    assert init._mount_sources(_req(["user", "mount"], MOUNTS[:1])) == []
    monkeypatch.setattr(init.fos, "geteuid", lambda: 1000)  # rootless: the runtime has nothing more to offer
    assert init._mount_sources(_req(["user", "mount"], MOUNTS)) == []
