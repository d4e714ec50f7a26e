"""The `rune` commands off the container lifecycle path: help, version, spec, list, ps, events, exec,
update's flags and attest. Imported on demand by :mod:`inclavare.cli.rune`, which create, start, state,
kill and delete load on every call (3-4 times per container): keeping these here halves that module.
"""

from __future__ import annotations

import sys

from inclavare import _fastos as fos  # the posix builtin: `import os` costs ~1.4 ms per call
from inclavare.cli.rune import (
    COMMANDS,
    GLOBAL_FLAGS,
    HELP_FLAG,
    PROG,
    Flag,
    UnknownCommand,
    _int,
    _one_id,
    _print_json,
)
from inclavare.errors import ConfigError, ContainerError, InclavareError, UsageError
from inclavare.formats import fastjson as json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


_SIZE = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "g": 1 << 30, "gb": 1 << 30,
         "t": 1 << 40, "tb": 1 << 40}


def parse_size(flag: str, text: str) -> int:
    t = text.strip().lower()
    if t == "-1":
        return -1
    cut = len(t)
    while cut and t[cut - 1] in "bkmgti":
        cut -= 1
    num, unit = t[:cut], t[cut:].replace("i", "")
    try:
        return int(float(num) * _SIZE[unit])
    except (ValueError, KeyError):
        raise UsageError(f"--{flag}: invalid size {text!r}") from None


def _interval(text: str) -> float:
    t = text.strip()
    for suffix, mult in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if t.endswith(suffix):
            try:
                return float(t[: -len(suffix)]) * mult
            except ValueError:
                break
    try:
        return float(t)
    except ValueError:
        raise UsageError(f"--interval: invalid duration {text!r}") from None


def resources_from_flags(opts: dict[str, Any]) -> dict[str, Any]:
    res: dict[str, Any] = {}
    if "resources" in opts:
        src = opts["resources"]
        try:
            text = sys.stdin.read() if src == "-" else open(src).read()
            loaded = json.loads(text)
        except OSError as e:
            raise UsageError(f"--resources {src}: {e.strerror}") from None
        except ValueError as e:
            raise UsageError(f"--resources {src}: invalid JSON: {e}") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"--resources {src}: must be a JSON object (linux.resources)")
        res.update(loaded)
    mem = res.setdefault("memory", {})
    cpu = res.setdefault("cpu", {})
    for flag, key in (("memory", "limit"), ("memory-reservation", "reservation"), ("memory-swap", "swap"),
                      ("kernel-memory", "kernel"), ("kernel-memory-tcp", "kernelTCP")):
        if flag in opts:
            mem[key] = parse_size(flag, opts[flag])
    for flag, key in (("cpu-period", "period"), ("cpu-quota", "quota"), ("cpu-rt-period", "realtimePeriod"),
                      ("cpu-rt-runtime", "realtimeRuntime"), ("cpu-share", "shares")):
        if flag in opts:
            cpu[key] = _int(flag, opts[flag])
    if "cpuset-cpus" in opts:
        cpu["cpus"] = opts["cpuset-cpus"]
    if "cpuset-mems" in opts:
        cpu["mems"] = opts["cpuset-mems"]
    if "pids-limit" in opts:
        res["pids"] = {"limit": _int("pids-limit", opts["pids-limit"])}
    if "blkio-weight" in opts:
        res.setdefault("blockIO", {})["weight"] = _int("blkio-weight", opts["blkio-weight"])
    if "l3-cache-schema" in opts or "mem-bw-schema" in opts:
        raise UsageError("--l3-cache-schema/--mem-bw-schema: Intel RDT is not supported on this host")
    return {k: v for k, v in res.items() if v != {}}


def exec_process(rt: Any, cid: str, opts: dict[str, Any], pos: list[str]) -> dict[str, Any]:
    """The process to exec: --process FILE, or the container's process with args and flag overrides."""
    if "process" in opts:
        try:
            with open(opts["process"]) as f:
                proc = json.loads(f.read())
        except OSError as e:
            raise UsageError(f"--process {opts['process']}: {e.strerror}") from None
        except ValueError as e:
            raise ConfigError(f"--process {opts['process']}", f"invalid JSON: {e}") from None
        if not isinstance(proc, dict):
            raise ConfigError(f"--process {opts['process']}", "must be a JSON object")
    else:
        if not pos:
            raise UsageError('"exec" requires a command to run (or --process FILE)')
        state, _ = rt.load(cid)
        base = state.config_dict().get("process") or {}
        proc = json.loads(json.dumps(base))
        proc["args"] = pos
        proc["terminal"] = bool(opts.get("tty"))
        proc.pop("consoleSize", None)
    if opts.get("tty"):
        proc["terminal"] = True
    if "env" in opts:
        proc["env"] = list(proc.get("env") or []) + opts["env"]
    if "cwd" in opts:
        proc["cwd"] = opts["cwd"]
    if "user" in opts:
        uid, _, gid = opts["user"].partition(":")
        user = dict(proc.get("user") or {})
        user["uid"] = _int("user", uid)
        if gid:  # as runc: without ":gid" the process keeps the configured gid
            user["gid"] = _int("user", gid)
        proc["user"] = user
    if "additional-gids" in opts:
        user = dict(proc.get("user") or {})
        # appended to the configured ones, as runc does
        user["additionalGids"] = list(user.get("additionalGids") or []) + [
            _int("additional-gids", g) for g in opts["additional-gids"]]
        proc["user"] = user
    if "cap" in opts:
        caps = dict(proc.get("capabilities") or {})
        for kind in ("bounding", "effective", "permitted", "inheritable", "ambient"):
            cur = list(caps.get(kind) or [])
            for c in opts["cap"]:
                name = c.upper() if c.upper().startswith("CAP_") else "CAP_" + c.upper()
                if name not in cur:
                    cur.append(name)
            caps[kind] = cur
        proc["capabilities"] = caps
    if opts.get("no-new-privs"):
        proc["noNewPrivileges"] = True
    if opts.get("apparmor"):
        proc["apparmorProfile"] = opts["apparmor"]
    return proc  # type: ignore[no-any-return]


def cmd_spec(opts: dict[str, Any]) -> int:
    from inclavare.formats.oci_spec import default_spec

    path = fos.path.join(opts.get("bundle") or ".", "config.json")
    if fos.path.exists(path):
        raise UsageError(f"{path}: already exists, remove it first")
    with open(path, "w") as f:
        f.write(json.dumps_pretty(default_spec(bool(opts.get("rootless")), fos.geteuid(), fos.getegid()), "\t"))
    return 0


def cmd_exec(rt: Any, opts: dict[str, Any], pos: list[str]) -> int:
    if not pos:
        raise UsageError('"exec" requires a minimum of 1 argument(s): <container-id> <command> [args...]')
    cid, rest = pos[0], pos[1:]
    proc = exec_process(rt, cid, opts, rest)
    state, _status = rt.load(cid)
    executor = None
    if state.extra.get("enclave"):  # recorded at create by the init-runelet: only then is enclave/ imported
        from inclavare.enclave.runelet import for_state

        executor = for_state(state)
    return rt.exec_wait(cid, proc, detach=bool(opts.get("detach")), pid_file=opts.get("pid-file"),  # type: ignore[no-any-return]
                        console_socket=opts.get("console-socket"),
                        preserve_fds=_int("preserve-fds", opts.get("preserve-fds", "0")),
                        cgroup=opts.get("cgroup"), ignore_paused=bool(opts.get("ignore-paused")), executor=executor)


def cmd_attest(rt: Any, opts: dict[str, Any], pos: list[str]) -> int:
    """A local REPORT from the container's enclave (and with --isRA a quote over it), through the
    enclave package: the runtime only tells where the container's state is and whether it runs."""
    cid = _one_id("attest", pos)
    state, status = rt.load(cid)
    enclave = state.extra.get("enclave")
    if not enclave:
        raise ContainerError(f'container "{cid}" has no enclave (no ENCLAVE_TYPE / enclave.type)')
    if status not in ("created", "running"):
        raise ContainerError(f'cannot attest container "{cid}": it is {status}')
    from inclavare.enclave.attest import attest, describe

    res = attest(rt.store.path(cid), enclave, bool(opts.get("isRA")), opts.get("quote-type") or "ecdsa")
    for flag, key in (("reportFile", "report"), ("quoteFile", "quote")):
        if opts.get(flag) and key in res:
            try:
                with open(opts[flag], "wb") as f:
                    f.write(res[key])
            except OSError as e:
                raise UsageError(f"--{flag} {opts[flag]}: {e.strerror}") from None
    shown = describe(res)
    _check_recorded(cid, state.annotations_dict(), shown)
    if "quote" in res and "recorded" in shown:
        from inclavare.formats.dcap import Quote3

        body = Quote3.parse(res["quote"]).report_body
        _check_recorded(cid, state.annotations_dict(), {"mrenclave": body.mrenclave.hex(),
                                                         "mrsigner": body.mrsigner.hex()})
    _print_json(shown)
    return 0


def _check_recorded(cid: str, annotations: dict[str, Any], shown: dict[str, Any]) -> None:
    """A carrier (issue 17) recorded the signed image's identity in the annotations ``enclave.mrenclave`` /
    ``enclave.mrsigner``: show it, and refuse a report whose MRENCLAVE or MRSIGNER is not the recorded one."""
    recorded = {k: str(annotations[f"enclave.{k}"]).lower() for k in ("mrenclave", "mrsigner")
                if f"enclave.{k}" in annotations}
    if not recorded:
        return
    shown["recorded"] = recorded
    for k, want in recorded.items():
        if k in shown and shown[k] != want:
            raise ContainerError(f'container "{cid}": the enclave reports {k.upper()} {shown[k]}, but '
                                 f"{want} was recorded at create (enclave.{k})")


def cmd_list(rt: Any, opts: dict[str, Any]) -> int:
    fmt = opts.get("format", "table")
    items = rt.list_containers()
    if opts.get("quiet"):
        for it in items:
            sys.stdout.write(it["id"] + "\n")
        return 0
    if fmt == "json":
        _print_json(items, None)
        return 0
    if fmt != "table":
        raise UsageError(f"--format: invalid format {fmt!r} (table or json)")
    rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    for it in items:
        rows.append((it["id"], str(it["pid"]), it["status"], it["bundle"], it["created"], it["owner"] or "root"))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:
        sys.stdout.write("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")
    return 0


def cmd_ps(rt: Any, opts: dict[str, Any], pos: list[str]) -> int:
    cid = _one_id("ps", pos)
    pids = rt.pids(cid)
    fmt = opts.get("format", "table")
    if fmt == "json":
        _print_json(pids, None)
        return 0
    if fmt != "table":
        raise UsageError(f"--format: invalid format {fmt!r} (table or json)")
    import subprocess

    ps_args = pos[1:] or ["-ef"]
    try:
        out = subprocess.run(["ps", *ps_args], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise UsageError(f"ps {' '.join(ps_args)}: {e}") from None
    lines = out.splitlines()
    if not lines:
        return 0
    header = lines[0]
    cols = header.split()
    if "PID" not in cols:
        raise UsageError("ps: the output has no PID column")
    idx = cols.index("PID")
    sys.stdout.write(header + "\n")
    wanted = set(pids)
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > idx and fields[idx].isdigit() and int(fields[idx]) in wanted:
            sys.stdout.write(line + "\n")
    return 0


def cmd_events(rt: Any, opts: dict[str, Any], pos: list[str]) -> int:
    import time

    cid = _one_id("events", pos)
    if opts.get("stats"):
        _print_json({"type": "stats", "id": cid, "data": rt.stats(cid)}, None)
        return 0
    interval = _interval(opts.get("interval", "5s"))
    if interval <= 0:
        raise UsageError("--interval: must be positive")
    # as runc: an "oom" line as soon as the kernel reports one, a "stats" line every interval;
    # ends when the container has stopped (runc: when its cgroup is removed)
    watcher = rt.oom_watcher(cid)
    try:
        next_stats = time.monotonic() + interval
        while True:
            seen = watcher.wait(next_stats - time.monotonic())
            if seen is None:
                return 0
            for _ in range(seen):
                _print_json({"type": "oom", "id": cid}, None)
            if time.monotonic() >= next_stats:
                next_stats += interval
                try:
                    data = rt.stats(cid)
                except InclavareError:
                    return 0
                _print_json({"type": "stats", "id": cid, "data": data}, None)
            sys.stdout.flush()
    finally:
        watcher.close()


def cmd_version() -> int:
    from inclavare import OCI_VERSION, __version__

    commit = _git_commit()
    sys.stdout.write(f"{PROG} version {__version__}\ncommit: {commit}\nspec: {OCI_VERSION}\n")
    return 0


def _git_commit() -> str:
    """The checkout's HEAD when running from one (it moves with every commit), else what setup recorded."""
    here = fos.path.dirname(fos.path.abspath(__file__))
    top = fos.path.abspath(fos.path.join(here, "..", "..", ".."))
    try:
        with open(fos.path.join(top, ".git", "HEAD")) as f:
            ref = f.read().strip()
        if not ref.startswith("ref: "):
            return ref
        refpath = fos.path.join(top, ".git", ref[5:])
        if fos.path.exists(refpath):
            with open(refpath) as f:
                return f.read().strip()
        with open(fos.path.join(top, ".git", "packed-refs")) as f:
            for line in f:
                if line.rstrip().endswith(" " + ref[5:]):
                    return line.split()[0]
    except OSError:
        pass
    try:
        from inclavare._build import COMMIT

        return str(COMMIT)
    except ImportError:
        return "unknown"


def _options(flags: dict[str, Flag]) -> list[tuple[str, str]]:
    rows = []
    for name, (aliases, takes, _rep, help_) in flags.items():
        value = " value" if takes else ""
        rows.append((", ".join([f"--{name}{value}"] + [f"-{a}{value}" for a in aliases]), help_))
    return rows


def _table(rows: list[tuple[str, str]]) -> str:
    width = max((len(a) for a, _ in rows), default=0)
    return "".join(f"   {a.ljust(width)}  {b}".rstrip() + "\n" for a, b in rows)


def cmd_help(cmd: str | None) -> int:
    """Help on stdout, laid out as urfave/cli prints runc's (NAME, USAGE, ..., OPTIONS)."""
    if cmd is not None and cmd not in COMMANDS and cmd not in ("help", "h"):
        raise UnknownCommand(f"No help topic for '{cmd}': unknown command (see `{PROG} --help`)")
    out = sys.stdout
    if cmd in COMMANDS:
        flags, usage, desc = COMMANDS[cmd]
        out.write(f"NAME:\n   {PROG} {cmd} - {desc}\n\nUSAGE:\n   {PROG} {cmd} [command options] {usage}".rstrip()
                  + "\n\nOPTIONS:\n" + _table(_options({**flags, "help": HELP_FLAG})))
        return 0
    from inclavare import __version__

    commands = [(name, desc) for name, (_f, _u, desc) in COMMANDS.items()]
    commands.append(("help, h", "Shows a list of commands or help for one command"))
    out.write(f"NAME:\n   {PROG} - Open Container Initiative runtime for ordinary and enclave containers\n\n"
              f"{PROG} is runc-compatible: with no enclave configured a container behaves as under runc; with\n"
              "ENCLAVE_TYPE (process env) or enclave.type (annotation) its process runs inside an enclave.\n\n"
              f"USAGE:\n   {PROG} [global options] command [command options] [arguments...]\n\n"
              f"VERSION:\n   {__version__}\n\nCOMMANDS:\n" + _table(commands)
              + "\nGLOBAL OPTIONS:\n" + _table(_options(GLOBAL_FLAGS)))
    return 0

