"""`rune`: the runc-compatible command line.

Flag syntax follows runc (urfave/cli v1): `--flag value`, `--flag=value`, `-flag value`, short aliases,
boolean flags with optional `=true|false`. As in runc, a command's own flags may also follow its
arguments (`rune create ID --bundle B`, `rune kill ID -h`), except for `exec`, whose flags stop at the
first argument so `rune exec ID sh -c ...` passes `-c` to the container. `-h`/`--help` prints help
on stdout and exits 0. Imports stay minimal: this runs 3-4 times per container lifecycle.
"""

# No `from __future__ import annotations` on the lifecycle path (it imports __future__, ~0.15 ms per call):
# annotations that name TYPE_CHECKING-only types are quoted.
import sys

from inclavare import _fastos as fos  # the posix builtin: `import os` costs ~2 ms per call
from inclavare.errors import ConfigError, ExecFailed, InclavareError, UsageError
from inclavare.formats import fastjson as json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from inclavare.runtime.container import Runtime
    from inclavare.runtime.launch import Executor

PROG = "rune"

# name -> (aliases, takes_value, repeatable, help)
Flag = tuple[tuple[str, ...], bool, bool, str]

GLOBAL_FLAGS: dict[str, Flag] = {
    "root": ((), True, False, "root directory for container state (default /run/rune)"),
    "log": ((), True, False, "log file (default: stderr only)"),
    "log-format": ((), True, False, "log format: text or json"),
    "debug": ((), False, False, "enable debug logging"),
    "systemd-cgroup": ((), False, False, "use the systemd cgroup driver (not supported)"),
    "criu": ((), True, False, "ignored (checkpoint/restore is not supported)"),
    "rootless": ((), True, False, "ignored: rootless mode is detected (auto|true|false)"),
    "help": (("h",), False, False, "show help"),
    "version": (("v",), False, False, "print the version"),
}

CREATE_FLAGS: dict[str, Flag] = {
    "bundle": (("b",), True, False, "path to the bundle directory (default: current directory)"),
    "console-socket": ((), True, False, "unix socket that receives the pty master (terminal: true)"),
    "pid-file": ((), True, False, "file to write the container process pid to"),
    "no-pivot": ((), False, False, "use MS_MOVE + chroot instead of pivot_root"),
    "no-new-keyring": ((), False, False, "do not create a new session keyring"),
    "preserve-fds": ((), True, False, "number of extra fds (from 3) passed to the container"),
}

COMMANDS: dict[str, tuple[dict[str, Flag], str, str]] = {
    "create": (CREATE_FLAGS, "<container-id>", "create a container (its process waits for `start`)"),
    "start": ({}, "<container-id>", "start the process of a created container"),
    "run": ({**CREATE_FLAGS, "detach": (("d",), False, False, "detach from the container's process"),
             "keep": ((), False, False, "do not delete the container after it exits")},
            "<container-id>", "create and start a container"),
    "state": ({}, "<container-id>", "print the state of a container (JSON)"),
    "list": ({"format": (("f",), True, False, "table or json"),
              "quiet": (("q",), False, False, "print only container ids")}, "", "list containers"),
    "kill": ({"all": (("a",), False, False, "signal every process of the container")},
             "<container-id> [signal]", "send a signal (default SIGTERM) to the container"),
    "delete": ({"force": (("f",), False, False, "kill a running container; exit 0 if it does not exist")},
               "<container-id>...", "delete containers"),
    "ps": ({"format": (("f",), True, False, "table or json")}, "<container-id> [ps options]",
           "list the processes of a container"),
    "exec": ({
        "process": (("p",), True, False, "process.json with the process to run"),
        "tty": (("t",), False, False, "allocate a pseudo-TTY"),
        "detach": (("d",), False, False, "detach from the process"),
        "pid-file": ((), True, False, "file to write the process pid to"),
        "console-socket": ((), True, False, "unix socket that receives the pty master"),
        "env": (("e",), True, True, "set an environment variable (repeatable)"),
        "cwd": ((), True, False, "working directory in the container"),
        "user": (("u",), True, False, "uid[:gid]"),
        "additional-gids": (("g",), True, True, "additional gid (repeatable)"),
        "cap": (("c",), True, True, "add a capability (repeatable)"),
        "no-new-privs": ((), False, False, "set no_new_privs"),
        "apparmor": ((), True, False, "apparmor profile (not supported here)"),
        "process-label": ((), True, False, "SELinux label (not supported here)"),
        "preserve-fds": ((), True, False, "number of extra fds passed to the process"),
        "cgroup": ((), True, True, "run the process in an existing sub-cgroup: [controller[,controller]:]path "
                                   "below the container's cgroup (repeatable; one path without controller on v2)"),
        "ignore-paused": ((), False, False, "allow exec in a paused container"),
    }, "<container-id> <command> [args...]", "run a new process in a running container"),
    "pause": ({}, "<container-id>", "freeze every process of a container"),
    "resume": ({}, "<container-id>", "thaw a paused container"),
    "events": ({"stats": ((), False, False, "print one stats event and exit"),
                "interval": ((), True, False, "stats interval (default 5s)")},
               "<container-id>", "print container events (stats, oom) as JSON lines"),
    "update": ({
        "resources": (("r",), True, False, "JSON file with linux.resources (- for stdin)"),
        "blkio-weight": ((), True, False, ""), "cpu-period": ((), True, False, ""),
        "cpu-quota": ((), True, False, ""), "cpu-rt-period": ((), True, False, ""),
        "cpu-rt-runtime": ((), True, False, ""), "cpu-share": ((), True, False, ""),
        "cpuset-cpus": ((), True, False, ""), "cpuset-mems": ((), True, False, ""),
        "kernel-memory": ((), True, False, ""), "kernel-memory-tcp": ((), True, False, ""),
        "memory": ((), True, False, ""), "memory-reservation": ((), True, False, ""),
        "memory-swap": ((), True, False, ""), "pids-limit": ((), True, False, ""),
        "l3-cache-schema": ((), True, False, ""), "mem-bw-schema": ((), True, False, ""),
    }, "<container-id>", "update a container's resource limits"),
    "spec": ({"bundle": (("b",), True, False, "where to write config.json"),
              "rootless": ((), False, False, "a spec for rootless containers")}, "", "write a default config.json"),
    "features": ({}, "", "print the runtime's features (JSON)"),
    "attest": ({
        "isRA": ((), False, False, "remote attestation: also get a quote from the platform's quoting service"),
        "quote-type": ((), True, False, "quote type (ecdsa)"),
        "spid": ((), True, False, "EPID SPID (EPID is retired; accepted for compatibility)"),
        "subscription-key": (("key",), True, False, "EPID subscription key (accepted for compatibility)"),
        "reportFile": ((), True, False, "write the 432-byte REPORT to this file"),
        "quoteFile": ((), True, False, "write the quote to this file (with --isRA)"),
    }, "<container-id>", "get a local REPORT (and with --isRA a quote) from an enclave container"),
}


class UnknownCommand(UsageError):
    """urfave/cli's answer to an unknown command: "No help topic for 'foo'", exit status 3."""

    exit_code = 3


HELP_FLAG: Flag = (("h",), False, False, "show help")
# commands whose flags stop at the first argument (runc's SkipArgReorder): their arguments are a command line
NO_REORDER = frozenset({"exec"})


def parse_flags(args: list[str], spec: dict[str, Flag], where: str,
                reorder: bool = False) -> "tuple[dict[str, Any], list[str]]":
    """Flags and positional arguments. With ``reorder`` (urfave/cli's default for runc's commands) a
    known flag after an argument is still a flag; an unknown ``-x`` after an argument is an argument."""
    names: dict[str, str] = {}
    for name, (aliases, _v, _r, _h) in spec.items():
        names[name] = name
        for a in aliases:
            names[a] = name
    opts: dict[str, Any] = {}
    pos: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            return opts, pos + args[i + 1:]
        if not a.startswith("-") or a == "-":
            if not reorder:
                return opts, args[i:]
            pos.append(a)
            i += 1
            continue
        key, eq, val = a.lstrip("-").partition("=")
        flag = names.get(key)
        if flag is None and pos:
            pos.append(a)  # urfave leaves an unknown flag among the arguments: `kill ID -9`
            i += 1
            continue
        if flag is None:
            raise UsageError(f"{where}{': ' if where else ''}flag provided but not defined: -{key}")
        _aliases, takes_value, repeat, _help = spec[flag]
        if takes_value:
            if not eq:
                i += 1
                if i >= len(args):
                    raise UsageError(f"{where}{': ' if where else ''}flag needs an argument: -{key}")
                val = args[i]
            if repeat:
                opts.setdefault(flag, []).append(val)
            else:
                opts[flag] = val
        else:
            if eq and val.lower() not in ("true", "false", "1", "0"):
                raise UsageError(f"{where}{': ' if where else ''}invalid boolean value {val!r} for -{key}")
            opts[flag] = (val.lower() in ("true", "1")) if eq else True
        i += 1
    return opts, pos


# ------------------------------------------------------------------------------ helpers

def _one_id(cmd: str, pos: list[str]) -> str:
    """runc's checkArgs words, then what the command expects."""
    usage = COMMANDS[cmd][1]
    if cmd in ("kill", "ps"):
        if len(pos) < 1:
            raise UsageError(f'"{cmd}" requires a minimum of 1 argument(s): {usage}')
    elif len(pos) != 1:
        raise UsageError(f'"{cmd}" requires exactly 1 argument(s): {usage}, got {len(pos)}')
    return pos[0]


def _print_json(obj: "Any", indent: int | None = 2) -> None:
    sys.stdout.write((json.dumps_pretty(obj) if indent else json.dumps(obj)) + "\n")


def _int(flag: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"--{flag}: invalid number {text!r}") from None


# ------------------------------------------------------------------------------ commands


class _StderrLog:
    """The logger without --log, --debug or --log-format: runelog's Logger(None, "text", False), imported
    only when something is logged (most calls log nothing; the import costs ~0.2 ms)."""

    debug = False

    def __init__(self) -> None:
        self._logger: Any = None

    def __call__(self, level: str, msg: str, **fields: str) -> None:
        if self._logger is None:
            from inclavare.cli.runelog import Logger

            self._logger = Logger(None, "text", False)
        self._logger(level, msg, **fields)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if b"RUNE_TRACE_FILE" in fos.environ:  # timing marks for performance work (runtime/trace.py)
        from inclavare.runtime.trace import mark

        mark("main")
    log: Any = lambda level, msg: None  # noqa: E731
    try:
        gopts, rest = parse_flags(args, GLOBAL_FLAGS, "")
        if gopts.get("version"):
            from inclavare.cli.runecmds import cmd_version

            return cmd_version()
        if gopts.get("help") or not rest:
            from inclavare.cli.runecmds import cmd_help

            return cmd_help(None)
        fmt = gopts.get("log-format") or "text"
        if gopts.get("log") or gopts.get("debug") or fmt != "text":
            from inclavare.cli.runelog import Logger

            log = Logger(gopts.get("log"), fmt, bool(gopts.get("debug")))
        else:
            log = _StderrLog()
        if gopts.get("systemd-cgroup"):
            raise UsageError("--systemd-cgroup: the systemd cgroup driver is not supported by rune on this host; "
                             "use the cgroupfs driver (drop the flag, or SystemdCgroup = false in containerd)")
        cmd, cargs = rest[0], rest[1:]
        if cmd in ("help", "h"):
            from inclavare.cli.runecmds import cmd_help

            return cmd_help(cargs[0] if cargs else None)
        if cmd not in COMMANDS:
            raise UnknownCommand(f"No help topic for '{cmd}': unknown command (see `{PROG} --help`)")
        opts, pos = parse_flags(cargs, {**COMMANDS[cmd][0], "help": HELP_FLAG}, cmd, cmd not in NO_REORDER)
        if opts.pop("help", False):
            from inclavare.cli.runecmds import cmd_help

            return cmd_help(cmd)
        if log.debug:
            log("debug", f"rune {cmd}: {' '.join(pos)}".rstrip(": "))
        return dispatch(cmd, opts, pos, gopts.get("root") or "/run/rune", log)
    except InclavareError as e:
        msg = str(e)
        log("error", msg)
        sys.stderr.write(f"{PROG}: {msg}\n")
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1


def dispatch(cmd: str, opts: "dict[str, Any]", pos: list[str], root: str, log: "Any") -> int:
    if cmd == "spec":
        from inclavare.cli.runecmds import cmd_spec

        return cmd_spec(opts)
    if cmd == "features":
        from inclavare.formats.oci_spec import features

        _print_json(features())
        return 0
    from inclavare.runtime.container import Runtime

    rt = Runtime(root, log)
    if cmd in ("create", "run"):
        return cmd_create_run(rt, cmd, opts, pos)
    if cmd == "start":
        rt.start(_one_id(cmd, pos))
        if log.debug:
            log("debug", f"start: the init process of {pos[0]} read the exec fifo and runs the workload")
        return 0
    if cmd == "state":
        _print_json(rt.state(_one_id(cmd, pos)))
        return 0
    if cmd == "list":
        from inclavare.cli.runecmds import cmd_list

        return cmd_list(rt, opts)
    if cmd == "kill":
        from inclavare.formats.signals import parse_signal

        cid = _one_id(cmd, pos)
        if len(pos) > 2:
            raise UsageError('"kill" requires a maximum of 2 argument(s): <container-id> [signal]')
        try:
            sig = parse_signal(pos[1]) if len(pos) > 1 else 15
        except ConfigError as e:
            rt.load(cid)  # as runc: a missing container is reported before a bad signal
            raise UsageError(e.problem) from None  # runc's words: unknown signal "FOO"
        rt.kill(cid, sig, bool(opts.get("all")))
        return 0
    if cmd == "delete":
        if not pos:  # several ids are accepted (runc takes exactly one)
            raise UsageError('"delete" requires a minimum of 1 argument(s): <container-id>...')
        failed = 0
        for cid in pos:
            try:
                rt.delete(cid, bool(opts.get("force")))
            except InclavareError as e:
                if len(pos) == 1:
                    raise
                log("error", str(e))
                sys.stderr.write(f"{PROG}: {e}\n")
                failed = 1
        return failed
    if cmd == "ps":
        from inclavare.cli.runecmds import cmd_ps

        return cmd_ps(rt, opts, pos)
    if cmd == "exec":
        try:
            from inclavare.cli.runecmds import cmd_exec

            return cmd_exec(rt, opts, pos)
        except UsageError:
            raise
        except InclavareError as e:  # as runc: "exec failed: ...", exit status 255
            raise ExecFailed(e) from None
    if cmd == "pause":
        rt.pause(_one_id(cmd, pos))
        return 0
    if cmd == "resume":
        rt.resume(_one_id(cmd, pos))
        return 0
    if cmd == "events":
        from inclavare.cli.runecmds import cmd_events

        return cmd_events(rt, opts, pos)
    if cmd == "update":
        from inclavare.cli.runecmds import resources_from_flags

        rt.update(_one_id(cmd, pos), resources_from_flags(opts))
        return 0
    if cmd == "attest":
        from inclavare.cli.runecmds import cmd_attest

        return cmd_attest(rt, opts, pos)
    raise UsageError(f"unknown command {cmd!r}")


# ------------------------------------------------------------------------------ create and run
# Here rather than in a module of their own: `rune create` runs once per container lifecycle, and a module
# costs its own import (~0.15 ms) while these few functions cost next to nothing on the other commands.


def mentions_enclave(cfg: "dict[str, Any]") -> bool:
    """The caller's cheap test on the plain-container path (no import): does any ENCLAVE_* variable in
    process.env or enclave.* annotation appear? enclave.config.resolve then decides."""
    for e in (cfg.get("process") or {}).get("env") or ():
        if e.startswith("ENCLAVE_"):
            return True
    return any(k.startswith("enclave.") for k in cfg.get("annotations") or ())


def pick_executor(cfg: "dict[str, Any]") -> "Executor | None":
    """None (execve) for a plain container; the enclave package is imported only for an enclave one."""
    if not mentions_enclave(cfg):
        return None
    from inclavare.enclave.runelet import for_config

    return for_config(cfg)


def cmd_create_run(rt: "Runtime", cmd: str, opts: "dict[str, Any]", pos: list[str]) -> int:
    """`rune create` and `rune run`: flags to :meth:`Runtime.create` / :meth:`Runtime.run`, with the executor
    picked from the loaded config (an enclave's init-runelet, only when the config names an enclave)."""
    cid = _one_id(cmd, pos)
    kw: dict[str, Any] = dict(pid_file=opts.get("pid-file"), console_socket=opts.get("console-socket"),
                              no_pivot=bool(opts.get("no-pivot")), no_new_keyring=bool(opts.get("no-new-keyring")),
                              preserve_fds=_int("preserve-fds", opts.get("preserve-fds", "0")),
                              executor=pick_executor)
    if cmd == "create":
        state = rt.create(cid, opts.get("bundle"), **kw)
        if rt.debug:
            rt.log("debug", f"create: init process {state.pid} of {cid} waits on the exec fifo for start")
        return 0
    return rt.run(cid, opts.get("bundle"), detach=bool(opts.get("detach")), keep=bool(opts.get("keep")), **kw)


def entry() -> None:
    """The installed launcher's entry point: main(), then exit without interpreter finalization.

    Tearing down the interpreter costs about 2 ms, and rune runs 3-4 times per container lifecycle.
    Everything rune writes goes through fos.write or closed files; stdio is flushed here.
    """
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        code = code or 1
    fos._exit(code)


if __name__ == "__main__":
    entry()
