"""`containerd-shim-rune-v2`: the binary containerd runs for ``runtime_type = "io.containerd.rune.v2"``.

containerd runs it twice per container, always with ``-namespace NS -address SOCK -publish-binary BIN -id ID``
(Go ``flag`` syntax, one dash) and the bundle as working directory:

- ``start``: print the ttrpc address of the shim that will serve this container, ``unix:///run/containerd/s/<
  sha256(address/namespace/group)>`` as containerd's own shims compute it, and nothing on stderr (containerd
  reads both together). The group is the pod (annotation ``io.kubernetes.cri.sandbox-id``, or
  ``io.containerd.runc.v2.group``) or else the container: a ``start`` whose group already has a live shim
  prints that shim's address. Otherwise this process binds the socket, forks the resident shim (its own
  session, stdio on /dev/null, listening on the inherited socket), writes ``address`` into the bundle and
  prints the address. The resident shim comes from the shim template when one is warm (a process that has
  imported everything a shim needs and forks shims on request; see inclavare.shim.template), else this
  process forks it (nothing here has started a thread, so the fork is safe; the resident shim forks its fork
  server before starting any) and execs a template for the next start. With ``Options.ShimCgroup`` the new
  shim joins that cgroup before it forks anything, and ``start`` fails (the shim gone, its socket removed)
  when it cannot, as runc's shim does (see inclavare.shim.shimcgroup).
- ``delete``: after the shim went away (containerd runs it whenever its connection to a task's shim
  closes): force-delete the container through the runtime library if its state is still there, unmount
  ``BUNDLE/rootfs``, drop a dead shim's socket, and write a ``DeleteResponse`` on stdout: the one the shim
  left in the bundle when it deleted the container (the real exit), else exit 137 and now, as runc's shim.

State root: ``Options.Root`` (the runc options, on start's stdin) or ``/run/containerd/rune``, then the
namespace, as runc's shim does with ``/run/containerd/runc``; ``$RUNE_SHIM_ROOT`` replaces the default.
``rune --root /run/containerd/rune/NS list`` sees the shim's containers.

Imports stay light until the resident shim needs the runtime: ``delete`` runs once per container. (``os`` is
imported anyway: protobuf, which both actions need, imports it.)
"""

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PROG = "containerd-shim-rune-v2"
RUNTIME_ID = "io.containerd.rune.v2"
DEFAULT_ROOT = "/run/containerd/rune"
SOCKET_DIR = "/run/containerd/s"  # containerd's shims' socket directory (defaults.DefaultStateDir + "/s")
ROOT_FILE = "rune-root"  # in the bundle: the state root the container was made under, for `delete`
DELETED_FILE = "rune-deleted"  # in the bundle: written by the shim at Task.Delete (service.write_deleted)
GROUP_ANNOTATIONS = ("io.kubernetes.cri.sandbox-id", "io.containerd.runc.v2.group")
SOCKET_PATH_LIMIT = 106

# Go flag names of containerd 1.6's shim.go: name -> takes a value
FLAGS = {"debug": False, "v": False, "namespace": True, "id": True, "socket": True, "bundle": True,
         "address": True, "publish-binary": True}


class FlagError(Exception):
    """Bad command line, worded as Go's flag package words it."""


def parse_flags(argv: "list[str]") -> "dict[str, Any]":
    """Go ``flag`` parsing: ``-name value``, ``-name=value``, ``--name`` too; booleans take no separate value
    (``-debug`` or ``-debug=false``); parsing stops at the first argument that is not a flag, or after ``--``.
    Returns the flags by name plus ``action`` (the first argument left, or "")."""
    out: dict[str, Any] = {"debug": False, "v": False, "namespace": "", "id": "", "socket": "", "bundle": "",
                           "address": "", "publish-binary": "", "action": ""}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            i += 1
            break
        if len(a) < 2 or a[0] != "-":
            break
        name = a[2:] if a.startswith("--") else a[1:]
        value: str | None = None
        if "=" in name:
            name, value = name.split("=", 1)
        if name in ("h", "help"):
            raise FlagError("help")
        if not name or name.startswith("-") or name not in FLAGS:
            raise FlagError(f"flag provided but not defined: -{name}")
        if FLAGS[name]:
            if value is None:
                if i + 1 >= len(argv):
                    raise FlagError(f"flag needs an argument: -{name}")
                i += 1
                value = argv[i]
            out[name] = value
        else:
            if value is None or value.lower() in ("1", "t", "true"):
                out[name] = True
            elif value.lower() in ("0", "f", "false"):
                out[name] = False
            else:
                raise FlagError(f'invalid boolean value "{value}" for -{name}: parse error')
        i += 1
    rest = argv[i:]
    out["action"] = rest[0] if rest else ""
    return out


def _clean_join(*parts: str) -> str:
    """Go's filepath.Join: empty elements dropped, the result cleaned (no //, ., ..)."""
    import posixpath

    joined = "/".join(p for p in parts if p)
    if not joined:
        return ""
    cleaned = posixpath.normpath(joined)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("/") else cleaned


def socket_address(address: str, namespace: str, group: str) -> str:
    """containerd 1.6's shim.SocketAddress: unix:///run/containerd/s/<hex sha256 of address/namespace/group>."""
    from _sha256 import sha256  # hashlib's OpenSSL loading costs ~5 ms; start runs once per container

    digest = sha256(_clean_join(address, namespace, group).encode()).hexdigest()
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


def default_root() -> str:
    return os.environ.get("RUNE_SHIM_ROOT") or DEFAULT_ROOT


def _write_file(path: str, text: str) -> None:
    """Atomically (temp + rename), mode 0600."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.rename(tmp, path)


def _can_connect(path: str) -> bool:
    import _socket  # the C module: `socket` pulls in enum (~5 ms)

    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    s.settimeout(1.0)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def _listen(path: str) -> "Any":
    """A listening socket on ``path``, or None when a live shim already serves it (a stale one is replaced)."""
    import _socket
    import errno

    if len(path) > SOCKET_PATH_LIMIT:
        raise OSError(f"{path!r}: unix socket path too long (> {SOCKET_PATH_LIMIT})")
    os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
    for _ in range(2):
        s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            s.bind(path)
        except OSError as e:
            s.close()
            if e.errno != errno.EADDRINUSE:
                raise
            if _can_connect(path):
                return None
            os.unlink(path)  # left by a shim that died
            continue
        finally:
            os.umask(old)
        s.listen(128)
        return s
    raise OSError(f"{path}: address in use")


def _read_options(data: bytes) -> "Any":
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


def _options_from_stdin(namespace: str) -> "tuple[str, str]":
    """The state root and the ShimCgroup from start's stdin options; protobuf is loaded only when there are
    options to read."""
    data = sys.stdin.buffer.read()
    if not data:
        return os.path.join(default_root(), namespace), ""
    from inclavare.errors import ShimError
    from inclavare.shim.service import state_root

    try:
        opts = _read_options(data)
    except ShimError as e:
        raise ValueError(str(e)) from None
    if opts.shim_cgroup:
        from inclavare.errors import CgroupError
        from inclavare.shim.shimcgroup import check_path

        try:
            check_path(opts.shim_cgroup)
        except CgroupError as e:
            raise ValueError(f"runtime options: {e}") from None
    return state_root(opts, namespace, default_root()), opts.shim_cgroup


def _shim_failed(path: str, pid: int, why: str) -> "ValueError":
    """A shim that could not join its ShimCgroup (it exits by itself): reap it, drop its socket, and the error
    start reports (runc's shim kills the shim and removes the socket likewise)."""
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    try:
        os.unlink(path)
    except OSError:
        pass
    return ValueError(why)


def cmd_start(flags: "dict[str, Any]") -> int:
    ns, cid = flags["namespace"], flags["id"]
    if not cid:
        raise ValueError("start: -id is required")
    bundle = flags["bundle"] or os.getcwd()
    address = socket_address(flags["address"], ns, group_of(bundle, cid))
    path = address[len("unix://"):]
    root, shim_cgroup = _options_from_stdin(ns)
    _write_file(os.path.join(bundle, ROOT_FILE), root)
    sock = _listen(path)
    if sock is None:  # the group's shim is alive: it serves this container too
        _write_file(os.path.join(bundle, "address"), address)
        sys.stdout.write(address)
        return 0
    from inclavare.shim import template

    use_template = template.enabled() and os.path.basename(sys.argv[0]).startswith(PROG)
    try:
        _write_file(os.path.join(bundle, "address"), address)
        if use_template:
            tpath = template.template_path(SOCKET_DIR, flags["address"], sys.argv[0])
            env = {k: os.environ[k] for k in ("TTRPC_ADDRESS", "GRPC_ADDRESS", "NAMESPACE") if k in os.environ}
            pid = template.spawn(tpath, sock.fileno(), {"path": path, "namespace": ns, "root": root, "bundle": bundle,
                                               "debug": bool(flags["debug"]), "env": env,
                                               "cgroup": shim_cgroup})
            if pid is not None:
                sock.close()
                _adjust_oom_score(pid)
                sys.stdout.write(address)
                return 0
        sys.stdout.flush()
        sys.stderr.flush()
        report_r, report_w = os.pipe() if shim_cgroup else (-1, -1)
        pid = os.fork()
    except BaseException:
        sock.close()
        os.unlink(path)
        raise
    if pid == 0:  # the resident shim
        code = 1
        try:
            os.setsid()
            null = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            if null > 2:
                os.close(null)
            if shim_cgroup:  # before anything is forked: all the shim's processes are to be in it
                from inclavare.shim.shimcgroup import join_and_report

                os.close(report_r)
                if not join_and_report(shim_cgroup, report_w):
                    os._exit(1)
            import socket

            from inclavare.shim.resident import serve

            code = serve(socket.socket(fileno=sock.detach()), path, ns, root, bundle, bool(flags["debug"]))
        finally:
            os._exit(code)
    sock.close()
    if shim_cgroup:
        from inclavare.shim.shimcgroup import await_report

        os.close(report_w)
        why = await_report(report_r)
        if why:
            raise _shim_failed(path, pid, why)
    _adjust_oom_score(pid)
    sys.stdout.write(address)
    if use_template:  # a warm template for the next start
        sys.stdout.flush()
        template.start_template(sys.argv[0], ns, flags["address"])
    return 0


def cmd_template(flags: "dict[str, Any]") -> int:
    """Serve as the shim template for this containerd (see inclavare.shim.template)."""
    from inclavare.shim import template

    return template.run(template.template_path(SOCKET_DIR, flags["address"], sys.argv[0]), flags["address"])


def _adjust_oom_score(pid: int) -> None:
    """As containerd's shims: the shim one step more killable than containerd (our parent)."""
    try:
        with open(f"/proc/{os.getppid()}/oom_score_adj") as f:
            score = min(int(f.read().strip()) + 1, 1000)
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write(str(score))
    except (OSError, ValueError):
        pass


def _unescape(field: str) -> str:
    """mountinfo's octal escapes (\\040 for a space) decoded, without importing re."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        c = field[i]
        digits = field[i + 1:i + 4]
        if c == "\\" and len(digits) == 3 and all(d in "01234567" for d in digits):
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _is_mount_point(path: str) -> bool:
    """Whether mountinfo lists ``path`` as a mount point (a text scan: no ctypes, no runtime import)."""
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        fields = line.split(" ", 5)
        if len(fields) > 4 and _unescape(fields[4]) == real:
            return True
    return False


def cmd_delete(flags: "dict[str, Any]") -> int:
    """Clean up after a container whose shim is gone; warnings on stderr, the DeleteResponse always: the one
    the shim left in the bundle when it deleted the container, else exit 137 now (as runc's shim)."""
    cid = flags["id"]
    bundle = flags["bundle"] or os.getcwd()
    _drop_dead_socket(bundle, flags)
    try:
        with open(os.path.join(bundle, DELETED_FILE), "rb") as f:
            deleted = f.read()
    except OSError:
        deleted = None
    state_gone = True
    try:
        with open(os.path.join(bundle, ROOT_FILE)) as f:
            root = f.read().strip()
    except OSError:
        root = os.path.join(default_root(), flags["namespace"])
    pid = 0
    if cid and os.path.isdir(os.path.join(root, cid)):
        state_gone = False
        try:
            from inclavare.runtime.container import Runtime

            rt = Runtime(root)
            try:
                pid = int(rt.load(cid)[0].pid or 0)
            except Exception:  # noqa: BLE001 - a damaged state is still deleted below
                pid = 0
            rt.delete(cid, force=True)
        except Exception as e:  # noqa: BLE001 - as runc's shim: warn and go on
            sys.stderr.write(f"{PROG}: delete {cid}: {e}\n")
    rootfs = os.path.join(bundle, "rootfs")
    if _is_mount_point(rootfs):
        try:
            from inclavare.shim.rootfs import unmount_all

            unmount_all(rootfs)
        except Exception as e:  # noqa: BLE001
            sys.stderr.write(f"{PROG}: unmounting {rootfs}: {e}\n")
    if deleted is not None and state_gone:
        # the shim deleted the container and left its DeleteResponse (serialized by protobuf) here
        sys.stdout.buffer.write(deleted)
        sys.stdout.flush()
        return 0
    import time

    from google.protobuf import timestamp_pb2

    from inclavare.shim.proto.task import shim_pb2

    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(time.time_ns())
    sys.stdout.buffer.write(shim_pb2.DeleteResponse(pid=pid, exit_status=128 + 9, exited_at=ts).SerializeToString())
    sys.stdout.flush()
    return 0


def _drop_dead_socket(bundle: str, flags: "dict[str, Any]") -> None:
    """Remove the shim's socket when nothing answers on it (its shim died); a live group shim's socket stays,
    and nothing outside containerd's socket directory is touched. The socket is the one BUNDLE/address names,
    else the one ``start`` would compute (the bundle may be half gone: containerd deletes it concurrently)."""
    try:
        with open(os.path.join(bundle, "address")) as f:
            address = f.read().strip()
    except OSError:
        address = socket_address(flags["address"], flags["namespace"], group_of(bundle, flags["id"]))
    sock = address[len("unix://"):] if address.startswith("unix://") else ""
    if sock.startswith(SOCKET_DIR + "/") and os.path.exists(sock) and not _can_connect(sock):
        try:
            os.unlink(sock)
        except OSError:
            pass


def cmd_serve(flags: "dict[str, Any]") -> int:
    """No action: serve as the resident shim on ``-socket`` or on fd 3 (how Go shims hand the socket over)."""
    import socket

    from inclavare.shim.resident import serve

    ns = flags["namespace"]
    bundle = flags["bundle"] or os.getcwd()
    if flags["socket"]:
        path = flags["socket"][len("unix://"):] if flags["socket"].startswith("unix://") else flags["socket"]
        raw = _listen(path)
        if raw is None:
            raise ValueError(f"{path}: a shim already serves this socket")
        sock = socket.socket(fileno=raw.detach())
    else:
        sock = socket.socket(fileno=3)
        path = ""
    try:
        with open(os.path.join(bundle, ROOT_FILE)) as f:
            root = f.read().strip()
    except OSError:
        root = os.path.join(default_root(), ns)
    return serve(sock, path, ns, root, bundle, bool(flags["debug"]))


def main(argv: "list[str] | None" = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        flags = parse_flags(args)
    except FlagError as e:
        if str(e) == "help":
            sys.stderr.write(f"Usage of {PROG}: -namespace NS -address SOCK -publish-binary BIN -id ID "
                             "[-bundle DIR] [-socket PATH] [-debug] start|delete\n")
            return 0
        sys.stderr.write(f"{e}\nUsage of {PROG}: -namespace NS -address SOCK -id ID [-debug] start|delete\n")
        return 2
    if flags["v"]:
        from inclavare import __version__

        sys.stdout.write(f"{PROG}:\n  Version:  {__version__}\n  Runtime:  {RUNTIME_ID}\n\n")
        return 0
    if not flags["namespace"]:
        sys.stderr.write(f"{RUNTIME_ID}: shim namespace cannot be empty")
        return 1
    action = flags["action"]
    commands = {"start": cmd_start, "delete": cmd_delete, "template": cmd_template, "": cmd_serve}
    if action not in commands:
        sys.stderr.write(f"{RUNTIME_ID}: unknown action {action!r} (start, delete)")
        return 1
    try:
        return commands[action](flags)
    except (OSError, ValueError) as e:
        sys.stderr.write(f"{RUNTIME_ID}: {e}")
        return 1
    except Exception as e:  # noqa: BLE001 - one line, never a traceback, for containerd's log
        sys.stderr.write(f"{RUNTIME_ID}: {type(e).__name__}: {e}")
        return 1


def entry() -> None:
    sys.exit(main())
