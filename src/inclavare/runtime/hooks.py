"""OCI hooks: run with the container state on stdin, bounded by their timeouts."""

from __future__ import annotations

import os

from inclavare.errors import HookError
from inclavare.formats import fastjson as json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def run_hooks(kind: str, hooks: list[dict[str, Any]] | None, state: dict[str, Any],
              warn: Any = None, *, env: list[str] | None = None, cwd: str | None = None) -> None:
    """Run every hook of ``kind`` in order.

    Without ``warn`` the first failure raises HookError naming it. With ``warn`` (poststart, poststop:
    "the runtime MUST log a warning, but the remaining hooks and lifecycle continue") each failure is
    passed to ``warn(message)`` and the remaining hooks still run.

    A hook with an ``env`` list gets exactly that environment; one without inherits, as under runc,
    the environment of whoever runs it: ``env`` when given (the container process's, for the hooks
    run inside the container), else this process's. ``cwd``: where the hooks run (default: here).
    """
    if not hooks:
        return
    payload = json.dumps(state).encode()
    inherited = _env_dict(env) if env is not None else None
    for i, hook in enumerate(hooks):
        try:
            _run_one(f"hooks.{kind}[{i}]", hook, payload, inherited, cwd)
        except HookError as e:
            if warn is None:
                raise
            warn(str(e))


def _env_dict(env: list[str]) -> dict[str, str]:
    return dict(e.partition("=")[::2] for e in env)


def _run_one(where: str, hook: dict[str, Any], payload: bytes, inherited: dict[str, str] | None,
             cwd: str | None) -> None:
    import subprocess

    path = hook["path"]
    args = hook.get("args") or [path]
    # runc (Go's exec.Cmd): a missing env inherits, an empty list means an empty environment
    env = _env_dict(hook["env"]) if hook.get("env") is not None else inherited
    timeout = hook.get("timeout")
    try:
        proc = subprocess.Popen(args, executable=path, env=env, cwd=cwd, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    except OSError as e:
        raise HookError(f"{where}: {path}: {e.strerror}") from None
    try:
        out, err = proc.communicate(payload, timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, 9)
        except OSError:
            proc.kill()
        proc.communicate()
        raise HookError(f"{where}: {path} timed out after {timeout}s") from None
    except BrokenPipeError:
        out, err = proc.communicate()
    if proc.returncode != 0:
        detail = (err or out).decode(errors="replace").strip().splitlines()
        status = (f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}")
        raise HookError(f"{where}: {path} failed with {status}" + (f": {detail[-1]}" if detail else ""))


def hook_state(state: dict[str, Any], status: str) -> dict[str, Any]:
    """The OCI state object hooks receive on stdin."""
    from inclavare import OCI_VERSION

    out = {"ociVersion": OCI_VERSION, "id": state["id"], "status": status}
    if status != "stopped":  # as runc: a stopped container's state has no pid (the spec requires none)
        out["pid"] = state.get("pid") or 0
    out["bundle"] = state["bundle"]
    if state.get("annotations"):
        out["annotations"] = state["annotations"]
    return out

