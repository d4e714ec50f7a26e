"""The words and exit codes engines parse (docs/runc-compat.md), rune and runc 1.1.5 side by side.

Every case runs the same command on both runtimes, each with its own state root and its own busybox
bundle, with ``--log FILE --log-format json`` as containerd's shim passes it. What must hold:

- the same exit status;
- rune's error message (the last ``level=error`` line of the log, and stderr after ``rune: ``) starts
  with runc's words; runc's own program-name prefixes (``runc create failed: ``) aside.

rune's expectations are also written out, so the rune side is checked when runc is absent (then the
runc side is skipped).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Rune, needs_busybox, needs_root

pytestmark = [needs_root, needs_busybox]

RUNC = shutil.which("runc")


class Side:
    """One runtime: its binary, state root, bundle and container id."""

    def __init__(self, rt: Rune, bundle: str, cid: str, log: Path) -> None:
        self.rt, self.bundle, self.cid, self.log = rt, bundle, cid, log

    def run(self, *args: str, timeout: float = 60) -> tuple[int, str, str]:
        """(exit status, stderr, the message of the last level=error line this call added to the log)."""
        before = self.log.read_text().count("\n") if self.log.exists() else 0
        argv = ["--log", str(self.log), "--log-format", "json", *[self.cid if a == "{id}" else a for a in args]]
        p = self.rt.run(*argv, timeout=timeout)
        lines = self.log.read_text().splitlines()[before:] if self.log.exists() else []
        errors = [json.loads(x)["msg"] for x in lines if json.loads(x)["level"] == "error"]
        return p.returncode, p.stderr, (errors[-1] if errors else "")

    def status(self) -> str:
        return str(json.loads(self.rt.run("state", self.cid, check=True).stdout)["status"])


class Pair:
    def __init__(self, rune: Side, runc: Side | None) -> None:
        self.rune, self.runc = rune, runc

    def both(self, *args: str, rc: int, words: str | None = None, timeout: float = 60) -> str:
        """Run on both; check the exit status and that rune's message begins with ``words`` (runc's).

        ``words`` is what runc 1.1.5 prints; when runc is here its message is compared too.
        """
        code, err, msg = self.rune.run(*args, timeout=timeout)
        assert code == rc, (args, code, err)
        if rc == 0:
            assert msg == "", (args, msg)
        if words is not None:
            assert msg.startswith(words), (args, msg)
            assert err == f"rune: {msg}\n", (args, err)
        if self.runc is not None:
            rcode, rerr, rmsg = self.runc.run(*args, timeout=timeout)
            assert rcode == code, (args, rcode, rerr)
            if words is not None:
                theirs = rmsg.replace(self.runc.cid, self.rune.cid)
                for prefix in ("runc create failed: ", "runc run failed: "):
                    theirs = theirs.removeprefix(prefix)
                assert theirs == words, (args, rmsg)
        return msg

    def each(self) -> list[Side]:
        return [self.rune] + ([self.runc] if self.runc else [])

    def wait_status(self, want: str) -> None:
        import time

        for side in self.each():
            deadline = time.monotonic() + 20
            while side.status() != want:
                assert time.monotonic() < deadline, f"{side.cid} never became {want}"
                time.sleep(0.02)


@pytest.fixture
def pair(rune: Rune, rune_bin: str, make_bundle, cid: str, tmp_path: Path) -> Iterator[Pair]:  # type: ignore[no-untyped-def]
    def bundle(args: tuple[str, ...]) -> str:
        return str(make_bundle(list(args)))

    pair_args = ("sleep", "1000")
    ours = Side(rune, bundle(pair_args), cid, tmp_path / "rune-log.json")
    theirs = None
    runc_rt = None
    if RUNC:
        runc_rt = Rune(RUNC, str(tmp_path / "runc-state"))
        theirs = Side(runc_rt, bundle(pair_args), cid + "-runc", tmp_path / "runc-log.json")
    try:
        yield Pair(ours, theirs)
    finally:
        if runc_rt is not None:
            runc_rt.run("delete", "--force", cid + "-runc")


def _create(p: Pair) -> None:
    for side in p.each():
        code, err, _ = side.run("create", "--bundle", side.bundle, "{id}")
        assert code == 0, err


def _start(p: Pair) -> None:
    _create(p)
    for side in p.each():
        code, err, _ = side.run("start", "{id}")
        assert code == 0, err


def _stopped(p: Pair) -> None:
    _start(p)
    for side in p.each():
        assert side.run("kill", "{id}", "KILL")[0] == 0
    p.wait_status("stopped")


# ------------------------------------------------------------------------------ no such container

@pytest.mark.parametrize(("args", "rc", "words"), [
    (("state", "{id}"), 1, "container does not exist"),
    (("kill", "{id}"), 1, "container does not exist"),
    (("kill", "--all", "{id}", "KILL"), 1, "container does not exist"),
    (("kill", "{id}", "FOO"), 1, "container does not exist"),  # the container is looked up first
    (("delete", "{id}"), 1, "container does not exist"),
    (("delete", "--force", "{id}"), 0, None),
    (("start", "{id}"), 1, "container does not exist"),
    (("pause", "{id}"), 1, "container does not exist"),
    (("resume", "{id}"), 1, "container does not exist"),
    (("ps", "{id}"), 1, "container does not exist"),
    (("exec", "{id}", "true"), 255, "exec failed: container does not exist"),
])
def test_missing_container(pair: Pair, args: tuple[str, ...], rc: int, words: str | None) -> None:
    msg = pair.both(*args, rc=rc, words=words)
    if words:  # rune says which id, where
        assert f'"{pair.rune.cid}" (no state under {pair.rune.rt.root})' in msg


# ------------------------------------------------------------------------------ created

def test_created_container(pair: Pair) -> None:
    _create(pair)
    for side in pair.each():
        code, _err, msg = side.run("create", "--bundle", side.bundle, "{id}")
        assert code == 1
        assert msg.removeprefix("runc create failed: ").startswith("container with given ID already exists")
    # runc pauses a created container; `state` then says "paused", and "created" again after resume
    pair.both("pause", "{id}", rc=0)
    assert {s.status() for s in pair.each()} == {"paused"}
    pair.both("start", "{id}", rc=1, words="cannot start a container in the paused state")
    pair.both("resume", "{id}", rc=0)
    assert {s.status() for s in pair.each()} == {"created"}
    pair.both("resume", "{id}", rc=1, words="container not paused")
    pair.both("exec", "{id}", "true", rc=0)
    pair.both("kill", "{id}", "0", rc=0)
    # a created container is deleted (killed) without --force, as runc does
    pair.both("delete", "{id}", rc=0)
    pair.both("state", "{id}", rc=1, words="container does not exist")


# ------------------------------------------------------------------------------ running and paused

def test_running_container(pair: Pair) -> None:
    _start(pair)
    pair.both("start", "{id}", rc=1, words="cannot start an already running container")
    pair.both("resume", "{id}", rc=1, words="container not paused")
    pair.both("delete", "{id}", rc=1, words=f"cannot delete container {pair.rune.cid} that is not stopped: running")
    pair.both("kill", "{id}", "0", rc=0)
    pair.both("kill", "{id}", "FOO", rc=1, words='unknown signal "FOO"')
    pair.both("exec", "{id}", "true", rc=0)


def test_paused_container(pair: Pair) -> None:
    _start(pair)
    pair.both("pause", "{id}", rc=0)
    pair.both("pause", "{id}", rc=1, words="container not running")
    pair.both("start", "{id}", rc=1, words="cannot start a container in the paused state")
    pair.both("exec", "{id}", "true", rc=255,
              words="exec failed: cannot exec in a paused container (use --ignore-paused to override)")
    pair.both("delete", "{id}", rc=1, words=f"cannot delete container {pair.rune.cid} that is not stopped: paused")
    # SIGKILL thaws the container (the signal stays pending in a frozen v1 cgroup otherwise)
    pair.both("kill", "{id}", "KILL", rc=0)
    pair.wait_status("stopped")
    pair.both("delete", "{id}", rc=0)


def test_exec_ignore_paused_runs_once_resumed(pair: Pair) -> None:
    _start(pair)
    for side in pair.each():
        assert side.run("pause", "{id}")[0] == 0
    results: dict[str, int] = {}

    def go(side: Side) -> None:
        results[side.cid] = side.rt.run("exec", "--ignore-paused", side.cid, "true").returncode

    threads = [threading.Thread(target=go, args=(s,)) for s in pair.each()]
    for t in threads:
        t.start()
    # the exec'd process joins the frozen cgroup and waits there; resuming lets it finish
    for side in pair.each():
        assert side.run("resume", "{id}")[0] == 0
    for t in threads:
        t.join(60)
    assert results == {s.cid: 0 for s in pair.each()}


def test_kill_all_of_a_paused_container_thaws_it(pair: Pair) -> None:
    _start(pair)
    for side in pair.each():
        assert side.run("pause", "{id}")[0] == 0
    pair.both("kill", "--all", "{id}", "KILL", rc=0)
    pair.wait_status("stopped")


# ------------------------------------------------------------------------------ stopped

@pytest.mark.parametrize(("args", "rc", "words"), [
    (("kill", "{id}"), 1, "container not running"),
    (("kill", "{id}", "KILL"), 1, "container not running"),
    (("kill", "--all", "{id}"), 0, None),
    (("kill", "--all", "{id}", "KILL"), 0, None),
    (("start", "{id}"), 1, "cannot start a container that has stopped"),
    (("pause", "{id}"), 1, "container not running"),
    (("resume", "{id}"), 1, "container not paused"),
    (("exec", "{id}", "true"), 255, "exec failed: cannot exec in a stopped container"),
    (("delete", "{id}"), 0, None),
])
def test_stopped_container(pair: Pair, args: tuple[str, ...], rc: int, words: str | None) -> None:
    _stopped(pair)
    pair.both(*args, rc=rc, words=words)


def _cgroup_dirs(pid: int) -> list[Path]:
    """The cgroup directories of ``pid``, one per mounted hierarchy (v1, hybrid or v2)."""
    out = []
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if not ctrls:
            names = ["unified", ""]
        elif ctrls.startswith("name="):
            names = [ctrls[5:]]
        else:
            names = [ctrls, *ctrls.split(",")]
        for name in names:
            d = Path("/sys/fs/cgroup", name, path.lstrip("/"))
            if d.is_dir() and path != "/":
                out.append(d)
                break
    return out


def test_kill_all_of_a_stopped_container_without_its_cgroup(pair: Pair) -> None:
    # runc returns at once when the cgroup is gone (systemd removes an empty unit's cgroup)
    _start(pair)
    dirs = {s.cid: _cgroup_dirs(json.loads(s.rt.run("state", s.cid, check=True).stdout)["pid"])
            for s in pair.each()}
    for side in pair.each():
        assert side.run("kill", "{id}", "KILL")[0] == 0
    pair.wait_status("stopped")
    for cid, ds in dirs.items():
        assert ds, f"no cgroup found for {cid}"
        for d in sorted(ds, key=lambda p: -len(p.parts)):
            for sub in sorted(d.glob("**/"), key=lambda p: -len(p.parts)):
                if sub != d:
                    sub.rmdir()
            d.rmdir()
    pair.both("kill", "--all", "{id}", "KILL", rc=0)
    pair.both("kill", "{id}", "KILL", rc=1, words="container not running")
    pair.both("delete", "{id}", rc=0)


# ------------------------------------------------------------------------------ the workload cannot start

CANNOT_START = [
    ("no-such-program", 'exec: "no-such-program": executable file not found in $PATH'),
    ("/no/such/program", 'exec: "/no/such/program": stat /no/such/program: no such file or directory'),
    ("/etc/passwd", 'exec: "/etc/passwd": permission denied'),
    ("/etc", 'exec: "/etc": permission denied'),
    ("/etc/passwd/x", 'exec: "/etc/passwd/x": stat /etc/passwd/x: not a directory'),
]


@pytest.mark.parametrize(("prog", "words"), CANNOT_START)
def test_exec_of_a_program_that_cannot_start(pair: Pair, prog: str, words: str) -> None:
    _start(pair)
    pair.both("exec", "{id}", prog, rc=255, words=f"exec failed: unable to start container process: {words}")
    assert {s.status() for s in pair.each()} == {"running"}


@pytest.mark.parametrize(("prog", "words"), CANNOT_START)
def test_create_of_a_program_that_cannot_start(pair: Pair, make_bundle, prog: str, words: str) -> None:  # type: ignore[no-untyped-def]
    for side in pair.each():
        side.bundle = str(make_bundle([prog]))
    for side in pair.each():
        code, err, msg = side.run("create", "--bundle", side.bundle, "{id}")
        assert code == 1, err
        # runc's own "runc create failed: " aside, the same words (docker and podman map them to 126/127)
        assert msg.removeprefix("runc create failed: ") == f"unable to start container process: {words}", msg
        assert side.rt.run("state", side.cid).returncode == 1  # nothing left behind
    assert pair.rune.run("state", "{id}")[1].startswith("rune: container does not exist")


# ------------------------------------------------------------------------------ help and usage

def _both_plain(rune_bin: str, *args: str) -> list[subprocess.CompletedProcess[str]]:
    out = [subprocess.run([rune_bin, *args], capture_output=True, text=True, timeout=60)]
    if RUNC:
        out.append(subprocess.run([RUNC, *args], capture_output=True, text=True, timeout=60))
    return out


@pytest.mark.parametrize("args", [
    ["-h"], ["--help"], [], ["create", "-h"], ["create", "--help"], ["create", "--bundle", "/b", "-h"],
    ["create", "x", "-h"], ["kill", "x", "-h"], ["delete", "--force", "--help"], ["exec", "-h"], ["help", "run"],
    ["--root", "/nonexistent", "state", "-h"], *[[c, "-h"] for c in ("start", "state", "list", "pause", "resume",
                                                                      "ps", "events", "update", "spec", "features")],
])
def test_help_is_stdout_and_exit_0(rune_bin: str, args: list[str]) -> None:
    for p in _both_plain(rune_bin, *args):
        assert (p.returncode, p.stderr) == (0, ""), (p.args, p.stderr)
        assert p.stdout.startswith("NAME:\n"), p.args
        cmd = next((a for a in args if a in ("create", "kill", "delete", "exec", "run", "state", "start", "list",
                                             "pause", "resume", "ps", "events", "update", "spec", "features")), None)
        if cmd and args[0] != "-h" and args[0] != "--help":
            assert p.stdout.split("\n")[1].split(" - ")[0].split()[-1] == cmd, p.stdout[:80]


@pytest.mark.parametrize("args", [["foo"], ["foo", "-h"], ["help", "foo"]])
def test_unknown_command_exits_3(rune_bin: str, args: list[str]) -> None:
    for p in _both_plain(rune_bin, *args):
        assert p.returncode == 3, p.args
        assert p.stdout == ""
        assert "No help topic for 'foo'" in p.stderr


@pytest.mark.parametrize(("args", "words"), [
    (["state"], '"state" requires exactly 1 argument(s)'),
    (["start"], '"start" requires exactly 1 argument(s)'),
    (["kill"], '"kill" requires a minimum of 1 argument(s)'),
    (["kill", "a", "b", "c"], '"kill" requires a maximum of 2 argument(s)'),
])
def test_argument_count_errors(rune_bin: str, tmp_path: Path, args: list[str], words: str) -> None:
    ps = _both_plain(rune_bin, "--root", str(tmp_path), *args)
    assert ps[0].stderr.startswith(f"rune: {words}"), ps[0].stderr
    for p in ps:
        assert p.returncode == 1
    if len(ps) > 1:  # runc's stderr is a logrus text line: its quotes come escaped
        assert words.replace('"', '\\"') in ps[1].stderr, ps[1].stderr
