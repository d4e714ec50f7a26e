"""A private containerd for tests, benchmarks and people: own config, root, state and sockets.

Nothing is shared with a system containerd: the config (version 2) puts ``root``, ``state``, the gRPC and
ttrpc sockets under one base directory, the CRI plugin is disabled (ctr does not need it), and containerd
runs with its own PATH (``BASE/bin`` first) so that shims, including a ``containerd-shim-rune-v2`` dropped
there, are found. containerd is started as a real process in its own session (``setsid``) and logs to
``BASE/containerd.log``.

    with PrivateContainerd("/tmp/ctrd") as c:
        c.import_image(tar)
        c.ctr("run", "--rm", "--runtime", "io.containerd.runc.v2", "--runc-binary", rune, IMAGE, "id", "true")

CLI: python -m inclavare.testing.containerd [--base DIR] [-n NS] start|stop|status|purge|ctr ARGS...
``start`` also builds and imports the busybox test image unless ``--no-image`` is given.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from inclavare.testing._tool import run_tool

DEFAULT_BASE = "/tmp/inclavare-containerd"
DEFAULT_NAMESPACE = "inclavare"
CGROUP_ROOT = "/sys/fs/cgroup"
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ContainerdError(RuntimeError):
    """containerd did not start, or a ctr call that had to succeed failed."""


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class PrivateContainerd:
    """One containerd process with everything under ``base``; ``ctr()`` talks to it in ``namespace``."""

    def __init__(self, base: str = DEFAULT_BASE, namespace: str = DEFAULT_NAMESPACE,
                 containerd: str | None = None, ctr_bin: str | None = None) -> None:
        self.base = os.path.abspath(base)
        self.namespace = namespace
        self.containerd_bin = containerd or shutil.which("containerd") or "/usr/bin/containerd"
        self.ctr_bin = ctr_bin or shutil.which("ctr") or "/usr/bin/ctr"
        self.config = os.path.join(self.base, "config.toml")
        self.address = os.path.join(self.base, "containerd.sock")
        self.log = os.path.join(self.base, "containerd.log")
        self.pid_file = os.path.join(self.base, "containerd.pid")
        self.bin_dir = os.path.join(self.base, "bin")
        self.root = os.path.join(self.base, "root")
        self.state = os.path.join(self.base, "state")
        self._proc: subprocess.Popen[bytes] | None = None

    # -- config and process --------------------------------------------------------------------

    def write_config(self) -> str:
        for d in (self.base, self.bin_dir, self.root, self.state):
            os.makedirs(d, exist_ok=True)
        text = "\n".join([
            "# written by inclavare.testing.containerd (containerd 1.6, config version 2)",
            "version = 2",
            f"root = {_toml_str(self.root)}",
            f"state = {_toml_str(self.state)}",
            "disabled_plugins = [" + ", ".join(_toml_str(p) for p in self.disabled_plugins()) + "]",
            "",
            "[grpc]",
            f"  address = {_toml_str(self.address)}",
            "[ttrpc]",
            f"  address = {_toml_str(self.address + '.ttrpc')}",
            "[debug]",
            f"  address = {_toml_str(os.path.join(self.base, 'debug.sock'))}",
            '  level = "info"',
            "[metrics]",
            '  address = ""',
            "",
            *self.extra_config(),
        ])
        tmp = self.config + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.config)
        return self.config

    def disabled_plugins(self) -> list[str]:
        """Plugins containerd must not load. ctr needs no CRI; without it containerd starts faster and wants
        no CNI (inclavare.testing.cri.containerd enables it)."""
        return ["io.containerd.grpc.v1.cri"]

    def extra_config(self) -> list[str]:
        """More TOML lines for the config (plugin tables), for subclasses."""
        return []

    def env(self) -> dict[str, str]:
        """containerd's environment: BASE/bin first on PATH, so shims placed there win."""
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID")}
        env["PATH"] = f"{self.bin_dir}:{_SYSTEM_PATH}"
        return env

    def pid(self) -> int | None:
        """The pid of our containerd if it is alive."""
        if self._proc is not None:
            return self._proc.pid if self._proc.poll() is None else None
        try:
            with open(self.pid_file) as f:
                pid = int(f.read().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        try:  # a recycled pid is not ours
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if self.config.encode() not in f.read():
                    return None
        except OSError:
            return None
        return pid

    def running(self) -> bool:
        return self.pid() is not None

    def start(self, timeout: float = 30.0) -> PrivateContainerd:
        """Write the config and start containerd unless it already runs; wait until ``ctr version`` answers."""
        if self.running():
            return self
        self.write_config()
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(
                [self.containerd_bin, "--config", self.config],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env(), cwd=self.base,
                start_new_session=True)
        with open(self.pid_file, "w") as f:
            f.write(f"{self._proc.pid}\n")
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise ContainerdError(f"containerd exited with {self._proc.returncode}; see {self.log}:\n"
                                      + self.log_tail())
            if os.path.exists(self.address):
                p = self.ctr("version", check=False, timeout=10)
                if p.returncode == 0:
                    return self
            if time.monotonic() > deadline:
                raise ContainerdError(f"containerd did not answer within {timeout:.0f} s; see {self.log}:\n"
                                      + self.log_tail())
            time.sleep(0.05)

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def _terminate(self, timeout: float = 10.0) -> None:
        pid = self.pid()
        if pid is None:
            self._proc = None
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None:
                if self._proc.poll() is not None:
                    break
            elif not self.running():
                break
            time.sleep(0.05)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if self._proc is not None:
                self._proc.wait(timeout=10)
        self._proc = None

    def restart(self, timeout: float = 30.0) -> PrivateContainerd:
        """Stop containerd (tasks and shims keep running) and start it again on the same root and state."""
        self._terminate()
        try:
            os.unlink(self.pid_file)
        except FileNotFoundError:
            pass
        return self.start(timeout)

    def stop(self) -> None:
        """Kill and delete every task and container in our namespace, stop containerd, unmount leftovers, end
        the rune shim template of this containerd."""
        if self.running():
            self.cleanup_namespace()
            self._terminate()
        self._proc = None
        try:
            os.unlink(self.pid_file)
        except FileNotFoundError:
            pass
        self.unmount_leftovers()
        self.remove_namespace_cgroups()
        from inclavare.testing.shimprocs import kill_templates

        kill_templates(self.address)  # a rune shim template would outlive containerd by up to 30 s

    def namespace_cgroups(self) -> list[str]:
        """Cgroup dirs named after our namespace: ctr's default cgroupsPath is /NAMESPACE/ID."""
        hiers = sorted(os.listdir(CGROUP_ROOT)) if os.path.isdir(CGROUP_ROOT) else []
        # v1 and hybrid: one dir per hierarchy; pure v2: directly under the root
        candidates = [os.path.join(CGROUP_ROOT, h, self.namespace) for h in hiers]
        candidates.append(os.path.join(CGROUP_ROOT, self.namespace))
        return [d for d in candidates if os.path.isdir(d) and not os.path.islink(d)]

    def remove_namespace_cgroups(self) -> None:
        """rmdir the (then empty) per-namespace parent cgroups the runtime made; busy ones stay."""
        for d in self.namespace_cgroups():
            try:
                os.rmdir(d)
            except OSError:
                pass

    def cleanup_namespace(self, wait: float = 5.0) -> None:
        tasks = self.ctr("tasks", "ls", "-q", check=False, timeout=20).stdout.split()
        for t in tasks:
            self.ctr("tasks", "kill", "-a", "-s", "KILL", t, check=False, timeout=20)
        deadline = time.monotonic() + wait
        for t in tasks:
            while True:
                p = self.ctr("tasks", "delete", t, check=False, timeout=20)
                if p.returncode == 0 or "not found" in p.stderr or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            if p.returncode != 0 and "not found" not in p.stderr:
                self.ctr("tasks", "delete", "--force", t, check=False, timeout=20)
        for c in self.ctr("containers", "ls", "-q", check=False, timeout=20).stdout.split():
            self.ctr("containers", "delete", c, check=False, timeout=20)

    def mounts(self) -> list[str]:
        """Mount points under ``base`` (deepest first)."""
        from inclavare.testing.mounts import mounts_under

        return mounts_under(self.base)

    def unmount_leftovers(self) -> list[str]:
        left = self.mounts()
        for mp in left:
            subprocess.run(["umount", "-l", mp], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return left

    def purge(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PrivateContainerd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- ctr -----------------------------------------------------------------------------------

    def ctr_cmd(self, *args: str) -> list[str]:
        return [self.ctr_bin, "-a", self.address, "-n", self.namespace, *args]

    def ctr(self, *args: str, check: bool = True, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run ctr against this containerd; stdout/stderr go through files (a task may hold its stdio)."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            rc = subprocess.run(self.ctr_cmd(*args), stdout=out, stderr=err, timeout=timeout, **kw).returncode
            out.seek(0)
            err.seek(0)
            p = subprocess.CompletedProcess(args, rc, out.read().decode(errors="replace"),
                                            err.read().decode(errors="replace"))
        if check and p.returncode != 0:
            raise ContainerdError(f"ctr {' '.join(args)} -> {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}")
        return p

    def import_image(self, tar: str) -> list[str]:
        """``ctr image import`` an OCI layout tar; returns the image names now present."""
        self.ctr("images", "import", tar, timeout=120)
        return self.images()

    def images(self) -> list[str]:
        return self.ctr("images", "ls", "-q").stdout.split()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m inclavare.testing.containerd",
                                 description="a private containerd: own config, root, state and sockets")
    ap.add_argument("--base", default=os.environ.get("CTRD_BASE", DEFAULT_BASE))
    ap.add_argument("-n", "--namespace", default=os.environ.get("CTRD_NS", DEFAULT_NAMESPACE))
    ap.add_argument("--image", default="localhost/busybox:latest", help="name of the busybox test image")
    ap.add_argument("--no-image", action="store_true", help="start without importing the test image")
    ap.add_argument("cmd", choices=["start", "stop", "restart", "status", "purge", "ctr"])
    ap.add_argument("args", nargs=argparse.REMAINDER, help="arguments for `ctr`")
    a = ap.parse_args(argv)
    c = PrivateContainerd(a.base, a.namespace)
    return run_tool("containerd", ContainerdError, lambda: _command(a, c))


def _command(a: argparse.Namespace, c: PrivateContainerd) -> int:
    if a.cmd == "start":
        c.start()
        if not a.no_image and a.image not in c.images():
            from inclavare.testing.image import build_image_tar

            tar = build_image_tar(os.path.join(c.base, "busybox-oci.tar"), name=a.image)
            c.import_image(tar)
        print(f"containerd pid {c.pid()}, log {c.log}")
        print(f"use: ctr -a {c.address} -n {c.namespace} ...")
    elif a.cmd == "restart":
        c.restart()
        print(f"containerd pid {c.pid()}")
    elif a.cmd == "stop":
        c.stop()
    elif a.cmd == "purge":
        c.purge()
    elif a.cmd == "status":
        if not c.running():
            print("containerd: not running")
            return 1
        print(f"containerd pid {c.pid()}, socket {c.address}, namespace {c.namespace}")
        for what in (("images", "ls"), ("containers", "ls"), ("tasks", "ls")):
            print(c.ctr(*what, check=False).stdout, end="")
    else:
        return subprocess.run(c.ctr_cmd(*a.args)).returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
