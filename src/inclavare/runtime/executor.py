"""The executor seam: what runs a container's process once the runtime has set it up.

The runtime builds the process (namespaces, rootfs, identity, seccomp) and then hands it to an
:class:`Executor`, as youki's builder hands its process to a ``workload::Executor``. The default
replaces the process with the workload (execve). Other executors (enclave/'s init-runelet and exec
runelet) subclass it; the caller (the CLI, later the shim) picks one and passes it to
:meth:`Runtime.create` / :meth:`Runtime.exec`. The runtime knows nothing of what they do.

Hooks, in the order the runtime calls them (the child is forked, never re-exec'd, so the executor
object crosses into the child as it is):

parent, before anything is created
    :meth:`prepare` -- adjust the config (create) or the process (exec) in place.
parent, with the state directory made
    :meth:`open` -- open what the child needs (fds, inherited by the fork); returns the fds the
    parent closes once the child is ready. :meth:`state_fields` -- keys added to state.json.
child, before any namespace is entered
    :meth:`preload` -- load what must come from the host (an enclave runtime's PAL).
child, set up, before "ready"
    :meth:`before_ready` -- a failure here fails `create` / `exec`.
child, after `start`
    :meth:`run` -- run the workload; never returns.
"""

# No `from __future__ import annotations` on the lifecycle path (it imports __future__, ~0.15 ms per call).

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    Log = Any  # a callable(level, message)


class Executor:
    """The default executor: execve the workload."""

    # run() ends in execve: the start FIFO's O_CLOEXEC write end closes at the exec, so `rune start`
    # (and its poststart hooks) goes on exactly then. An executor that does not exec says False and
    # the runtime closes the FIFO before calling run().
    replaces_process = True
    # the workload's path must resolve in the container (an enclave runtime may keep it elsewhere)
    strict_resolve = True

    def prepare(self, config: "dict[str, Any]", process: "dict[str, Any]", log: "Log") -> None:
        """Parent, first: change the config (create) or the process to exec in place."""

    def open(self, state_dir: str, root_uid: int, root_gid: int) -> "list[int]":
        """Parent, with the container's state directory made: open what the child inherits; the
        returned fds are closed by the parent once the child is ready (or has failed)."""
        return []

    def state_fields(self) -> "dict[str, Any]":
        """Keys this executor records in the container's state.json (create only)."""
        return {}

    def preload(self) -> None:
        """Child, before any namespace switch: load what must come from the host."""

    def before_ready(self) -> None:
        """Child, fully set up, before it reports ready: a failure here fails `create` / `exec`."""

    def run(self, fin: "Any") -> None:
        """Child, after `start` (create) or at once (exec): run the workload given the
        :class:`~inclavare.runtime.process.Finalizer`; never returns."""
        fin.execute()


EXECVE = Executor()
