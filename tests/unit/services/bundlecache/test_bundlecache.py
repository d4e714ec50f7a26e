"""The bundle cache: hits skip the build, real processes build once, kill -9 and corruption lead to a rebuild,
LRU eviction within the size bound, restarts keep entries and counters."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from inclavare.services.bundlecache import L0, L1, BundleCache, BundleCacheError, derive_key


def img(n: int) -> dict[str, object]:
    return {"image_digest": "sha256:" + f"{n:064x}"}


def writer(payload: bytes, calls: list[str] | None = None, tag: str = "") -> Callable[[str], None]:
    """A build that writes ``payload`` (and a subdirectory with a link) and records that it ran."""
    def build(tmp: str) -> None:
        if calls is not None:
            calls.append(tag)
        Path(tmp, "payload").write_bytes(payload)
        Path(tmp, "sub").mkdir()
        Path(tmp, "sub", "exe").write_bytes(b"#!/bin/sh\n")
        os.chmod(Path(tmp, "sub", "exe"), 0o755)
        os.symlink("../payload", Path(tmp, "sub", "link"))
    return build


def wait_for(path: Path, proc: subprocess.Popen[str] | None = None) -> None:
    """Wait (bounded) for a marker file a child process writes."""
    deadline = time.monotonic() + 60
    while not path.exists():
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"child exited {proc.returncode} before {path.name}: {err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {path}")
        time.sleep(0.01)


CHILD = r"""
import os, sys, time
from inclavare.services.bundlecache import BundleCache
root, ctl, name, digest = sys.argv[1:5]
def build(tmp):
    with open(os.path.join(ctl, "builds"), "a") as f:
        f.write(name + "\n")
    open(os.path.join(ctl, "started." + name), "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(ctl, "go")):
        if time.monotonic() > deadline:
            sys.exit("no go")
        time.sleep(0.01)
    with open(os.path.join(tmp, "half"), "w") as f:
        f.write("partial")
    with open(os.path.join(tmp, "payload"), "w") as f:
        f.write("built by " + name)
cache = BundleCache(root, 1 << 20)
open(os.path.join(ctl, "calling." + name), "w").close()
print(cache.get_or_build("L0", {"image_digest": digest}, build))
"""

DIGEST = "sha256:" + "11" * 32


def child(root: Path, ctl: Path, name: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(ctl), name, DIGEST],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """The child's output; a child stuck past the (generous) bound is killed, not left behind."""
    try:
        return proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise


@pytest.fixture
def ctl(tmp_path: Path) -> Path:
    d = tmp_path / "ctl"
    d.mkdir()
    return d


def test_hit_skips_build_and_counts(tmp_path: Path) -> None:
    cache = BundleCache(str(tmp_path / "c"), 1 << 20)
    calls: list[str] = []
    p1 = cache.get_or_build(L0, img(1), writer(b"one", calls))
    p2 = cache.get_or_build(L0, img(1), writer(b"other", calls))
    assert p1 == p2 and calls == [""]
    assert Path(p1, "payload").read_bytes() == b"one"
    assert os.readlink(Path(p1, "sub", "link")) == "../payload"
    assert stat.S_IMODE(os.stat(Path(p1, "sub", "exe")).st_mode) == 0o755
    k0 = cache.key(L0, img(1))
    cache.get_or_build(L1, {"l0": k0, "carrier": "wasm"}, writer(b"l1", calls))
    assert cache.lookup(L1, {"l0": k0, "carrier": "sim"}) is None
    s = cache.stats()
    assert (s.hits, s.misses, s.builds, s.entries) == (1, 3, 2, 2)
    assert s.bytes == 2 * (len(b"#!/bin/sh\n") + len("../payload")) + 3 + 2
    assert s.hit_ratio == pytest.approx(1 / 4)


def test_layout_permissions_and_loose_root_refused(tmp_path: Path) -> None:
    root = tmp_path / "c"
    BundleCache(str(root), 100).close()
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "index.db").stat().st_mode) == 0o600
    os.chmod(root, 0o755)
    with pytest.raises(BundleCacheError, match=r"mode 0755 lets other users in"):
        BundleCache(str(root), 100)
    with pytest.raises(BundleCacheError, match="max_bytes must be a positive integer"):
        BundleCache(str(tmp_path / "d"), 0)


def test_two_processes_build_once(tmp_path: Path, ctl: Path) -> None:
    root = tmp_path / "c"
    a = child(root, ctl, "A")
    wait_for(ctl / "started.A", a)  # A holds the key's lock, mid-build
    b = child(root, ctl, "B")
    wait_for(ctl / "calling.B", b)
    (ctl / "go").touch()
    out_a, err_a = finish(a)
    out_b, err_b = finish(b)
    assert a.returncode == 0 and b.returncode == 0, err_a + err_b
    assert (ctl / "builds").read_text() == "A\n"
    assert out_a == out_b
    assert Path(out_b.strip(), "payload").read_text() == "built by A"
    s = BundleCache(str(root), 1 << 20).stats()
    assert (s.hits, s.misses, s.builds) == (1, 1, 1)


def test_kill_9_mid_build_waiter_rebuilds(tmp_path: Path, ctl: Path) -> None:
    root = tmp_path / "c"
    a = child(root, ctl, "A")
    wait_for(ctl / "started.A", a)
    b = child(root, ctl, "B")  # blocks on A's lock
    wait_for(ctl / "calling.B", b)
    assert len(os.listdir(root / "tmp")) == 1  # A's half-built tree
    os.kill(a.pid, signal.SIGKILL)
    finish(a)
    wait_for(ctl / "started.B", b)  # the kernel dropped A's lock: B builds, no stale lock
    (ctl / "go").touch()
    out_b, err_b = finish(b)
    assert b.returncode == 0, err_b
    assert (ctl / "builds").read_text() == "A\nB\n"
    assert Path(out_b.strip(), "payload").read_text() == "built by B"
    assert os.listdir(root / "tmp") == []
    s = BundleCache(str(root), 1 << 20).stats()
    assert (s.builds, s.entries) == (1, 1)


def test_kill_9_mid_build_next_caller_rebuilds(tmp_path: Path, ctl: Path) -> None:
    root = tmp_path / "c"
    a = child(root, ctl, "A")
    wait_for(ctl / "started.A", a)
    os.kill(a.pid, signal.SIGKILL)
    finish(a)
    cache = BundleCache(str(root), 1 << 20)
    assert cache.lookup(L0, {"image_digest": DIGEST}) is None
    calls: list[str] = []
    path = cache.get_or_build(L0, {"image_digest": DIGEST}, writer(b"fresh", calls))
    assert calls == [""] and Path(path, "payload").read_bytes() == b"fresh"
    assert not Path(path, "half").exists()
    assert os.listdir(root / "tmp") == []


def _flip(p: Path) -> None:
    data = bytearray((p / "payload").read_bytes())
    data[1] ^= 0x01
    (p / "payload").write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [
    _flip,
    lambda p: (p / "payload").write_bytes(b"on"),  # truncated
    lambda p: (p / "payload").unlink(),
    lambda p: (p / "sub" / "extra").write_bytes(b""),
    lambda p: os.chmod(p / "sub" / "exe", 0o644),
    lambda p: (os.unlink(p / "sub" / "link"), os.symlink("/etc/passwd", p / "sub" / "link")),
    lambda p: __import__("shutil").rmtree(p),
], ids=["flip", "truncate", "remove", "extra", "chmod", "relink", "rmtree"])
def test_corruption_detected_and_rebuilt(tmp_path: Path, damage: Callable[[Path], object]) -> None:
    cache = BundleCache(str(tmp_path / "c"), 1 << 20)
    calls: list[str] = []
    path = Path(cache.get_or_build(L0, img(1), writer(b"one", calls, "first")))
    damage(path)
    again = cache.get_or_build(L0, img(1), writer(b"one", calls, "second"))
    assert calls == ["first", "second"]
    assert Path(again, "payload").read_bytes() == b"one"
    assert cache.stats().corrupt == 1
    assert cache.get_or_build(L0, img(1), writer(b"x", calls, "third")) == again and len(calls) == 2


def test_uncommitted_tree_never_used(tmp_path: Path) -> None:
    # A kill between the rename and the index row leaves entries/<key> with no row: not trusted.
    cache = BundleCache(str(tmp_path / "c"), 1 << 20)
    stray = tmp_path / "c" / "entries" / cache.key(L0, img(1))
    stray.mkdir()
    (stray / "payload").write_bytes(b"unknown")
    calls: list[str] = []
    path = cache.get_or_build(L0, img(1), writer(b"real", calls))
    assert calls == [""] and Path(path, "payload").read_bytes() == b"real"


def test_lru_eviction_order(tmp_path: Path) -> None:
    cache = BundleCache(str(tmp_path / "c"), 250)
    a, b, c, d = (cache.key(L0, img(i)) for i in range(4))
    for i in range(2):
        cache.get_or_build(L0, img(i), lambda t: Path(t, "f").write_bytes(b"x" * 100))
    cache.get_or_build(L0, img(0), lambda t: None)  # a hit: a is now newer than b
    cache.get_or_build(L0, img(2), lambda t: Path(t, "f").write_bytes(b"x" * 100))
    entries = sorted(os.listdir(tmp_path / "c" / "entries"))
    assert entries == sorted([a, c])  # b, least recently used, went
    cache.get_or_build(L0, img(3), lambda t: Path(t, "f").write_bytes(b"x" * 100))
    assert sorted(os.listdir(tmp_path / "c" / "entries")) == sorted([c, d])
    s = cache.stats()
    assert (s.evictions, s.bytes, s.entries) == (2, 200, 2)
    assert not (tmp_path / "c" / "locks" / f"{b}.lock").exists()
    # An evicted key builds again (its lock file was removed while held).
    calls: list[str] = []
    cache.get_or_build(L0, img(1), writer(b"y" * 10, calls))
    assert calls == [""]


def test_size_bound_and_oversize_refused(tmp_path: Path) -> None:
    root = tmp_path / "c"
    cache = BundleCache(str(root), 1000)
    for i in range(20):
        cache.get_or_build(L0, img(i), lambda t, i=i: Path(t, "f").write_bytes(b"z" * (100 + 13 * i)))
        s = cache.stats()
        assert s.bytes <= 1000
        assert s.bytes == sum(f.stat().st_size for f in (root / "entries").rglob("f"))
    with pytest.raises(BundleCacheError, match="more than the cache's bound of 1000"):
        cache.get_or_build(L0, img(99), lambda t: Path(t, "f").write_bytes(b"z" * 1001))
    assert cache.key(L0, img(99)) not in os.listdir(root / "entries")
    assert os.listdir(root / "tmp") == []


def test_use_keeps_entry_from_eviction(tmp_path: Path) -> None:
    cache = BundleCache(str(tmp_path / "c"), 1000)
    other = cache.get_or_build(L0, img(1), writer(b"b"))
    with cache.use(L0, img(0), writer(b"a")) as held:
        assert cache.evict(0) == [cache.key(L0, img(1))]
        assert Path(held, "payload").read_bytes() == b"a"
        assert not Path(other).exists()
    assert cache.evict(0) == [cache.key(L0, img(0))]
    assert cache.stats().bytes == 0


def test_miss_racing_a_commit_does_not_wait_for_the_entrys_users(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A caller whose shared-lock check ran just before another builder committed (simulated: its first check
    says "not intact") must then find the hit, not queue for the exclusive lock behind the entry's users, who
    hold their shared locks for a container's life (found as a hang of four pods starting at once)."""
    import threading

    cache = BundleCache(str(tmp_path / "c"), 1 << 20)
    real = BundleCache._intact
    first = [True]

    def stale_once(self: BundleCache, key: str) -> bool:
        if first[0] and threading.current_thread().name == "late":
            first[0] = False
            return False
        return real(self, key)

    monkeypatch.setattr(BundleCache, "_intact", stale_once)
    got: list[str] = []
    with cache.use(L0, img(0), writer(b"a")) as held:  # a user, holding its shared lock throughout
        late = threading.Thread(target=lambda: got.append(cache.get_or_build(L0, img(0), writer(b"never"))),
                                name="late", daemon=True)
        late.start()
        late.join(60)
        assert not late.is_alive(), "the late caller waited for the entry's user"
        assert got == [held] and not first[0]
    assert cache.stats().builds == 1


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "c"
    cache = BundleCache(str(root), 1000)

    def bad(tmp: str) -> None:
        Path(tmp, "part").write_bytes(b"x")
        raise ValueError("carrier failed")

    with pytest.raises(ValueError, match="carrier failed"):
        cache.get_or_build(L0, img(0), bad)

    def fifo(tmp: str) -> None:
        os.mkfifo(Path(tmp, "pipe"))

    with pytest.raises(BundleCacheError, match="pipe is neither a directory, a regular file nor a symbolic link"):
        cache.get_or_build(L0, img(0), fifo)
    assert os.listdir(root / "tmp") == [] and os.listdir(root / "entries") == []
    assert cache.stats().entries == 0


def test_survives_restart_and_clean(tmp_path: Path) -> None:
    root = tmp_path / "c"
    with BundleCache(str(root), 1 << 20) as cache:
        path = cache.get_or_build(L0, img(0), writer(b"kept"))
    # Left-overs of a dead process: a temp tree and an uncommitted entry.
    (root / "tmp" / (derive_key(L0, img(5)) + ".dead")).mkdir()
    (root / "entries" / derive_key(L0, img(6))).mkdir()
    with BundleCache(str(root), 1 << 20) as cache:
        assert cache.clean() == 2
        calls: list[str] = []
        assert cache.get_or_build(L0, img(0), writer(b"new", calls)) == path and calls == []
        s = cache.stats()
        assert (s.hits, s.misses, s.builds, s.entries) == (1, 1, 1, 1)
        assert sorted(os.listdir(root / "entries")) == [derive_key(L0, img(0))]


def test_user_does_not_block_another_process_hit(tmp_path: Path, ctl: Path) -> None:
    root = tmp_path / "c"
    cache = BundleCache(str(root), 1 << 20)
    with cache.use(L0, {"image_digest": DIGEST}, writer(b"mine")) as held:
        b = child(root, ctl, "B")  # a hit under a shared lock; its build would wait for "go", never given
        out_b, err_b = finish(b)
        assert b.returncode == 0, err_b
        assert out_b.strip() == held
        assert not (ctl / "builds").exists()
    s = cache.stats()
    assert (s.hits, s.misses, s.builds) == (1, 1, 1)


def test_read_only_and_unreadable_trees_are_removed(tmp_path: Path) -> None:
    root = tmp_path / "c"
    cache = BundleCache(str(root), 1 << 20)

    def read_only(tmp: str) -> None:
        Path(tmp, "ro").mkdir()
        Path(tmp, "ro", "f").write_bytes(b"x")
        os.chmod(Path(tmp, "ro"), 0o500)

    def closed(tmp: str) -> None:
        Path(tmp, "shut").mkdir()
        Path(tmp, "shut", "f").write_bytes(b"y")
        os.chmod(Path(tmp, "shut"), 0)

    cache.get_or_build(L0, img(0), read_only)
    try:
        cache.get_or_build(L0, img(1), closed)  # root reads it anyway; others cannot
    except BundleCacheError as e:
        assert os.geteuid() != 0 and "cannot be read back" in str(e)
    cache.evict(0)
    assert os.listdir(root / "entries") == [] and os.listdir(root / "tmp") == []
    assert cache.stats().bytes == 0


def test_open_up_gives_every_directory_0700(tmp_path: Path) -> None:
    # As root rmtree needs no help; this checks the helper that removal falls back on for other users.
    from inclavare.services.bundlecache.cache import _open_up

    (tmp_path / "t" / "a" / "b").mkdir(parents=True)
    os.symlink("/", tmp_path / "t" / "a" / "up")
    for d, mode in (("t/a/b", 0), ("t/a", 0o500), ("t", 0o555)):
        os.chmod(tmp_path / d, mode)
    _open_up(str(tmp_path / "t"))
    for d in ("t", "t/a", "t/a/b"):
        assert stat.S_IMODE(os.lstat(tmp_path / d).st_mode) == 0o700
    assert stat.S_IMODE(os.stat("/").st_mode) != 0o700  # the link was not followed
