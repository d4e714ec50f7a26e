"""What the installer copies onto a node: the ``inclavare`` package and its runtime dependencies into
``INSTALL_DIR/lib`` (one flat directory, like a site-packages), and launchers into the host's bin directory.

A node needs the programs containerd and people call there: ``rune`` (the OCI runtime; also ``rune attest``),
``containerd-shim-rune-v2`` (containerd finds shims on its PATH, which has /usr/local/bin), ``epm`` (the
enclave pool manager), ``sgx-tools`` and ``inclavare-enclave-info``. The services that run as pods (verdictd,
the device plugin) stay in their images.

A launcher is the same as scripts/setup.sh writes: ``#!PYTHON -IS`` (no user site, no .pth: the runtime is
exec'd several times per container) with ``INSTALL_DIR/lib`` first on ``sys.path``. The dependencies carry
compiled modules for CPython 3.11, so the node needs a Python 3.11 (Debian 12's ``/usr/bin/python3.11``).
The dependency closure is read from the installed distributions' metadata (``Requires-Dist``, extras left out),
and each distribution's own file list (``RECORD``) says what to copy.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import os
import re
import shutil
from collections.abc import Iterator

import inclavare
from inclavare.services.nodeinstall import NodeInstallError

DIST = "inclavare-containers"

# program -> (module, function): what scripts/setup.sh installs for a node
PROGRAMS: dict[str, tuple[str, str]] = {
    "rune": ("inclavare.cli.rune", "entry"),
    "containerd-shim-rune-v2": ("inclavare.cli.shim", "entry"),
    "epm": ("inclavare.cli.epm", "main"),
    "sgx-tools": ("inclavare.cli.sgx_tools", "main"),
    "inclavare-enclave-info": ("inclavare.cli.enclave_info", "main"),
}

SHIM_OPTIONS = """\
# Options for containerd-shim-rune-v2 (containerd's runtimes.rune.options.ConfigPath names this file).
# runc's option names, read at every shim start (docs/shim.md "Runtime options"), e.g.:
#   IoUid = 1000
#   IoGid = 1000
#   ShimCgroup = "/rune-shim"
# SystemdCgroup is refused: use the cgroupfs driver on the kubelet (cgroupDriver: cgroupfs).
"""

_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dependency_closure(root: str = DIST) -> list[md.Distribution]:
    """The installed distributions ``root`` needs at run time (itself excluded), by Requires-Dist without
    extras. A requirement that is not installed is skipped when it has an environment marker (it is for
    another platform or Python), else it is an error: the copy would not run."""
    seen: dict[str, md.Distribution] = {}
    todo = [root]
    while todo:
        name = todo.pop()
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            raise NodeInstallError(f"the installed package {root!r} needs {name!r}, which is not installed") from None
        for req in dist.requires or []:
            marker = req.split(";", 1)[1] if ";" in req else ""
            if "extra" in marker:
                continue
            m = _NAME.match(req)
            if not m:
                continue
            dep = _norm(m.group(1))
            if dep in seen or dep == _norm(root):
                continue
            try:
                seen[dep] = md.distribution(dep)
            except md.PackageNotFoundError:
                if marker:
                    continue
                raise NodeInstallError(f"{name} needs {dep!r}, which is not installed") from None
            todo.append(dep)
    return [seen[k] for k in sorted(seen)]


def _dist_files(dist: md.Distribution) -> Iterator[tuple[str, str]]:
    """(source path, path relative to site-packages) for each file of ``dist`` inside its site-packages."""
    base = os.path.realpath(str(dist.locate_file("")))
    for f in dist.files or []:
        src = os.path.realpath(str(dist.locate_file(f)))
        rel = os.path.relpath(src, base)
        if rel.startswith("..") or "__pycache__" in rel.split(os.sep) or not os.path.isfile(src):
            continue  # scripts in bin/, byte code (written again on the node), vanished files
        yield src, rel


def _package_files() -> Iterator[tuple[str, str]]:
    """(source path, path relative to lib) for the ``inclavare`` package this process runs."""
    pkg = os.path.dirname(os.path.abspath(inclavare.__file__))
    top = os.path.dirname(pkg)
    for dirpath, dirnames, filenames in os.walk(pkg):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for f in sorted(filenames):
            if f.endswith((".pyc", ".tmp")):
                continue
            src = os.path.join(dirpath, f)
            yield src, os.path.relpath(src, top)


def copy_lib(lib: str) -> int:
    """Fill ``lib`` (made anew: a previous one is replaced, the upgrade) with the package and its dependencies;
    returns the number of files. Built in ``lib.new`` and renamed into place, so a failed copy leaves the
    old ``lib`` working."""
    new = lib + ".new"
    shutil.rmtree(new, ignore_errors=True)
    n = 0
    try:
        files = list(_package_files())
        for dist in dependency_closure():
            files += list(_dist_files(dist))
        for src, rel in files:
            dst = os.path.join(new, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(src, dst)
            n += 1
        old = lib + ".old"
        shutil.rmtree(old, ignore_errors=True)
        if os.path.exists(lib):
            os.rename(lib, old)
        os.rename(new, lib)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        shutil.rmtree(new, ignore_errors=True)
        raise NodeInstallError(f"copying the programs into {lib}: {e.strerror or e}: {e.filename or ''}") from None
    return n


def launcher(python: str, lib: str, module: str, function: str) -> bytes:
    """A launcher's text: ``python`` and ``lib`` as the host sees them."""
    return (f"#!{python} -IS\n# written by inclavare-node-install\nimport sys\nsys.path[:0] = [{lib!r}]\n"
            f"from {module} import {function} as entry\nsys.exit(entry())\n").encode()


def sha256_file(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except FileNotFoundError:
        return None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
