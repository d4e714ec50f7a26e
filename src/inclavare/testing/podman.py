"""A private, offline podman for tests, demos and benchmarks (stdlib only).

:class:`PrivatePodman` gives podman its own storage root, run root, libpod tmpdir, containers.conf,
storage.conf and registries.conf under one base directory, so nothing touches the host's podman state
(``/var/lib/containers``, ``/run/containers``, ``/run/libpod``). The settings are the ones our machines
need: no systemd (``cgroup_manager = "cgroupfs"``), no journald (``events_logger = "file"``), no network
(``netns = "none"``, images only from ``podman load``), and ``default_ulimits`` pinned to what a runtime
without CAP_SYS_RESOURCE can set (podman's defaults, nofile/nproc 1048576, fail for every runtime here).

CLI (as root):
    python -m inclavare.testing.podman [--base DIR] [--runtime PATH] COMMAND
      setup            write the config files and print the environment and flags to use by hand
      load [TAR]       podman load TAR (default: build the busybox OCI image tar first)
      run [CMD...]     podman run --rm IMAGE CMD (default: sh -c 'echo hello')
      p ARGS...        podman ARGS with the private global flags, e.g.  ... p ps -a
      cleanup          remove containers, unmount storage and delete the base directory
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence

from inclavare.testing.mounts import mounts_under, unmount_under

__all__ = ["PrivatePodman", "default_ulimits", "mounts_under", "unmount_under", "DEFAULT_BASE", "DEFAULT_IMAGE"]

DEFAULT_BASE = "/tmp/rune-podman"
DEFAULT_IMAGE = "localhost/busybox:latest"


def default_ulimits() -> list[str]:
    """``nofile``/``nproc`` limits a runtime can set here: the current hard limits (nproc capped at 32768)."""
    import resource

    def hard(which: int, cap: int) -> int:
        h = resource.getrlimit(which)[1]
        return cap if h == resource.RLIM_INFINITY or h > cap else h

    nofile = hard(resource.RLIMIT_NOFILE, 1048576)
    nproc = hard(resource.RLIMIT_NPROC, 32768)
    return [f"nofile={nofile}:{nofile}", f"nproc={nproc}:{nproc}"]


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_list(items: Sequence[str]) -> str:
    return "[" + ", ".join(_toml_str(i) for i in items) + "]"


class PrivatePodman:
    """podman with private state under ``base``; ``runtime`` (a path) becomes the default OCI runtime."""

    def __init__(self, base: str | None = None, runtime: str | None = None, *,
                 ulimits: Sequence[str] | None = None, storage_driver: str = "overlay",
                 podman: str = "podman") -> None:
        self.base = os.path.abspath(base) if base else tempfile.mkdtemp(prefix="rune-podman-")
        self.runtime = os.path.abspath(runtime) if runtime else None
        self.ulimits = list(ulimits) if ulimits is not None else default_ulimits()
        self.storage_driver = storage_driver
        self.podman_bin = podman
        self.root = os.path.join(self.base, "root")
        self.runroot = os.path.join(self.base, "run")
        self.tmpdir = os.path.join(self.base, "tmp")
        self.containers_conf = os.path.join(self.base, "containers.conf")
        self.storage_conf = os.path.join(self.base, "storage.conf")
        self.registries_conf = os.path.join(self.base, "registries.conf")
        self.write_config()

    # -- configuration -------------------------------------------------------------------------
    def write_config(self) -> None:
        """(Re)write the three config files and create the private directories."""
        for d in (self.root, self.runroot, self.tmpdir, os.path.join(self.base, "networks"),
                  os.path.join(self.base, "copy-tmp")):
            os.makedirs(d, mode=0o700, exist_ok=True)
        engine = [
            "[engine]",
            'cgroup_manager = "cgroupfs"',
            'events_logger = "file"',
            f"events_logfile_path = {_toml_str(os.path.join(self.base, 'events.log'))}",
            f"tmp_dir = {_toml_str(self.tmpdir)}",
            f"image_copy_tmp_dir = {_toml_str(os.path.join(self.base, 'copy-tmp'))}",
            'infra_image = "localhost/none:none"',
        ]
        if self.runtime:
            engine += ['runtime = "rune"', "", "[engine.runtimes]", f"rune = {_toml_list([self.runtime])}"]
        lines = [
            "# written by inclavare.testing.podman: private, offline podman",
            "[containers]",
            f"default_ulimits = {_toml_list(self.ulimits)}",
            'netns = "none"',
            'log_driver = "k8s-file"',
            "",
            "[network]",
            f"network_config_dir = {_toml_str(os.path.join(self.base, 'networks'))}",
            "",
            *engine,
            "",
        ]
        _write(self.containers_conf, "\n".join(lines))
        _write(self.storage_conf, "\n".join([
            "[storage]",
            f"driver = {_toml_str(self.storage_driver)}",
            f"graphroot = {_toml_str(self.root)}",
            f"runroot = {_toml_str(self.runroot)}",
            "",
        ]))
        _write(self.registries_conf, 'unqualified-search-registries = []\nshort-name-mode = "disabled"\n')

    @property
    def env(self) -> dict[str, str]:
        """The environment variables that point podman at the private config files."""
        return {"CONTAINERS_CONF": self.containers_conf, "CONTAINERS_STORAGE_CONF": self.storage_conf,
                "CONTAINERS_REGISTRIES_CONF": self.registries_conf}

    def global_flags(self, runtime: str | None = None) -> list[str]:
        """Flags given before every subcommand (``runtime`` overrides the configured one for this call)."""
        flags = ["--root", self.root, "--runroot", self.runroot, "--tmpdir", self.tmpdir,
                 "--cgroup-manager=cgroupfs", "--events-backend=file", f"--storage-driver={self.storage_driver}"]
        if runtime:
            flags += ["--runtime", runtime]
        return flags

    def cmd(self, *args: str, runtime: str | None = None) -> list[str]:
        """The full podman argv for ``args``."""
        return [self.podman_bin, *self.global_flags(runtime), *args]

    # -- running podman ------------------------------------------------------------------------
    def podman(self, *args: str, runtime: str | None = None, check: bool = False, timeout: float = 120,
               input: str | None = None, **kw: object) -> subprocess.CompletedProcess[str]:
        """Run podman with the private flags; stdout/stderr go through files (a detached conmon may keep
        inherited pipes open), and are returned decoded."""
        env = dict(os.environ, **self.env)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            if input is None:
                kw.setdefault("stdin", subprocess.DEVNULL)
            p = subprocess.run(self.cmd(*args, runtime=runtime), env=env, stdout=out, stderr=err,  # type: ignore[call-overload]
                               timeout=timeout, input=None if input is None else input.encode(), **kw)
            out.seek(0)
            err.seek(0)
            res = subprocess.CompletedProcess(p.args, p.returncode, out.read().decode(errors="replace"),
                                              err.read().decode(errors="replace"))
        if check and res.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)} -> exit {res.returncode}\n"
                               f"stdout: {res.stdout}\nstderr: {res.stderr}")
        return res

    def popen(self, *args: str, runtime: str | None = None, **kw: object) -> subprocess.Popen[bytes]:
        """Start podman without waiting (e.g. with a pty as its stdio)."""
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            self.cmd(*args, runtime=runtime), env=dict(os.environ, **self.env), **kw)
        return proc

    def load_image(self, tar: str | None = None, name: str = DEFAULT_IMAGE) -> str:
        """``podman load -i tar`` (built with :func:`inclavare.testing.image.build_image_tar` when
        ``tar`` is None) unless ``name`` already exists; returns ``name``."""
        if self.podman("image", "exists", name).returncode == 0:
            return name
        if tar is None:
            from inclavare.testing.image import build_image_tar

            tar = build_image_tar(os.path.join(self.base, "image", "busybox-oci.tar"), name=name)
        self.podman("load", "-i", tar, check=True, timeout=300)
        return name

    # -- cleanup -------------------------------------------------------------------------------
    def mounts(self) -> list[str]:
        """Mount points under the base directory, deepest first."""
        return mounts_under(self.base)

    def cleanup(self, remove_base: bool = True) -> list[str]:
        """Remove every container (killing what still runs), unmount the storage and delete the base
        directory. Never raises; returns the problems it met."""
        problems: list[str] = []
        if os.path.isdir(self.root):
            for args in (("rm", "--all", "--force", "--time", "0"), ("pod", "rm", "--all", "--force")):
                try:
                    p = self.podman(*args, timeout=120)
                    if p.returncode != 0:
                        problems.append(f"podman {' '.join(args)}: {p.stderr.strip()}")
                except (OSError, subprocess.TimeoutExpired) as e:
                    problems.append(f"podman {' '.join(args)}: {e}")
        problems += unmount_under(self.base)
        if remove_base:
            shutil.rmtree(self.base, ignore_errors=True)
            if os.path.exists(self.base):
                problems.append(f"{self.base}: could not be removed")
        return problems

    def __enter__(self) -> PrivatePodman:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def _write(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import shlex

    ap = argparse.ArgumentParser(prog="python -m inclavare.testing.podman",
                                 description=(__doc__ or "").splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join((__doc__ or "").splitlines()[10:]))
    ap.add_argument("--base", default=os.environ.get("RUNE_PODMAN_BASE", DEFAULT_BASE),
                    help=f"private state directory (default {DEFAULT_BASE}, or $RUNE_PODMAN_BASE)")
    ap.add_argument("--runtime", default=shutil.which("rune") or "/usr/local/bin/rune",
                    help="OCI runtime path (default: rune on PATH)")
    ap.add_argument("--image", default=DEFAULT_IMAGE)
    ap.add_argument("command", choices=["setup", "load", "run", "p", "cleanup"])
    ap.add_argument("args", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("podman: run as root (the private podman is a rootful one)", file=sys.stderr)
        return 1
    if a.command == "cleanup":
        problems = PrivatePodman(a.base, a.runtime).cleanup()
        for p in problems:
            print(f"podman: {p}", file=sys.stderr)
        print(f"removed {a.base}")
        return 1 if problems else 0
    pm = PrivatePodman(a.base, a.runtime)
    if a.command == "setup":
        for k, v in pm.env.items():
            print(f"export {k}={shlex.quote(v)}")
        print(f"alias pm={shlex.quote(shlex.join(pm.cmd()))}")
        return 0
    if a.command == "load":
        print(pm.load_image(a.args[0] if a.args else None, a.image))
        return 0
    if a.command == "run":
        pm.load_image(None, a.image)
        argv2 = ["run", "--rm", "--pull=never", a.image, *(a.args or ["sh", "-c", "echo hello"])]
    else:
        argv2 = a.args
    return subprocess.call(pm.cmd(*argv2), env=dict(os.environ, **pm.env))


if __name__ == "__main__":
    sys.exit(main())
