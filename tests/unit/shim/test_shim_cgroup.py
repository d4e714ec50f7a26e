"""Options.ShimCgroup without root: which directories a path names on v1, hybrid and v2 layouts (containerd's
runc shim's rules, on a fake cgroupfs in a temporary directory), the join's writes and errors, and the pipe on
which a new shim tells its parent whether it joined. The real thing: tests/integration/test_shim_cri.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inclavare.errors import CgroupError
from inclavare.linux.cgroups import Hierarchy, Layout
from inclavare.shim import shimcgroup


def _v1(root: Path, hybrid: bool = False) -> Layout:
    hier = {"memory": Hierarchy(str(root / "memory"), "/", ("memory",)),
            "cpu": Hierarchy(str(root / "cpu,cpuacct"), "/", ("cpu", "cpuacct")),
            "cpuacct": Hierarchy(str(root / "cpu,cpuacct"), "/", ("cpu", "cpuacct")),
            "name=systemd": Hierarchy(str(root / "systemd"), "/", ("name=systemd",))}
    unified = Hierarchy(str(root / "unified")) if hybrid else None
    return Layout("hybrid" if hybrid else "v1", hier, unified, {})


def _cgroup(d: Path) -> Path:
    d.mkdir(parents=True)
    (d / "cgroup.procs").write_text("")
    return d


@pytest.mark.parametrize(("path", "words"), [
    ("rune-shim", "want an absolute, clean cgroup path"),
    ("/a/../b", "want an absolute, clean cgroup path"),
    ("/a/", "want an absolute, clean cgroup path"),
    ("//a", "want an absolute, clean cgroup path"),
    ("/sys/fs/cgroup/memory/x", "not a cgroupfs directory"),
])
def test_bad_paths_are_refused_before_anything_is_looked_at(path: str, words: str) -> None:
    with pytest.raises(CgroupError, match=words):
        shimcgroup.check_path(path)
    with pytest.raises(CgroupError, match=words):
        shimcgroup.directories(path, Layout("v2", {}, Hierarchy("/nonexistent"), {}))


def test_v1_joins_every_hierarchy_that_has_the_cgroup_once(tmp_path: Path) -> None:
    """Co-mounted controllers are one directory; a hierarchy without the cgroup is skipped (containerd's
    cgroups.Load); on a hybrid host the unified hierarchy is left alone."""
    for hybrid in (False, True):
        root = tmp_path / str(hybrid)
        mem = _cgroup(root / "memory" / "shims" / "rune")
        cpu = _cgroup(root / "cpu,cpuacct" / "shims" / "rune")
        (root / "systemd").mkdir()  # no such cgroup there
        _cgroup(root / "unified" / "shims" / "rune")
        layout = _v1(root, hybrid)
        assert shimcgroup.directories("/shims/rune", layout) == [str(cpu), str(mem)]
        shimcgroup.join("/shims/rune", 4242, layout)
        assert (mem / "cgroup.procs").read_text() == "4242"
        assert (cpu / "cgroup.procs").read_text() == "4242"
        assert (root / "unified" / "shims" / "rune" / "cgroup.procs").read_text() == ""


def test_v1_cgroup_in_no_hierarchy_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CgroupError, match=r"^failed to load cgroup /nope: it exists in no cgroup v1 hierarchy "
                                          r"\(looked under .*/cpu,cpuacct, .*/memory, .*/systemd\)$"):
        shimcgroup.directories("/nope", _v1(tmp_path))


def test_v2_is_the_path_under_the_unified_mount(tmp_path: Path) -> None:
    layout = Layout("v2", {}, Hierarchy(str(tmp_path)), {})
    assert shimcgroup.directories("/rune-shim", layout) == [str(tmp_path / "rune-shim")]
    assert shimcgroup.directories("/", layout) == [str(tmp_path)]
    with pytest.raises(CgroupError, match=r"^failed to join cgroup /rune-shim: writing pid 7 to "
                                          r".*/rune-shim/cgroup.procs: No such file or directory$"):
        shimcgroup.join("/rune-shim", 7, layout)  # containerd creates nothing: the cgroup must exist
    _cgroup(tmp_path / "rune-shim")
    shimcgroup.join("/rune-shim", 7, layout)
    assert (tmp_path / "rune-shim" / "cgroup.procs").read_text() == "7"


def test_the_new_shim_reports_on_its_pipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = Layout("v2", {}, Hierarchy(str(tmp_path)), {})
    real_join = shimcgroup.join
    monkeypatch.setattr(shimcgroup, "join", lambda path, pid: real_join(path, pid, layout))
    _cgroup(tmp_path / "ok")
    r, w = os.pipe()
    assert shimcgroup.join_and_report("/ok", w) is True
    assert shimcgroup.await_report(r) == ""
    assert (tmp_path / "ok" / "cgroup.procs").read_text() == str(os.getpid())
    r, w = os.pipe()
    assert shimcgroup.join_and_report("/missing", w) is False
    assert shimcgroup.await_report(r).startswith("failed to join cgroup /missing: writing pid")
    r, w = os.pipe()
    os.close(w)  # the shim died before a word
    assert shimcgroup.await_report(r) == "the shim exited before joining its cgroup"
    r, w = os.pipe()
    assert shimcgroup.await_report(r, timeout=0.05) == "the shim did not join its cgroup within 0.05s"
    os.close(w)
