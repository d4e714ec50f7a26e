"""OCI hooks: run with the container state on stdin, bounded by their timeouts."""

from __future__ import annotations

import os

from inclavare.errors import HookError
from inclavare.formats import fastjson as json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def run_hooks(kind: str, hooks: list[dict[str, Any]] | None, state: dict[str, Any],
              warn: Any = None) -> None:
    """Run every hook of ``kind`` in order.

    Without ``warn`` the first failure raises HookError naming it. With ``warn`` (poststart, poststop:
    "the runtime MUST log a warning, but the remaining hooks and lifecycle continue") each failure is
    passed to ``warn(message)`` and the remaining hooks still run.
    """
    if not hooks:
        return
    payload = json.dumps(state).encode()
    for i, hook in enumerate(hooks):
        try:
            _run_one(f"hooks.{kind}[{i}]", hook, payload)
        except HookError as e:
            if warn is None:
                raise
            warn(str(e))


def _run_one(where: str, hook: dict[str, Any], payload: bytes) -> None:
    import subprocess

    path = hook["path"]
    args = hook.get("args") or [path]
    env = dict(e.partition("=")[::2] for e in hook.get("env") or [])
    timeout = hook.get("timeout")
    try:
        proc = subprocess.Popen(args, executable=path, env=env, stdin=subprocess.PIPE,
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

    out = {"ociVersion": OCI_VERSION, "id": state["id"], "status": status, "pid": state.get("pid") or 0,
           "bundle": state["bundle"]}
    if state.get("annotations"):
        out["annotations"] = state["annotations"]
    return out

