"""process.* settings of real rune containers: user, cwd, env, rlimits, capabilities, seccomp, fds."""

from __future__ import annotations

import os
import subprocess
import tempfile

import pytest

from tests.conftest import needs_busybox, needs_root, ok
from tests.conftest import run_script as run

pytestmark = [pytest.mark.root, needs_root, needs_busybox]

CAP_NUMBERS = {
    "CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_DAC_READ_SEARCH": 2, "CAP_FOWNER": 3, "CAP_FSETID": 4,
    "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_LINUX_IMMUTABLE": 9,
    "CAP_NET_BIND_SERVICE": 10, "CAP_NET_BROADCAST": 11, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13,
    "CAP_IPC_LOCK": 14, "CAP_IPC_OWNER": 15, "CAP_SYS_MODULE": 16, "CAP_SYS_RAWIO": 17, "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19, "CAP_SYS_PACCT": 20, "CAP_SYS_ADMIN": 21, "CAP_SYS_BOOT": 22, "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24, "CAP_SYS_TIME": 25, "CAP_SYS_TTY_CONFIG": 26, "CAP_MKNOD": 27, "CAP_LEASE": 28,
    "CAP_AUDIT_WRITE": 29, "CAP_AUDIT_CONTROL": 30, "CAP_SETFCAP": 31,
}


def mask(names) -> int:  # type: ignore[no-untyped-def]
    m = 0
    for n in names:
        m |= 1 << CAP_NUMBERS[n]
    return m


def status_fields(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition(":")
        if sep:
            out[k.strip()] = v.strip()
    return out


# ------------------------------------------------------------------------------ user, cwd, env

def test_user_uid_gid_additional_gids_umask(rune, cid, make_bundle):
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["process"]["user"] = {"uid": 1000, "gid": 1001, "additionalGids": [10, 20], "umask": 0o027}

    out = ok(run(rune, cid, make_bundle,
                 "id -u; id -g; grep -E '^(Uid|Gid|Groups):' /proc/self/status; umask",
                 edit=edit, writable_rootfs=False))
    lines = out.splitlines()
    assert lines[0] == "1000" and lines[1] == "1001"
    st = status_fields("\n".join(lines[2:5]))
    assert st["Uid"].split() == ["1000"] * 4
    assert st["Gid"].split() == ["1001"] * 4
    assert sorted(int(g) for g in st["Groups"].split()) == [10, 20]
    assert lines[5] == "0027"


def test_umask_applies_to_new_files(rune, cid, make_bundle):
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["process"]["user"]["umask"] = 0o077
        cfg["mounts"].append({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777"]})

    out = ok(run(rune, cid, make_bundle, "touch /scratch/f; mkdir /scratch/d; stat -c %a /scratch/f /scratch/d",
                 edit=edit))
    assert out.split() == ["600", "700"]


def test_default_umask_is_0022(rune, cid, make_bundle):
    assert ok(run(rune, cid, make_bundle, "umask")) == "0022\n"


def test_cwd(rune, cid, make_bundle):
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["process"]["cwd"] = "/etc"

    assert ok(run(rune, cid, make_bundle, "pwd; cat hostname", edit=edit)).splitlines() == ["/etc", "runc"]


def test_env_and_home_from_passwd(rune, cid, make_bundle):
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["process"]["env"] = ["PATH=/bin:/usr/bin", "FOO=bar baz", "EMPTY="]

    out = ok(run(rune, cid, make_bundle, "echo \"$FOO\"; echo \"[$EMPTY]\"; echo $HOME; echo $PATH", edit=edit))
    assert out.splitlines() == ["bar baz", "[]", "/root", "/bin:/usr/bin"]


def test_home_for_non_root_user_and_explicit_home(rune, cid, make_bundle):
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["process"]["user"] = {"uid": 65534, "gid": 65534}

    assert ok(run(rune, cid, make_bundle, "echo $HOME", edit=edit)) == "/nonexistent\n"

    def edit2(cfg):  # type: ignore[no-untyped-def]
        cfg["process"]["env"].append("HOME=/custom")

    assert ok(run(rune, cid + "-2", make_bundle, "echo $HOME", edit=edit2)) == "/custom\n"


# ------------------------------------------------------------------------------ rlimits

def test_rlimits(rune, cid, make_bundle):
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["process"]["rlimits"] = [
            {"type": "RLIMIT_NOFILE", "soft": 256, "hard": 512},
            {"type": "RLIMIT_CORE", "soft": 0, "hard": 4096},
            {"type": "RLIMIT_NPROC", "soft": 300, "hard": 400},
        ]

    out = ok(run(rune, cid, make_bundle, "ulimit -n; ulimit -Hn; grep -E '^Max (open files|core file size|processes)' "
                 "/proc/self/limits", edit=edit))
    lines = out.splitlines()
    assert lines[:2] == ["256", "512"]
    limits = {" ".join(x.split()[:-3]): x.split()[-3:-1] for x in lines[2:]}
    assert limits["Max open files"] == ["256", "512"]
    assert limits["Max core file size"] == ["0", "4096"]
    assert limits["Max processes"] == ["300", "400"]


# ------------------------------------------------------------------------------ capabilities

CAPS = {
    "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW", "CAP_NET_ADMIN", "CAP_SETUID"],
    "effective": ["CAP_CHOWN", "CAP_KILL"],
    "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"],
    "inheritable": ["CAP_CHOWN", "CAP_NET_RAW"],
    "ambient": ["CAP_NET_RAW"],
}


def _caps_run(rune, cid, make_bundle, user=None, nnp=False):  # type: ignore[no-untyped-def]
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["process"]["capabilities"] = {k: list(v) for k, v in CAPS.items()}
        cfg["process"]["noNewPrivileges"] = nnp
        if user is not None:
            cfg["process"]["user"] = user

    out = ok(run(rune, cid, make_bundle, "grep ^Cap /proc/self/status", edit=edit))
    return {k: int(v, 16) for k, v in status_fields(out).items()}


@pytest.mark.parametrize("nnp", [False, True])
def test_capability_sets_for_root(rune, cid, make_bundle, nnp):
    caps = _caps_run(rune, cid, make_bundle, nnp=nnp)
    assert caps["CapBnd"] == mask(CAPS["bounding"])
    assert caps["CapInh"] == mask(CAPS["inheritable"])
    assert caps["CapAmb"] == mask(CAPS["ambient"])
    # root's execve: P'(permitted) = P(inheritable) | P(bounding) | P'(ambient), effective = permitted;
    # with no_new_privs the kernel caps that at the permitted set the runtime configured before execve
    gained = mask(CAPS["bounding"]) | mask(CAPS["inheritable"]) | mask(CAPS["ambient"])
    want = gained & mask(CAPS["permitted"]) if nnp else gained
    assert caps["CapPrm"] == want
    assert caps["CapEff"] == want


@pytest.mark.parametrize("nnp", [False, True])
def test_capability_sets_for_non_root(rune, cid, make_bundle, nnp):
    caps = _caps_run(rune, cid, make_bundle, user={"uid": 1000, "gid": 1000}, nnp=nnp)
    assert caps["CapBnd"] == mask(CAPS["bounding"])
    assert caps["CapInh"] == mask(CAPS["inheritable"])
    assert caps["CapAmb"] == mask(CAPS["ambient"])
    # a non-root execve of a file without capabilities keeps only the ambient set
    assert caps["CapPrm"] == mask(CAPS["ambient"])
    assert caps["CapEff"] == mask(CAPS["ambient"])


def test_default_capabilities(rune, cid, make_bundle):
    out = ok(run(rune, cid, make_bundle, "grep ^Cap /proc/self/status"))
    caps = {k: int(v, 16) for k, v in status_fields(out).items()}
    default = mask(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"])
    assert caps["CapBnd"] == caps["CapEff"] == caps["CapPrm"] == default
    assert caps["CapInh"] == 0 and caps["CapAmb"] == 0


def test_dropped_capability_is_enforced(rune, cid, make_bundle):
    # CAP_CHOWN is not in the default set: chown of a file we do not own fails even as root
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["mounts"].append({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777"]})

    p = run(rune, cid, make_bundle, "touch /scratch/f; chown 1234 /scratch/f; echo rc=$?", edit=edit)
    assert ok(p).strip() == "rc=1"
    assert "Operation not permitted" in p.stderr


# ------------------------------------------------------------------------------ misc process settings

def test_no_new_privileges(rune, cid, make_bundle):
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["process"]["noNewPrivileges"] = True

    assert "NoNewPrivs:\t1" in ok(run(rune, cid, make_bundle, "grep NoNewPrivs /proc/self/status", edit=edit))

    def edit0(cfg):  # type: ignore[no-untyped-def]
        cfg["process"]["noNewPrivileges"] = False

    assert "NoNewPrivs:\t0" in ok(run(rune, cid + "-2", make_bundle, "grep NoNewPrivs /proc/self/status", edit=edit0))


def test_oom_score_adj(rune, cid, make_bundle):
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["process"]["oomScoreAdj"] = 617

    assert ok(run(rune, cid, make_bundle, "cat /proc/self/oom_score_adj", edit=edit)) == "617\n"


def test_sysctl(rune, cid, make_bundle):
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.msgmax": "4096"}

    host_fwd = open("/proc/sys/net/ipv4/ip_forward").read()
    host_msgmax = open("/proc/sys/kernel/msgmax").read()
    out = ok(run(rune, cid, make_bundle, "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/msgmax", edit=edit))
    assert out.split() == ["1", "4096"]
    # the host's values are untouched (new net and ipc namespaces)
    assert open("/proc/sys/net/ipv4/ip_forward").read() == host_fwd
    assert open("/proc/sys/kernel/msgmax").read() == host_msgmax


# ------------------------------------------------------------------------------ seccomp

def _seccomp(action: str, names: list[str], **extra: object) -> dict:
    rule: dict = {"names": names, "action": action}
    rule.update(extra)
    return {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [rule]}


def test_seccomp_errno(rune, cid, make_bundle):
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["linux"]["seccomp"] = _seccomp("SCMP_ACT_ERRNO", ["mkdir", "mkdirat"], errnoRet=38)
        cfg["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777"]})

    p = run(rune, cid, make_bundle, "mkdir /tmp/x; echo rc=$?; touch /tmp/y && echo touched; "
            "grep ^Seccomp: /proc/self/status", edit=edit)
    lines = ok(p).splitlines()
    assert lines[0] == "rc=1"
    assert "Function not implemented" in p.stderr
    assert lines[1] == "touched"
    assert lines[2].split() == ["Seccomp:", "2"]


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS"])
def test_seccomp_kill(rune, cid, make_bundle, action):
    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["linux"]["seccomp"] = _seccomp(action, ["mkdir", "mkdirat"])
        cfg["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777"]})
        cfg["process"]["rlimits"] = [{"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
                                     {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1024}]

    b = make_bundle(["mkdir", "/tmp/x"], edit=edit)
    p = rune.run("run", "--bundle", b, cid)
    assert p.returncode == 128 + 31, p.stderr


def test_no_seccomp_by_default(rune, cid, make_bundle):
    assert ok(run(rune, cid, make_bundle, "grep ^Seccomp: /proc/self/status")).split() == ["Seccomp:", "0"]


# ------------------------------------------------------------------------------ preserve-fds

def test_preserve_fds(rune, cid, make_bundle, tmp_path):
    data = tmp_path / "payload"
    data.write_text("passed through fd 3\n")
    b = make_bundle(["sh", "-c", "cat /proc/self/fd/3; test -e /proc/self/fd/4 && echo fd4-leaked; true"])
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        rc = subprocess.run(["/bin/sh", "-c", 'exec "$@" 3<"$PAYLOAD" 4<"$PAYLOAD"', "sh",
                             *rune.cmd("run", "--preserve-fds", "1", "--bundle", b, cid)],
                            env={**os.environ, "PAYLOAD": str(data)}, stdin=subprocess.DEVNULL,
                            stdout=out, stderr=err, timeout=60).returncode
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    assert rc == 0, stderr
    assert stdout == "passed through fd 3\n"


def test_extra_fds_not_leaked_without_preserve(rune, cid, make_bundle, tmp_path):
    data = tmp_path / "payload"
    data.write_text("secret\n")
    b = make_bundle(["sh", "-c", "ls /proc/self/fd | sort -n | tr '\\n' ' '"])
    with tempfile.TemporaryFile() as out:
        rc = subprocess.run(["/bin/sh", "-c", 'exec "$@" 3<"$PAYLOAD"', "sh", *rune.cmd("run", "--bundle", b, cid)],
                            env={**os.environ, "PAYLOAD": str(data)}, stdin=subprocess.DEVNULL,
                            stdout=out, stderr=subprocess.DEVNULL, timeout=60).returncode
        out.seek(0)
        fds = out.read().decode().split()
    assert rc == 0
    # 0-2 and the fd ls opens for the directory listing (3); nothing else
    assert fds[:3] == ["0", "1", "2"] and len(fds) <= 4


def test_seccomp_notify_fd_reaches_the_listener_during_create(rune, cid, make_bundle, tmp_path):
    """SCMP_ACT_NOTIFY: `create` hands the notify fd and the container process state to listenerPath."""
    import json as _json
    import socket
    import threading

    sock_path = str(tmp_path / "listener.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(sock_path)
    server.listen(1)
    got: dict = {}

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 4)
            got["msg"] = _json.loads(data)
            got["fd_target"] = os.readlink(f"/proc/self/fd/{fds[0]}") if fds else None
            for fd in fds:
                os.close(fd)

    t = threading.Thread(target=serve, daemon=True)
    t.start()

    def edit(cfg):  # type: ignore[no-untyped-def]
        cfg["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": sock_path,
            "listenerMetadata": "hello-agent",
            "syscalls": [{"names": ["mkdirat"], "action": "SCMP_ACT_NOTIFY"}],
        }

    b = make_bundle(["sleep", "30"], edit=edit)
    rune.run("create", "--bundle", b, cid, check=True)
    t.join(10)
    server.close()
    pid = rune.state(cid)["pid"]
    assert got["msg"]["fds"] == ["seccompFd"]
    assert got["msg"]["pid"] == pid
    assert got["msg"]["metadata"] == "hello-agent"
    assert got["msg"]["state"]["id"] == cid
    assert got["fd_target"] == "anon_inode:seccomp notify"
