"""`rune exec` into real containers, and terminals: console socket hand-off and rune's own pty relay."""

from __future__ import annotations

import errno
import json
import os
import pty
import select
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import needs_busybox, needs_root

pytestmark = [pytest.mark.root, needs_root, needs_busybox]


def ok(p):  # type: ignore[no-untyped-def]
    assert p.returncode == 0, f"rc={p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p.stdout


@pytest.fixture
def running(rune, cid, make_bundle):  # type: ignore[no-untyped-def]
    """A running container (sleep) with a writable tmpfs /tmp; yields its host pid."""
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777"]})
        cfg["process"]["env"].append("BASE=from-config")

    b = make_bundle(["sleep", "120"], edit=edit)
    rune.run("run", "-d", "--bundle", b, cid, check=True)
    return rune.state(cid)["pid"]


def read_until_eof(fd: int, limit: float = 20.0) -> bytes:
    """Read a pty master until the slave side is gone (EIO) or nothing more comes."""
    out = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.5)
        if not r:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError as e:
            if e.errno == errno.EIO:
                break
            raise
        if not chunk:
            break
        out += chunk
    return out


# ------------------------------------------------------------------------------ exec

def test_exec_output_and_exit_code(rune, cid, running):
    p = rune.run("exec", cid, "sh", "-c", "echo $$; echo to-err >&2")
    assert ok(p).strip().isdigit() and int(p.stdout) > 1
    assert "to-err" in p.stderr
    assert rune.run("exec", cid, "sh", "-c", "exit 3").returncode == 3
    assert rune.run("exec", cid, "false").returncode == 1


def test_exec_signal_exit_status(rune, cid, running):
    assert rune.run("exec", cid, "sh", "-c", "kill -9 $$").returncode == 128 + 9


def test_exec_joins_init_namespaces(rune, cid, running):
    out = ok(rune.run("exec", cid, "sh", "-c",
                      "for n in pid net mnt ipc uts; do readlink /proc/self/ns/$n; done; cat /proc/1/cmdline"))
    lines = out.splitlines()
    want = [os.readlink(f"/proc/{running}/ns/{n}") for n in ("pid", "net", "mnt", "ipc", "uts")]
    assert lines[:5] == want
    assert lines[5].startswith("sleep")
    assert want[0] != os.readlink("/proc/self/ns/pid")


def test_exec_joins_init_cgroup(rune, cid, running):
    out = ok(rune.run("exec", cid, "cat", "/proc/self/cgroup"))
    assert sorted(out.splitlines()) == sorted(Path(f"/proc/{running}/cgroup").read_text().splitlines())


def test_exec_env_cwd_user_cap(rune, cid, running):
    out = ok(rune.run("exec", "--env", "FOO=1", "-e", "BAR=two words", "--cwd", "/etc", cid,
                      "sh", "-c", 'echo "$FOO|$BAR|$BASE"; pwd'))
    assert out.splitlines() == ["1|two words|from-config", "/etc"]
    out = ok(rune.run("exec", "--user", "1000:1000", cid, "sh", "-c", "id -u; id -g; grep ^CapEff /proc/self/status"))
    lines = out.splitlines()
    assert lines[:2] == ["1000", "1000"]
    assert int(lines[2].split()[1], 16) == 0
    out = ok(rune.run("exec", "--cap", "CAP_NET_ADMIN", cid, "grep", "-E", "^Cap(Eff|Bnd)", "/proc/self/status"))
    for line in out.splitlines():
        assert int(line.split()[1], 16) & (1 << 12), line
    out = ok(rune.run("exec", cid, "grep", "^CapEff", "/proc/self/status"))
    assert not int(out.split()[1], 16) & (1 << 12)


def test_exec_cap_is_effective(rune, cid, running):
    # CAP_NET_ADMIN lets the exec'd process change lo's MTU; without it the same command fails
    p = rune.run("exec", cid, "ip", "link", "set", "lo", "mtu", "1300")
    assert p.returncode != 0
    ok(rune.run("exec", "--cap", "CAP_NET_ADMIN", cid, "ip", "link", "set", "lo", "mtu", "1300"))
    assert ok(rune.run("exec", cid, "cat", "/sys/class/net/lo/mtu")).strip() == "1300"


def test_exec_process_file(rune, cid, running, tmp_path):
    proc = {"terminal": False, "user": {"uid": 65534, "gid": 65534}, "args": ["sh", "-c", 'echo "$FOO"; pwd; id -u'],
            "env": ["PATH=/bin:/usr/bin", "FOO=from-process-json"], "cwd": "/tmp"}
    f = tmp_path / "process.json"
    f.write_text(json.dumps(proc))
    out = ok(rune.run("exec", "--process", str(f), cid))
    assert out.splitlines() == ["from-process-json", "/tmp", "65534"]
    p = rune.run("exec", "-p", str(f), cid)
    assert p.returncode == 0


def test_exec_detach_pid_file(rune, cid, running, tmp_path):
    pidfile = tmp_path / "exec.pid"
    p = rune.run("exec", "--detach", "--pid-file", str(pidfile), cid, "sleep", "77")
    assert p.returncode == 0, p.stderr
    pid = int(pidfile.read_text())
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", b"77"]
    assert os.readlink(f"/proc/{pid}/ns/pid") == os.readlink(f"/proc/{running}/ns/pid")
    assert pid in json.loads(ok(rune.run("ps", "--format", "json", cid)))


def test_exec_in_stopped_container_fails(rune, cid, make_bundle):
    b = make_bundle(["true"])
    rune.run("run", "-d", "--bundle", b, cid, check=True)
    deadline = time.monotonic() + 10
    while rune.state(cid)["status"] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.02)
    p = rune.run("exec", cid, "true")
    # as runc: exec errors exit 255 with "exec failed: "
    assert p.returncode == 255
    assert p.stderr == f'rune: exec failed: cannot exec in a stopped container: "{cid}"\n'


def test_exec_missing_binary(rune, cid, running):
    p = rune.run("exec", cid, "no-such-binary")
    assert p.returncode != 0
    assert p.returncode == 255
    assert p.stderr == ('rune: exec failed: unable to start container process: exec: "no-such-binary": '
                        'executable file not found in $PATH\n')


# ------------------------------------------------------------------------------ terminals

@pytest.fixture
def console_socket(tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "console.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    srv.settimeout(30)
    yield path, srv
    srv.close()


def receive_master(srv: socket.socket) -> int:
    conn, _ = srv.accept()
    with conn:
        _msg, fds, _flags, _addr = socket.recv_fds(conn, 4096, 4)
    assert len(fds) == 1
    return fds[0]


def test_console_socket_terminal(rune, cid, make_bundle, console_socket):
    path, srv = console_socket
    b = make_bundle(["sh", "-c", "tty; test -t 0 && echo in-tty; test -t 1 && echo out-tty; "
                                 "stty size; echo done"], terminal=True)

    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["process"]["consoleSize"] = {"height": 33, "width": 101}

    cfg_path = Path(b, "config.json")
    cfg = json.loads(cfg_path.read_text())
    edit(cfg)
    cfg_path.write_text(json.dumps(cfg))
    proc = subprocess.Popen(rune.cmd("create", "--console-socket", str(path), "--bundle", b, cid),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    master = receive_master(srv)
    try:
        _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert os.isatty(master)
        rune.run("start", cid, check=True)
        text = read_until_eof(master).decode(errors="replace").replace("\r\n", "\n")
    finally:
        os.close(master)
    lines = text.splitlines()
    assert lines[0] in ("/dev/console", "/dev/pts/0"), text
    assert "in-tty" in lines and "out-tty" in lines
    assert "33 101" in lines
    assert lines[-1] == "done"


def test_console_socket_missing_for_terminal(rune, cid, make_bundle):
    b = make_bundle(["tty"], terminal=True)
    p = rune.run("create", "--bundle", b, cid)
    assert p.returncode == 1 and "console" in p.stderr and len(p.stderr.splitlines()) == 1
    assert not Path(rune.root, cid).exists()


def test_exec_tty_with_console_socket(rune, cid, running, console_socket):
    path, srv = console_socket
    proc = subprocess.Popen(rune.cmd("exec", "--tty", "--detach", "--console-socket", str(path), cid,
                                     "sh", "-c", "tty; test -t 0 && echo exec-tty"),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    master = receive_master(srv)
    try:
        _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        text = read_until_eof(master).decode(errors="replace").replace("\r\n", "\n")
    finally:
        os.close(master)
    lines = text.splitlines()
    assert lines[0].startswith("/dev/pts/"), text
    assert "exec-tty" in lines


def _run_on_pty(cmd: list[str], prompt: bytes = b"", stdin_data: bytes = b"") -> tuple[int, str]:
    """Run `cmd` with a pty as its stdio; once `prompt` shows up in the output, type `stdin_data`."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        slave = -1
        out = b""
        if stdin_data:
            deadline = time.monotonic() + 20
            while prompt not in out and time.monotonic() < deadline:
                r, _, _ = select.select([master], [], [], 0.5)
                if r:
                    try:
                        out += os.read(master, 4096)
                    except OSError:
                        break
            os.write(master, stdin_data)
        out += read_until_eof(master)
        rc = proc.wait(timeout=30)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    return rc, out.decode(errors="replace").replace("\r\n", "\n")


def test_run_terminal_relays_through_rune_stdio(rune, cid, make_bundle):
    b = make_bundle(["sh", "-c", "tty; test -t 0 && echo relay-tty; exit 5"], terminal=True)
    rc, text = _run_on_pty(rune.cmd("run", "--bundle", b, cid))
    assert rc == 5, text
    lines = text.splitlines()
    assert any(x in ("/dev/console", "/dev/pts/0") for x in lines), text
    assert "relay-tty" in lines
    assert not Path(rune.root, cid).exists()


def test_run_terminal_relays_input(rune, cid, make_bundle):
    b = make_bundle(["sh", "-c", "echo ready; read line; echo got:$line"], terminal=True)
    rc, text = _run_on_pty(rune.cmd("run", "--bundle", b, cid), prompt=b"ready", stdin_data=b"hello-pty\n")
    assert rc == 0, text
    assert "got:hello-pty" in text.splitlines()


def test_exec_tty_relay(rune, cid, running):
    rc, text = _run_on_pty(rune.cmd("exec", "-t", cid, "sh", "-c", "tty; exit 4"))
    assert rc == 4, text
    assert any(x.startswith("/dev/pts/") for x in text.splitlines()), text


def test_concurrent_execs_all_return_their_status(rune, cid, running):
    """Many execs at once: each rune exec must report its own process's exit status.

    Regression: stage 2 once could send "ready" before stage 1 had sent its pid, so `exec` waited
    for pid 0 and exited 255 (and `create` recorded pid 0, so `start` said "stopped").
    """
    import concurrent.futures

    def one(i: int) -> tuple[int, str]:
        p = rune.run("exec", cid, "sh", "-c", f"echo {i}; exit {i % 7}")
        return p.returncode, p.stdout.strip()

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(one, range(90)))
    assert results == [(i % 7, str(i)) for i in range(90)]


# ------------------------------------------------------------------------------ non-root terminals

# prints "uid gid mode" of the terminal on fd 0 (busybox stat follows the /proc/self/fd/0 link)
TTY_OWNER = "stat -L -c 'owner %u %g %a' /proc/self/fd/0"


def _as_user(uid: int, gid: int):  # type: ignore[no-untyped-def]
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["process"]["user"] = {"uid": uid, "gid": gid}

    return edit


def _owner_line(text: str) -> list[str]:
    lines = [x for x in text.splitlines() if x.startswith("owner ")]
    assert len(lines) == 1, text
    return lines[0].split()[1:]


def _console_output(cmd: list[str], srv) -> str:  # type: ignore[no-untyped-def]
    """Run a detached rune command that hands its pty master to the console socket; the pty's text."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    master = receive_master(srv)
    try:
        _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        return read_until_eof(master).decode(errors="replace").replace("\r\n", "\n")
    finally:
        os.close(master)


def test_non_root_terminal_owned_by_user_console_socket(rune, cid, make_bundle, console_socket):
    # as runc (fixStdioPermissions): the pty slave's owner is the container user; its group stays
    # the devpts mount's gid=5 (tty) and its mode 620, which the kernel sets
    path, srv = console_socket
    b = make_bundle(["sh", "-c", TTY_OWNER], terminal=True, edit=_as_user(1000, 1000))
    text = _console_output(rune.cmd("run", "-d", "--console-socket", str(path), "--bundle", b, cid), srv)
    assert _owner_line(text) == ["1000", "5", "620"]


def test_non_root_terminal_owned_by_user_relay(rune, cid, make_bundle):
    b = make_bundle(["sh", "-c", TTY_OWNER], terminal=True, edit=_as_user(1234, 4321))
    rc, text = _run_on_pty(rune.cmd("run", "--bundle", b, cid))
    assert rc == 0, text
    assert _owner_line(text) == ["1234", "5", "620"]


def test_exec_tty_user_owns_its_terminal(rune, cid, running, console_socket):
    rc, text = _run_on_pty(rune.cmd("exec", "-t", "--user", "1000:1000", cid, "sh", "-c", TTY_OWNER))
    assert rc == 0, text
    assert _owner_line(text) == ["1000", "5", "620"]
    path, srv = console_socket
    text = _console_output(rune.cmd("exec", "-t", "-d", "--user", "2000", "--console-socket", str(path), cid,
                                    "sh", "-c", TTY_OWNER), srv)
    assert _owner_line(text) == ["2000", "5", "620"]


def test_handed_over_stdio_given_to_the_user(rune, cid, make_bundle, tmp_path):
    # runc chowns the stdio it hands to a detached container (never /dev/null) to the process user
    out = tmp_path / "out"
    b = make_bundle(["sh", "-c", "stat -L -c '%u' /proc/self/fd/1 /proc/self/fd/0"], edit=_as_user(1000, 1000))
    err = tmp_path / "err"
    with open(out, "w") as f, open(err, "w") as e:  # files: the container keeps its stdio open
        p = subprocess.run(rune.cmd("create", "--bundle", b, cid), stdin=subprocess.DEVNULL, stdout=f,
                           stderr=e, timeout=60)
    assert p.returncode == 0, err.read_text()
    rune.run("start", cid, check=True)
    deadline = time.monotonic() + 10
    while rune.state(cid)["status"] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert out.stat().st_uid == 1000 and out.stat().st_gid == 0
    assert out.read_text().split() == ["1000", "0"]  # fd 0 is /dev/null: left to root


def test_foreground_run_leaves_the_callers_files_alone(rune, cid, make_bundle, tmp_path):
    # runc relays a foreground container through pipes of its own; rune passes the caller's files,
    # which it must not give away
    out = tmp_path / "out"
    b = make_bundle(["id", "-u"], edit=_as_user(1000, 1000))
    with open(out, "w") as f:
        p = subprocess.run(rune.cmd("run", "--bundle", b, cid), stdin=subprocess.DEVNULL, stdout=f,
                           stderr=subprocess.PIPE, timeout=60)
    assert p.returncode == 0, p.stderr
    assert out.read_text() == "1000\n" and out.stat().st_uid == 0


# ------------------------------------------------------------------------------ cwd and identity

def _with_secret_dir(cfg):  # type: ignore[no-untyped-def]
    # /secret: a root-only directory (0700) on a tmpfs; the test user cannot enter it by itself
    cfg["mounts"].append({"destination": "/secret", "type": "tmpfs", "source": "tmpfs", "options": ["mode=0700"]})


def test_create_chdirs_into_a_root_only_cwd_before_dropping_root(rune, cid, make_bundle):
    # runc chdirs before the user switch: a cwd only root can reach still works for another user
    def edit(cfg):  # type: ignore[no-untyped-def]
        _with_secret_dir(cfg)
        cfg["process"]["user"] = {"uid": 1000, "gid": 1000}
        cfg["process"]["cwd"] = "/secret"

    b = make_bundle(["sh", "-c", "pwd; id -u; ls . >/dev/null 2>&1 || echo cannot-list"], edit=edit)
    p = rune.run("run", "--bundle", b, cid)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["/secret", "1000", "cannot-list"]


def test_create_chdirs_into_a_user_only_cwd(rune, cid, make_bundle):
    # a cwd that only the container user owns (0700) works too
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["mounts"].append({"destination": "/mine", "type": "tmpfs", "source": "tmpfs",
                              "options": ["mode=0700", "uid=1000", "gid=1000"]})
        cfg["process"]["user"] = {"uid": 1000, "gid": 1000}
        cfg["process"]["cwd"] = "/mine"

    b = make_bundle(["pwd"], edit=edit)
    p = rune.run("run", "--bundle", b, cid)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "/mine\n"


def test_exec_user_cwd_as_runc(rune, cid, make_bundle):
    b = make_bundle(["sleep", "120"], edit=_with_secret_dir)
    rune.run("run", "-d", "--bundle", b, cid, check=True)
    # reachable by root: runc's exec chdirs before switching user, so this works
    p = rune.run("exec", "--user", "1000:1000", "--cwd", "/secret", cid, "sh", "-c", "pwd; id -u")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["/secret", "1000"]
    # missing: runc's words and exit status 255
    p = rune.run("exec", "--user", "1000", "--cwd", "/nonexistent", cid, "true")
    assert p.returncode == 255
    assert p.stderr.splitlines() == [
        'rune: exec failed: unable to start container process: '
        'chdir to cwd ("/nonexistent") set in config.json failed: no such file or directory']


def test_cwd_in_a_user_namespace_as_runc(rune, cid):  # type: ignore[no-untyped-def]
    """Where container root has no DAC override (inodes whose owner is not mapped): /noroot (host root,
    0700) is out of everyone's reach, /useronly (the container user's, group unmapped) only the user's.
    runc: the first chdir fails with EACCES, the one after the user switch decides."""
    import shutil
    import tempfile

    from inclavare.testing.bundle import make_bundle as mk

    top = Path(tempfile.mkdtemp(prefix="rune-userns-", dir="/tmp"))
    try:
        top.chmod(0o755)  # a user namespace needs every path component searchable
        b = mk(str(top / "bundle"), ["sh", "-c", "pwd; sleep 120"])
        cfg_path = Path(b, "config.json")
        cfg = json.loads(cfg_path.read_text())
        cfg["linux"]["namespaces"].append({"type": "user"})
        cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        cfg["process"]["user"] = {"uid": 1000, "gid": 1000}
        cfg["process"]["cwd"] = "/useronly"
        cfg_path.write_text(json.dumps(cfg))
        for name, owner in (("noroot", (0, 0)), ("useronly", (101000, 0))):
            d = Path(b, "rootfs", name)
            d.mkdir(mode=0o700)
            os.chown(d, *owner)
        out = top / "out"
        with open(out, "w") as f:
            p = subprocess.run(rune.cmd("run", "-d", "--bundle", b, cid), stdin=subprocess.DEVNULL, stdout=f,
                               stderr=subprocess.STDOUT, timeout=60)
        assert p.returncode == 0, out.read_text()
        p = rune.run("exec", cid, "pwd")
        assert p.returncode == 0 and p.stdout == "/useronly\n", p.stderr
        for user in (["--user", "1000"], []):  # container root is refused there too
            p = rune.run("exec", *user, "--cwd", "/noroot", cid, "pwd")
            assert p.returncode == 255, p
            assert p.stderr.splitlines() == [
                'rune: exec failed: unable to start container process: '
                'chdir to cwd ("/noroot") set in config.json failed: permission denied'], p.stderr
    finally:
        rune.run("delete", "--force", cid)
        shutil.rmtree(top, ignore_errors=True)
