"""enclave.privatefs: a tmpfs mounted nowhere (needs root), and layer tars unpacked into it without ever following
a symlink, with OCI whiteouts."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator

import pytest

from inclavare.enclave.privatefs import PrivateFs, PrivateFsError, extract_tar

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="fsopen/fsmount need CAP_SYS_ADMIN (run as root)")


def tar_of(*entries: tuple[str, str, bytes | str]) -> io.BytesIO:
    """entries: (kind, name, data-or-linkname); kind in file/dir/sym/link/fifo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for kind, name, data in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                assert isinstance(data, bytes)
                info.size, info.mode = len(data), 0o4755 if name.endswith(".suid") else 0o644
                t.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "link": tarfile.LNKTYPE,
                         "fifo": tarfile.FIFOTYPE}[kind]
            info.mode = 0o755
            if kind in ("sym", "link"):
                assert isinstance(data, str)
                info.linkname = data
            t.addfile(info)
    buf.seek(0)
    return buf


@pytest.fixture
def tree() -> Iterator[PrivateFs]:
    t = PrivateFs.create(size=1 << 20)
    try:
        yield t
    finally:
        t.close()


def test_the_tree_is_mounted_nowhere(tree: PrivateFs) -> None:
    before = open("/proc/self/mountinfo").read()
    extract_tar(tree, tar_of(("file", "secret.txt", b"plaintext")), where="layer 0")
    assert tree.read("secret.txt") == b"plaintext"
    assert open(f"{tree.path}/secret.txt", "rb").read() == b"plaintext"  # through the magic link
    assert open("/proc/self/mountinfo").read() == before  # no mount appeared anywhere
    assert oct(os.stat(tree.path).st_mode & 0o777) == "0o700"


def test_layers_files_links_and_whiteouts(tree: PrivateFs) -> None:
    extract_tar(tree, tar_of(("dir", "app", b""), ("file", "app/config", b"v1"), ("file", "app/old", b"x"),
                             ("sym", "app/cfg", "config"), ("link", "app/hard", "app/config"),
                             ("file", "x.suid", b"#!"), ("dir", "cache", b""), ("file", "cache/a", b"a")),
                where="layer 0")
    assert tree.read("app/hard") == b"v1" and os.readlink(f"{tree.path}/app/cfg") == "config"
    assert os.stat(f"{tree.path}/x.suid").st_mode & 0o7777 == 0o755  # setuid dropped
    extract_tar(tree, tar_of(("file", "app/config", b"v2"), ("file", "app/.wh.old", b""),
                             ("file", "cache/.wh..wh..opq", b""), ("file", "cache/b", b"b")), where="layer 1")
    assert tree.read("app/config") == b"v2"
    assert not os.path.exists(f"{tree.path}/app/old")
    assert sorted(os.listdir(f"{tree.path}/cache")) == ["b"]


@pytest.mark.parametrize("entries, match", [
    ((("sym", "evil", "/etc"), ("file", "evil/passwd", b"x")), "symlinks are never followed"),
    ((("file", "../escape", b"x"),), "not a path inside the layer"),
    ((("file", "a/../../escape", b"x"),), "not a path inside the layer"),
    ((("fifo", "pipe", b""),), "devices, FIFOs and sockets"),
    ((("link", "l", "missing"),), "No such file"),
])
def test_hostile_entries_are_refused(tree: PrivateFs, entries: tuple[tuple[str, str, bytes | str], ...],
                                     match: str) -> None:
    with pytest.raises(PrivateFsError, match=match):
        extract_tar(tree, tar_of(*entries), where="layer 3")
    assert not os.path.exists("/etc/passwd/x") and not os.path.exists("/escape")


def test_limits_and_garbage(tree: PrivateFs) -> None:
    with pytest.raises(PrivateFsError, match="layer 0: more than 10 bytes"):
        extract_tar(tree, tar_of(("file", "big", b"x" * 11)), where="layer 0", max_bytes=10)
    with pytest.raises(PrivateFsError, match="layer 1: not a tar stream"):
        extract_tar(tree, io.BytesIO(b"\x00garbage" * 100), where="layer 1")
    small = PrivateFs.create(size=8192)
    try:
        with pytest.raises(PrivateFsError, match="No space left"):
            extract_tar(small, tar_of(("file", "f", b"y" * 65536)), where="layer 2")
    finally:
        small.close()
