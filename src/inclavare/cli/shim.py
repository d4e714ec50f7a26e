"""`containerd-shim-rune-v2`: the binary containerd runs for ``runtime_type = "io.containerd.rune.v2"``.

containerd runs it twice per container, always with ``-namespace NS -address SOCK -publish-binary BIN -id ID``
(Go ``flag`` syntax, one dash) and the bundle as working directory:

- ``start``: print the ttrpc address of the shim that will serve this container, ``unix:///run/containerd/s/<
  sha256(address/namespace/group)>`` as containerd's own shims compute it, and nothing on stderr (containerd
  reads both together). The group is the pod (annotation ``io.kubernetes.cri.sandbox-id``, or
  ``io.containerd.runc.v2.group``) or else the container: a ``start`` whose group already has a live shim
  prints that shim's address. Otherwise the socket is bound, the resident shim forked onto it (its own
  session, stdio on /dev/null), ``address`` written into the bundle and the address printed
  (inclavare.shim.startup). When the shim template is warm (a process that has imported everything a shim
  needs; see inclavare.shim.template) it does all that on this process's behalf, and this process only
  forwards the request and prints the answer; else this process does it (nothing here has started a thread,
  so its fork is safe; the resident shim forks its fork server before starting any) and execs a template for
  the next start. With ``Options.ShimCgroup`` the new shim joins that cgroup before it forks anything, and
  ``start`` fails (the shim gone, its socket removed) when it cannot, as runc's shim does (see
  inclavare.shim.shimcgroup).
- ``delete``: after the shim went away (containerd runs it whenever its connection to a task's shim
  closes): force-delete the container through the runtime library if its state is still there, unmount
  ``BUNDLE/rootfs``, drop a dead shim's socket, and write a ``DeleteResponse`` on stdout: the one the shim
  left in the bundle when it deleted the container (the real exit), else exit 137 and now, as runc's shim.

State root: ``Options.Root`` (the runc options, on start's stdin) or ``/run/containerd/rune``, then the
namespace, as runc's shim does with ``/run/containerd/runc``; ``$RUNE_SHIM_ROOT`` replaces the default.
``rune --root /run/containerd/rune/NS list`` sees the shim's containers.

Imports stay light (C modules, and protobuf only when there are options to read without a template): ``start``
and ``delete`` run once per container each, and containerd waits for both.
"""

import os
import sys

from inclavare.shim import startup
from inclavare.shim.startup import ROOT_FILE, default_root, group_of, serves, socket_address

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PROG = "containerd-shim-rune-v2"
RUNTIME_ID = "io.containerd.rune.v2"
DELETED_FILE = "rune-deleted"  # in the bundle: written by the shim at Task.Delete (service.write_deleted)
SHIM_ENV = ("TTRPC_ADDRESS", "GRPC_ADDRESS", "NAMESPACE", "RUNE_SHIM_ROOT",
            "INCLAVARE_SHIM_CONFIG")  # what a resident shim inherits (the last: the carriers' node config)

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


def cmd_start(flags: "dict[str, Any]") -> int:
    """Print the address of the shim that will serve the container (see the module's docstring): through the
    warm shim template when there is one, else here (and exec a template for the next start)."""
    from inclavare.shim import template

    bundle = flags["bundle"] or os.getcwd()
    options = sys.stdin.buffer.read()
    env = {k: os.environ[k] for k in SHIM_ENV if k in os.environ}
    use_template = template.enabled() and os.path.basename(sys.argv[0]).startswith(PROG)
    if use_template and len(options) < template.MAX_REQUEST // 4:
        answer = template.request(template.template_path(startup.SOCKET_DIR, flags["address"], sys.argv[0]), {
            "flags": {k: flags[k] for k in ("namespace", "id", "address", "debug")}, "bundle": bundle,
            "options": options.hex(), "env": env, "containerd_pid": os.getppid()})
        if answer is not None:
            if "error" in answer:
                raise ValueError(str(answer["error"]))
            sys.stdout.write(str(answer["address"]))
            return 0
    sys.stdout.flush()
    sys.stderr.flush()
    address, pid, _ = startup.start(flags, bundle, options, env, os.getppid())
    sys.stdout.write(address)
    if pid and use_template:  # a warm template for the next start
        sys.stdout.flush()
        template.start_template(sys.argv[0], flags["namespace"], flags["address"])
    return 0


def cmd_template(flags: "dict[str, Any]") -> int:
    """Serve as the shim template for this containerd (see inclavare.shim.template)."""
    from inclavare.shim import template

    return template.run(template.template_path(startup.SOCKET_DIR, flags["address"], sys.argv[0]), flags["address"])


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
    if sock.startswith(startup.SOCKET_DIR + "/") and os.path.exists(sock) and not serves(sock):
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
        from inclavare.shim.startup import bind_unix

        raw = bind_unix(path)
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
    """The launcher's call: main's status as the exit status, without the interpreter's teardown (finalizing
    modules and objects costs ~2 ms of every ``start`` and ``delete``, and containerd waits for both). Nothing
    here registers atexit work; stdout and stderr are flushed first."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 1
    os._exit(code)
