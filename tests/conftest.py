"""Shared fixtures: the project's own `rune` (from src/, not an installed copy) and busybox bundles."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"


def is_root() -> bool:
    return os.geteuid() == 0


needs_root = pytest.mark.skipif(not is_root(), reason="needs root (namespaces, mounts, cgroups)")
needs_busybox = pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="busybox-static is not installed")


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """A program's main() run in-process sets up the ``inclavare`` logger with a handler on the sys.stderr of
    that moment (pytest's capture of that test). Put the loggers back after each test: a later test's log
    records must not go to a closed capture stream ("--- Logging error ---" in that test's stderr)."""
    loggers = (logging.getLogger(), logging.getLogger("inclavare"))
    saved = [(lg, list(lg.handlers), lg.level, lg.propagate) for lg in loggers]
    yield
    for lg, handlers, level, propagate in saved:
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate


@pytest.fixture(scope="session")
def rune_bin(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A launcher for this checkout's rune, started the way /usr/local/bin/rune is (-I -S)."""
    from inclavare.testing.launcher import write_rune_launcher

    return write_rune_launcher(str(tmp_path_factory.mktemp("bin") / "rune"), str(SRC))


class Rune:
    def __init__(self, binary: str, root: str) -> None:
        self.binary, self.root = binary, root

    def cmd(self, *args: str) -> list[str]:
        return [self.binary, "--root", self.root, *args]

    def run(self, *args: str, check: bool = False, timeout: float = 60, **kw: object) -> subprocess.CompletedProcess:
        """Run rune; output goes through files, not pipes, since a detached container keeps its stdio open."""
        import tempfile

        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            kw.setdefault("stdin", subprocess.DEVNULL)
            rc = subprocess.run(self.cmd(*args), timeout=timeout, stdout=out, stderr=err, **kw).returncode  # type: ignore[call-overload]
            out.seek(0)
            err.seek(0)
            p = subprocess.CompletedProcess(args, rc, out.read().decode(errors="replace"),
                                            err.read().decode(errors="replace"))
        if check and p.returncode != 0:
            raise AssertionError(f"rune {' '.join(args)} -> {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}")
        return p

    def state(self, cid: str) -> dict:
        return json.loads(self.run("state", cid, check=True).stdout)


@pytest.fixture
def rune(rune_bin: str, tmp_path: Path) -> Iterator[Rune]:
    root = tmp_path / "state"
    r = Rune(rune_bin, str(root))
    yield r
    # never leave containers behind, whatever the test did
    if root.exists():
        for cid in os.listdir(root):
            r.run("delete", "--force", cid)
    shutil.rmtree(root, ignore_errors=True)


RUNC = shutil.which("runc") or "/usr/sbin/runc"


@pytest.fixture
def runc(tmp_path: Path) -> Iterator[Rune | None]:
    """runc with its own state root, or None when it is not installed (tests then check rune only)."""
    if not os.access(RUNC, os.X_OK):
        yield None
        return
    r = Rune(RUNC, str(tmp_path / "runc-state"))
    yield r
    root = Path(r.root)
    if root.exists():
        for leftover in os.listdir(root):
            r.run("delete", "--force", leftover)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["rune", "runc"])
def runtime(request: pytest.FixtureRequest, rune: Rune, runc: Rune | None) -> Rune:
    """Each test twice: under rune, and under runc 1.1.5 (skipped when runc is absent) as the reference."""
    if request.param == "rune":
        return rune
    if runc is None:
        pytest.skip(f"{RUNC} is not installed: no runc half to compare with")
    return runc


@pytest.fixture
def cid() -> str:
    return "t-" + uuid.uuid4().hex[:12]


@pytest.fixture
def make_bundle(tmp_path: Path):  # type: ignore[no-untyped-def]
    """make_bundle(args, **edits) -> bundle path; edits is a function(config) or keyword flags."""
    from inclavare.testing.bundle import make_bundle as mk

    counter = [0]

    def factory(args=("true",), *, edit=None, **flags):  # type: ignore[no-untyped-def]
        counter[0] += 1
        path = mk(str(tmp_path / f"bundle{counter[0]}"), tuple(args), **flags)
        if edit is not None:
            cfg_path = Path(path) / "config.json"
            cfg = json.loads(cfg_path.read_text())
            edit(cfg)
            cfg_path.write_text(json.dumps(cfg))
        return path

    return factory


def run_script(rune: Rune, cid: str, make_bundle, script: str, edit=None, **flags):  # type: ignore[no-untyped-def]
    """`rune run` of `sh -c script` in a fresh bundle; returns the CompletedProcess."""
    b = make_bundle(["sh", "-c", script], edit=edit, **flags)
    return rune.run("run", "--bundle", b, cid)


def ok(p: subprocess.CompletedProcess) -> str:
    """The stdout of a run that must have succeeded."""
    assert p.returncode == 0, f"rc={p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return str(p.stdout)


sys.path.insert(0, str(SRC))


@pytest.fixture(params=["ssl", "pyopenssl"])
def tls_library(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """RATS-TLS blocking connections through the ssl module (the verify callback installed by ratls/ssl_hook.py on
    CPython 3.11 with OpenSSL 3), and through pyOpenSSL, the fallback used anywhere else."""
    from inclavare.ratls import ssl_hook

    if request.param == "pyopenssl":
        monkeypatch.setattr(ssl_hook, "AVAILABLE", False)
    elif not ssl_hook.available():
        pytest.skip("the ssl module's OpenSSL cannot be reached here (not CPython 3.11 with OpenSSL 3)")
    return str(request.param)
