"""testing/bundle.py: busybox rootfs and bundle creation (no root needed)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from inclavare.errors import InclavareError
from inclavare.formats.oci_spec import default_spec
from inclavare.runtime.launch import load_config
from inclavare.testing import bundle as tb

BUSYBOX = "/bin/busybox"
needs_busybox = pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="busybox-static is not installed")
SRC = str(Path(__file__).resolve().parents[3] / "src")


def applets() -> list[str]:
    out = subprocess.run([BUSYBOX, "--list-full"], check=True, capture_output=True, text=True).stdout
    return [a for a in out.split() if a != "bin/busybox"]


@needs_busybox
def test_make_rootfs_contents(tmp_path: Path) -> None:
    root = Path(tb.make_rootfs(str(tmp_path / "r")))
    assert root == tmp_path / "r"
    bb = root / "bin/busybox"
    assert bb.read_bytes() == Path(BUSYBOX).read_bytes()
    assert os.access(bb, os.X_OK)
    names = applets()
    assert len(names) > 100
    for name in names:
        link = root / name
        assert link.is_symlink(), name
        assert os.readlink(link) == "/bin/busybox"
    for d in ("proc", "sys", "dev", "tmp", "root", "run", "var/tmp", "home", "etc"):
        assert (root / d).is_dir(), d
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
    assert stat.S_IMODE((root / "var/tmp").stat().st_mode) == 0o1777
    passwd = (root / "etc/passwd").read_text().splitlines()
    assert [line.split(":")[0] for line in passwd] == ["root", "nobody"]
    assert passwd[0].split(":")[2:4] == ["0", "0"]
    assert "root:x:0:" in (root / "etc/group").read_text()
    assert (root / "etc/hostname").read_text() == "runc\n"
    assert "localhost" in (root / "etc/hosts").read_text()
    assert (root / "etc/resolv.conf").exists()


@needs_busybox
def test_rootfs_copies_share_busybox(tmp_path: Path) -> None:
    a = Path(tb.make_rootfs(str(tmp_path / "a")))
    b = Path(tb.make_rootfs(str(tmp_path / "b")))
    sa, sb = (a / "bin/busybox").stat(), (b / "bin/busybox").stat()
    if sa.st_dev == sb.st_dev and os.stat(tb._template(BUSYBOX)).st_dev == sa.st_dev:
        assert sa.st_ino == sb.st_ino  # hard links to the per-process template
    assert sorted(p.name for p in (a / "bin").iterdir()) == sorted(p.name for p in (b / "bin").iterdir())


@needs_busybox
def test_make_rootfs_refuses_non_empty_dir(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "x").write_text("")
    with pytest.raises(InclavareError, match="not an empty directory"):
        tb.make_rootfs(str(tmp_path / "r"))


def test_missing_or_dynamic_busybox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUSYBOX", str(tmp_path / "nope"))
    with pytest.raises(InclavareError, match="install busybox-static"):
        tb.make_rootfs(str(tmp_path / "r"))
    monkeypatch.setenv("BUSYBOX", sys.executable)  # a dynamically linked ELF
    with pytest.raises(InclavareError, match="statically linked"):
        tb.make_rootfs(str(tmp_path / "r2"))


@needs_busybox
def test_static_elf_detection() -> None:
    assert tb._is_static_elf(BUSYBOX)
    assert not tb._is_static_elf(os.path.realpath(sys.executable))


@needs_busybox
def test_make_bundle_defaults(tmp_path: Path) -> None:
    path = tb.make_bundle(str(tmp_path / "b"))
    assert path == str(tmp_path / "b")
    spec = load_config(path)
    assert spec == json.loads((tmp_path / "b/config.json").read_text())
    assert spec["process"]["args"] == ["sh", "-c", "echo hello"]
    assert spec["process"]["terminal"] is False
    assert spec["root"] == {"path": "rootfs", "readonly": True}
    assert "network" in [n["type"] for n in spec["linux"]["namespaces"]]
    # Everything else is the `runc spec` default.
    expected = default_spec()
    for key in ("mounts", "hostname", "ociVersion"):
        assert spec[key] == expected[key]
    assert (tmp_path / "b/rootfs/bin/sh").is_symlink()


@needs_busybox
def test_make_bundle_options(tmp_path: Path) -> None:
    path = tb.make_bundle(str(tmp_path / "b"), ["true"], terminal=True, readonly=False, hostnet=True)
    spec = load_config(path)
    assert spec["process"]["args"] == ["true"]
    assert spec["process"]["terminal"] is True
    assert spec["root"]["readonly"] is False
    assert "network" not in [n["type"] for n in spec["linux"]["namespaces"]]
    path = tb.make_bundle(str(tmp_path / "c"), ("sleep", "1"), writable_rootfs=True)
    assert load_config(path)["root"]["readonly"] is False
    path = tb.make_bundle(str(tmp_path / "d"), ("sleep", "1"), readonly=False, writable_rootfs=False)
    assert load_config(path)["root"]["readonly"] is True


@needs_busybox
def test_make_bundle_existing_dir(tmp_path: Path) -> None:
    target = tmp_path / "b"
    target.mkdir()
    tb.make_bundle(str(target))  # an empty directory is fine
    with pytest.raises(InclavareError, match="not empty"):
        tb.make_bundle(str(target))
    (target / "rootfs/extra").write_text("x")
    tb.make_bundle(str(target), ["true"], force=True)
    assert not (target / "rootfs/extra").exists()
    assert load_config(str(target))["process"]["args"] == ["true"]


def test_make_bundle_relative_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not os.path.exists(BUSYBOX):
        pytest.skip("busybox-static is not installed")
    monkeypatch.chdir(tmp_path)
    assert tb.make_bundle("rel") == str(tmp_path / "rel")


@needs_busybox
def test_cli(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": SRC}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "inclavare.testing.bundle",
            "-t",
            "-w",
            "-n",
            str(tmp_path / "b"),
            "sh",
            "-c",
            "echo hi",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(tmp_path / "b")
    assert "RuntimeWarning" not in run.stderr
    spec = load_config(str(tmp_path / "b"))
    assert spec["process"]["args"] == ["sh", "-c", "echo hi"]
    assert spec["process"]["terminal"] is True
    assert spec["root"]["readonly"] is False
    assert "network" not in [n["type"] for n in spec["linux"]["namespaces"]]

    again = subprocess.run(
        [sys.executable, "-m", "inclavare.testing.bundle", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert again.returncode == 1
    assert again.stderr.startswith("mk-bundle: ") and "not empty" in again.stderr
    forced = subprocess.run(
        [sys.executable, "-m", "inclavare.testing.bundle", "-f", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert forced.returncode == 0, forced.stderr
    assert load_config(str(tmp_path / "b"))["process"]["args"] == ["sh", "-c", "echo hello"]
