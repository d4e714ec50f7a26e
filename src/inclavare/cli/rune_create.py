"""`rune create` and `rune run`: flags to :meth:`Runtime.create` / :meth:`Runtime.run`, with the executor
picked from the config (an enclave's init-runelet, only when the config names an enclave)."""

# No `from __future__ import annotations` on the lifecycle path (it imports __future__, ~0.15 ms per call).
from inclavare.cli.rune import _int, _one_id

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from inclavare.runtime.container import Runtime
    from inclavare.runtime.executor import Executor


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
