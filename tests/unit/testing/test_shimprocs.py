"""inclavare.testing.shimprocs against stand-in processes: named like the rune shim's (``/proc/PID/comm``), with
``-address`` on their command line, a template holding a ``rune-template-*`` socket."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inclavare.testing import shimprocs

# argv: -c -address ADDR SOCKET. The template binds SOCKET and forks a shim, which forks a worker (same comm).
FAKE = """
import os, socket, sys, time
def name(n):
    with open("/proc/self/comm", "w") as f:
        f.write(n)
name("rune-shim-tmpl")
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[3])
s.listen(1)
if os.fork() == 0:
    s.close()
    name("rune-shim")
    os.fork()
time.sleep(60)
"""


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:  # each stand-in runs in its own process group: end the group (shims, workers)
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(5)


def _start(procs: list[subprocess.Popen[bytes]], address: str, sock: str) -> subprocess.Popen[bytes]:
    p = subprocess.Popen([sys.executable, "-c", FAKE, "-address", address, sock], start_new_session=True)
    procs.append(p)
    deadline = time.monotonic() + 10
    while not (shimprocs.shim_pids(address) and os.path.exists(sock)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return p


def test_finds_and_kills_the_template_of_one_containerd(spawn: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    a, b = str(tmp_path / "a" / "containerd.sock"), str(tmp_path / "b" / "containerd.sock")
    sock_a, sock_b = str(tmp_path / "rune-template-a"), str(tmp_path / "rune-template-b")
    tmpl_a = _start(spawn, a, sock_a)
    tmpl_b = _start(spawn, b, sock_b)
    assert shimprocs.template_pids(a) == [tmpl_a.pid]
    assert shimprocs.template_pids(b) == [tmpl_b.pid]
    assert shimprocs.template_pids(a + ".other") == []
    # the shim the template forked counts (its parent is the template); the shim's worker does not
    shims = shimprocs.shim_pids(a)
    assert len(shims) == 1
    assert int(Path(f"/proc/{shims[0]}/stat").read_text().rsplit(")", 1)[1].split()[1]) == tmpl_a.pid
    assert shimprocs.listening_sockets(tmpl_a.pid) == [sock_a]

    assert shimprocs.kill_templates(a) == [tmpl_a.pid]
    assert tmpl_a.wait(5) == -signal.SIGKILL
    assert not os.path.exists(sock_a)  # a killed template's socket file is removed
    assert shimprocs.template_pids(a) == []
    assert shimprocs.shim_pids(a) == shims  # shims are not the template: they stay (containerd deletes them)
    # the other containerd's template and socket are untouched
    assert tmpl_b.poll() is None and os.path.exists(sock_b)
    assert shimprocs.kill_templates(a) == []
