"""What ``containerd-shim-rune-v2 start`` does, in whichever process does it: the start process itself, or the
shim template on its behalf (see inclavare.shim.template; the start process then only forwards its request).

Given the container's bundle and the runc options containerd wrote on start's stdin: find the container's group
(the pod), compute the group shim's socket as containerd's own shims do, and either find that shim alive or bind
its socket and fork a new resident shim onto it; write ``address`` and ``rune-root`` into the bundle; answer the
``unix://`` address. Also the helpers ``delete`` shares (the address, the group, a dead socket's probe).

Imports stay light (C modules only at import time): the start process runs once per container, and ``json``,
``socket`` or ``hashlib`` would each cost milliseconds of its critical path. Protobuf is imported only to read
options when there are some (the template has it loaded already).
"""

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Launch = Callable[[Any, str, str, str, str, bool, "dict[str, str]"], "int | None"]

DEFAULT_ROOT = "/run/containerd/rune"
SOCKET_DIR = "/run/containerd/s"  # containerd's shims' socket directory (defaults.DefaultStateDir + "/s")
ROOT_FILE = "rune-root"  # in the bundle: the state root the container was made under, for `delete`
GROUP_ANNOTATIONS = ("io.kubernetes.cri.sandbox-id", "io.containerd.runc.v2.group")
SOCKET_PATH_LIMIT = 106


def clean_join(*parts: str) -> str:
    """Go's filepath.Join: empty elements dropped, the result cleaned (no //, ., ..)."""
    import posixpath

    joined = "/".join(p for p in parts if p)
    if not joined:
        return ""
    cleaned = posixpath.normpath(joined)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("/") else cleaned


def socket_address(address: str, namespace: str, group: str) -> str:
    """containerd 1.6's shim.SocketAddress: unix:///run/containerd/s/<hex sha256 of address/namespace/group>."""
    from _sha256 import sha256  # hashlib's OpenSSL loading costs ~5 ms

    digest = sha256(clean_join(address, namespace, group).encode()).hexdigest()
    return f"unix://{SOCKET_DIR}/{digest}"


def group_of(bundle: str, cid: str) -> str:
    """The shim group of a container: its pod's sandbox id, or the runc v2 group annotation, or its own id."""
    from inclavare.formats import fastjson as json

    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            config = json.loads(f.read())
    except (OSError, ValueError):
        return cid
    annotations = config.get("annotations") if isinstance(config, dict) else None
    if isinstance(annotations, dict):
        for key in GROUP_ANNOTATIONS:
            value = annotations.get(key)
            if isinstance(value, str) and value:
                return value
    return cid


def default_root(env: "Any" = None) -> str:
    """The state root's default: $RUNE_SHIM_ROOT (from ``env``, else this process's), else /run/containerd/rune."""
    return (os.environ if env is None else env).get("RUNE_SHIM_ROOT") or DEFAULT_ROOT


def write_file(path: str, text: str) -> None:
    """Atomically (temp + rename), mode 0600."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.rename(tmp, path)


PF_EXITING = 0x4  # /proc/PID/stat flags: the process is exiting
RESET_WAIT = 0.05  # seconds a connection to a listener whose process is gone waits to be reset


def _dying(pid: int) -> "bool | None":
    """Whether process ``pid`` is dead or on its way out (zombie, or exiting); None when there is no such
    process at all."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    try:
        return fields[0] in (b"Z", b"X") or bool(int(fields[6]) & PF_EXITING)
    except (IndexError, ValueError):
        return None


def serves(path: str, kind: int = 1) -> bool:
    """Whether a live process serves the unix socket ``path`` (``kind``: a socket type, default SOCK_STREAM).

    Connecting is not enough: a killed server's listening socket is released after its connections (the
    kernel closes its files in order and releases them last first), so for a moment after containerd saw the
    shim hang up, connections are still accepted. The process that last called listen() on the socket (its
    SO_PEERCRED; the resident shim listens again when it starts serving) must be alive and not exiting. When
    that process is gone (the ``start`` that bound the socket for a shim that has not begun to serve yet), the
    connection is live if nothing resets it within RESET_WAIT."""
    import _socket  # the C module: `socket` pulls in enum (~5 ms)

    s = _socket.socket(_socket.AF_UNIX, kind | _socket.SOCK_CLOEXEC)
    s.settimeout(1.0)
    try:
        s.connect(path)
        cred = s.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
        dying = _dying(int.from_bytes(cred[:4], sys.byteorder, signed=True))
        if dying is not None:
            return not dying
        s.settimeout(RESET_WAIT)
        try:
            s.recv(1)  # nothing is ever sent first: data or EOF means no server, reset means a dead listener
        except TimeoutError:
            return True
        return False
    except OSError:
        return False
    finally:
        s.close()


def bind_unix(path: str, kind: int = 1, backlog: int = 128) -> "Any":
    """A listening unix socket (a ``_socket.socket``) on ``path``, mode 0600, or None when a live server already
    has it; a socket file nobody answers on (left by a process that died) is replaced."""
    import _socket
    import errno

    if len(path) > SOCKET_PATH_LIMIT:
        raise OSError(f"{path!r}: unix socket path too long (> {SOCKET_PATH_LIMIT})")
    os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
    for _ in range(2):
        s = _socket.socket(_socket.AF_UNIX, kind | _socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            s.bind(path)
        except OSError as e:
            s.close()
            if e.errno != errno.EADDRINUSE:
                raise
            if serves(path, kind):
                return None
            os.unlink(path)
            continue
        finally:
            os.umask(old)
        s.listen(backlog)
        return s
    raise OSError(f"{path}: address in use")


def read_options(data: bytes) -> "Any":
    """The runc Options from start's stdin (an Any, possibly empty)."""
    from google.protobuf import any_pb2
    from google.protobuf.message import DecodeError

    from inclavare.shim.service import parse_options

    value = any_pb2.Any()
    if data:
        try:
            value.ParseFromString(data)
        except DecodeError as e:
            raise ValueError(f"options on stdin: undecodable google.protobuf.Any: {e}") from None
    return parse_options(value)


def start_options(options: bytes, namespace: str, default: str) -> "tuple[str, str]":
    """From start's stdin options: the state root of the namespace (Options.Root, else ``default``) and the
    ShimCgroup to join ("" for none)."""
    if not options:
        return os.path.join(default, namespace), ""
    from inclavare.errors import CgroupError, ShimError
    from inclavare.shim.service import state_root

    try:
        opts = read_options(options)
    except ShimError as e:
        raise ValueError(str(e)) from None
    if opts.shim_cgroup:
        from inclavare.shim.shimcgroup import check_path

        try:
            check_path(opts.shim_cgroup)
        except CgroupError as e:
            raise ValueError(f"runtime options: {e}") from None
    return state_root(opts, namespace, default), opts.shim_cgroup


def adjust_oom_score(pid: int, containerd_pid: int) -> None:
    """As containerd's shims: the shim one step more killable than containerd."""
    try:
        with open(f"/proc/{containerd_pid}/oom_score_adj") as f:
            score = min(int(f.read().strip()) + 1, 1000)
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write(str(score))
    except (OSError, ValueError):
        pass


def start(flags: "dict[str, Any]", bundle: str, options: bytes, env: "dict[str, str]", containerd_pid: int,
          in_child: "Callable[[], None]" = lambda: None, launch: "Launch | None" = None) -> "tuple[str, int, str]":
    """Do ``start`` for the container ``flags["id"]`` in ``bundle`` (``env``: the start process's environment,
    or the part of it a shim needs): (the group shim's address, the pid of the shim that serves it now or 0
    when the group's shim was alive, the state root). ``launch(sock, path, namespace, root, bundle, debug,
    env)`` may hand the listening socket to a shim that is ready (the template's spare) and return its pid; else
    a shim is forked:
    the child runs ``in_child()`` (to drop what it must not keep), then becomes the resident shim and never
    returns; the caller must be single-threaded (the child goes on in Python)."""
    ns, cid = flags["namespace"], flags["id"]
    if not cid:
        raise ValueError("start: -id is required")
    address = socket_address(flags["address"], ns, group_of(bundle, cid))
    path = address[len("unix://"):]
    root, shim_cgroup = start_options(options, ns, default_root(env))
    write_file(os.path.join(bundle, ROOT_FILE), root)
    sock = bind_unix(path)
    if sock is None:  # the group's shim is alive: it serves this container too
        write_file(os.path.join(bundle, "address"), address)
        return address, 0, root
    try:
        write_file(os.path.join(bundle, "address"), address)
        if launch is not None and not shim_cgroup:  # a ready shim has forked already: it cannot join one
            pid = launch(sock, path, ns, root, bundle, bool(flags["debug"]), env) or 0
            if pid:
                sock.close()
                adjust_oom_score(pid, containerd_pid)
                return address, pid, root
        report_r, report_w = os.pipe() if shim_cgroup else (-1, -1)
        pid = os.fork()
    except BaseException:
        sock.close()
        os.unlink(path)
        raise
    if pid == 0:  # the resident shim
        code = 1
        try:
            in_child()
            if shim_cgroup:  # before anything is forked: all the shim's processes are to be in it
                from inclavare.shim.shimcgroup import join_and_report

                os.close(report_r)
                if not join_and_report(shim_cgroup, report_w):
                    os._exit(1)
            code = become_shim(sock, path, ns, root, bundle, bool(flags["debug"]), env)
        finally:
            os._exit(code)
    sock.close()
    if shim_cgroup:
        from inclavare.shim.shimcgroup import await_report

        os.close(report_w)
        why = await_report(report_r)
        if why:  # the shim exits by itself; as runc's shim: no shim, no socket, one line
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            try:
                os.unlink(path)
            except OSError:
                pass
            raise ValueError(why)
    adjust_oom_score(pid, containerd_pid)
    return address, pid, root


def detach() -> None:
    """A session of its own, stdio on /dev/null: what a shim process does first (containerd reads start's
    output until every copy of it is closed)."""
    os.setsid()
    null = os.open("/dev/null", os.O_RDWR)
    for std in (0, 1, 2):
        os.dup2(null, std)
    if null > 2:
        os.close(null)


def become_shim(sock: "Any", path: str, namespace: str, root: str, bundle: str, debug: bool,
                env: "dict[str, str]") -> int:
    """In the child forked for it: detach (own session, stdio on /dev/null), take the start process's
    environment and the bundle as working directory, and serve on the listening ``sock`` until shut down."""
    import socket

    from inclavare.shim.resident import serve

    detach()
    os.environ.update(env)
    os.chdir(bundle)
    return serve(socket.socket(fileno=sock.detach()), path, namespace, root, bundle, debug)


def describe(e: BaseException) -> str:
    """The one line ``start`` reports for an error (OSError and ValueError speak for themselves)."""
    return str(e) if isinstance(e, (OSError, ValueError)) else f"{type(e).__name__}: {e}"
