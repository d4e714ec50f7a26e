"""Build minimal OCI runtime bundles: a busybox-static rootfs plus a config.json.

The rootfs holds /bin/busybox, a symlink for every applet, a few /etc files and the usual empty
mount points. One template rootfs is built per process (under the system temp dir, or
$INCLAVARE_CACHE_DIR) and copied for each bundle, with busybox hard-linked when the template and
the bundle share a filesystem, so making many bundles is cheap.

CLI (same flags as the rig's mk-bundle.sh):
    python -m inclavare.testing.bundle [-t] [-w] [-n] [-f] DIR [CMD [ARG...]]
"""

from __future__ import annotations

import argparse
import atexit
import errno
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from inclavare.errors import InclavareError
from inclavare.formats.oci_spec import default_spec
from inclavare.testing._tool import run_tool

__all__ = ["bundle_config", "make_bundle", "make_rootfs"]

DEFAULT_BUSYBOX = "/bin/busybox"
DEFAULT_ARGS = ("sh", "-c", "echo hello")

_DIRS = (
    "bin",
    "sbin",
    "usr/bin",
    "usr/sbin",
    "etc",
    "proc",
    "sys",
    "dev",
    "tmp",
    "root",
    "run",
    "var/tmp",
    "home",
)
_STICKY_DIRS = ("tmp", "var/tmp")
_FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/hostname": "runc\n",
    "etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost\n",
    "etc/resolv.conf": "",
}

# (pid, busybox path) -> template directory; a forked child builds its own.
_templates: dict[tuple[int, str], str] = {}


def _busybox_path() -> str:
    return os.environ.get("BUSYBOX", DEFAULT_BUSYBOX)


def _is_static_elf(path: str) -> bool:
    """True if `path` is an ELF executable without a PT_INTERP program header (statically linked)."""
    with open(path, "rb") as f:
        ident = f.read(16)
        if len(ident) < 16 or ident[:4] != b"\x7fELF":
            return False
        is64, endian = ident[4] == 2, "<" if ident[5] == 1 else ">"
        if is64:
            f.seek(0x20)
            (phoff,) = struct.unpack(endian + "Q", f.read(8))
            f.seek(0x36)
        else:
            f.seek(0x1C)
            (phoff,) = struct.unpack(endian + "I", f.read(4))
            f.seek(0x2A)
        phentsize, phnum = struct.unpack(endian + "HH", f.read(4))
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            (p_type,) = struct.unpack(endian + "I", f.read(4))
            if p_type == 3:  # PT_INTERP
                return False
    return True


def _check_busybox(busybox: str) -> None:
    if not os.path.isfile(busybox) or not os.access(busybox, os.X_OK):
        raise InclavareError(f"{busybox} is missing: install busybox-static (apt-get install busybox-static)")
    if not _is_static_elf(busybox):
        raise InclavareError(f"{busybox} is not a statically linked ELF binary: install busybox-static")


def _applets(busybox: str) -> list[str]:
    out = subprocess.run([busybox, "--list-full"], check=True, capture_output=True, text=True).stdout
    return [line.strip().lstrip("/") for line in out.splitlines() if line.strip()]


def _build(root: str, busybox: str) -> None:
    """Create a rootfs at `root` (which must be empty or absent) from scratch."""
    os.makedirs(root, exist_ok=True)
    for d in _DIRS:
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for d in _STICKY_DIRS:
        os.chmod(os.path.join(root, d), 0o1777)
    target = os.path.join(root, "bin/busybox")
    shutil.copyfile(busybox, target)
    os.chmod(target, 0o755)
    for applet in _applets(busybox):
        if applet == "bin/busybox":
            continue
        link = os.path.join(root, applet)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink("/bin/busybox", link)
    for name, content in _FILES.items():
        with open(os.path.join(root, name), "w") as f:
            f.write(content)


def _template(busybox: str) -> str:
    key = (os.getpid(), os.path.realpath(busybox))
    path = _templates.get(key)
    if path is not None and os.path.isdir(path):
        return path
    cache = os.environ.get("INCLAVARE_CACHE_DIR") or tempfile.gettempdir()
    os.makedirs(cache, exist_ok=True)
    path = tempfile.mkdtemp(prefix="inclavare-rootfs-", dir=cache)
    os.chmod(path, 0o755)
    try:
        _build(os.path.join(path, "rootfs"), busybox)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    _templates[key] = path
    atexit.register(_remove_template, key[0], path)
    return path


def _remove_template(pid: int, path: str) -> None:
    if os.getpid() == pid:
        shutil.rmtree(path, ignore_errors=True)


def _copy_tree(src: str, dst: str) -> None:
    """Copy the template rootfs: directories with their modes, symlinks as symlinks, busybox hard-linked."""
    os.makedirs(dst, exist_ok=True)
    os.chmod(dst, stat.S_IMODE(os.stat(src).st_mode))
    with os.scandir(src) as entries:
        for entry in entries:
            target = os.path.join(dst, entry.name)
            if entry.is_symlink():
                os.symlink(os.readlink(entry.path), target)
            elif entry.is_dir():
                _copy_tree(entry.path, target)
            elif entry.name == "busybox":
                try:
                    os.link(entry.path, target)
                except OSError as e:
                    if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                        raise
                    shutil.copy2(entry.path, target)
            else:
                shutil.copy2(entry.path, target)


def make_rootfs(path: str) -> str:
    """Create a busybox-static rootfs at `path` (absent or an empty directory); return its absolute path."""
    path = os.path.abspath(path)
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise InclavareError(f"{path}: exists and is not an empty directory")
    busybox = _busybox_path()
    _check_busybox(busybox)
    _copy_tree(os.path.join(_template(busybox), "rootfs"), path)
    return path


def bundle_config(
    args: Sequence[str] = DEFAULT_ARGS,
    *,
    terminal: bool = False,
    readonly: bool = True,
    hostnet: bool = False,
) -> dict[str, Any]:
    """`runc spec` defaults with the process, root and network edits mk-bundle.sh makes."""
    spec = default_spec()
    spec["process"]["terminal"] = terminal
    spec["process"]["args"] = list(args)
    spec["root"] = {"path": "rootfs", "readonly": readonly}
    if hostnet:
        spec["linux"]["namespaces"] = [ns for ns in spec["linux"]["namespaces"] if ns["type"] != "network"]
    return spec


def make_bundle(
    path: str,
    args: Sequence[str] = DEFAULT_ARGS,
    *,
    terminal: bool = False,
    readonly: bool = True,
    hostnet: bool = False,
    writable_rootfs: bool | None = None,
    force: bool = False,
) -> str:
    """Create an OCI bundle at `path` and return its absolute path.

    `path` must be absent or empty unless `force`, which removes it first. `writable_rootfs`, when
    given, overrides `readonly` (writable_rootfs=True means root.readonly=false).
    """
    path = os.path.abspath(path)
    if os.path.lexists(path):
        if force:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        elif not os.path.isdir(path) or os.listdir(path):
            raise InclavareError(f"{path}: exists and is not empty (use force)")
    if not args:
        raise InclavareError("bundle: the container command must not be empty")
    if writable_rootfs is not None:
        readonly = not writable_rootfs
    os.makedirs(path, exist_ok=True)
    make_rootfs(os.path.join(path, "rootfs"))
    spec = bundle_config(args, terminal=terminal, readonly=readonly, hostnet=hostnet)
    tmp = os.path.join(path, ".config.json.tmp")
    with open(tmp, "w") as f:
        json.dump(spec, f, indent="\t")
        f.write("\n")
    os.rename(tmp, os.path.join(path, "config.json"))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m inclavare.testing.bundle",
        description="Create a minimal OCI bundle (busybox-static rootfs + config.json).",
    )
    parser.add_argument("-t", dest="terminal", action="store_true", help="process.terminal=true")
    parser.add_argument(
        "-w", dest="writable", action="store_true", help="writable rootfs (root.readonly=false)"
    )
    parser.add_argument("-n", dest="hostnet", action="store_true", help="share the host network namespace")
    parser.add_argument("-f", dest="force", action="store_true", help="remove DIR first if it exists")
    parser.add_argument("dir", metavar="DIR")
    parser.add_argument(
        "cmd", metavar="CMD", nargs=argparse.REMAINDER, help="container command (default: sh -c 'echo hello')"
    )
    ns = parser.parse_args(argv)

    def make() -> int:
        print(make_bundle(ns.dir, ns.cmd or DEFAULT_ARGS, terminal=ns.terminal, readonly=not ns.writable,
                          hostnet=ns.hostnet, force=ns.force))
        return 0

    return run_tool("mk-bundle", (InclavareError, OSError, subprocess.CalledProcessError), make)


if __name__ == "__main__":
    sys.exit(main())
