"""Error hierarchy. Every error a user can cause carries a one-line message saying what and where."""

# No `from __future__ import annotations` on the lifecycle path (it imports __future__, ~0.15 ms per call):
# annotations that name TYPE_CHECKING-only types are quoted.

class InclavareError(Exception):
    """Base of every error the project raises on purpose."""

    exit_code = 1


class UsageError(InclavareError):
    """A command line is malformed (unknown flag, missing or unparsable argument); every CLI raises this one
    type so the exit status (1) and the one-line message are handled alike."""


class ConfigError(InclavareError):
    """A bundle's config.json (or a process.json) is malformed or asks for something invalid."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)


class ContainerError(InclavareError):
    """Lifecycle misuse: unknown id, wrong state, duplicate id."""


class SysError(InclavareError):
    """A system call failed during container setup; message names the call and its target."""

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno


class CgroupError(InclavareError):
    """A cgroup could not be created, configured, or removed."""


class SeccompError(InclavareError):
    """A seccomp profile could not be compiled or loaded."""


class HookError(InclavareError):
    """An OCI hook failed or timed out."""


class ExecutableError(ConfigError):
    """The process to run cannot be started: its program is missing, not executable, not in $PATH, or its
    cwd cannot be entered.

    The message is runc's (``unable to start container process: exec: "foo": executable file not
    found in $PATH``): docker and podman turn these words into exit codes 127 and 126.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(field, problem)
        self.args = (f"unable to start container process: {problem}",)

    def __str__(self) -> str:
        return str(self.args[0])


class NotRunningError(ContainerError):
    """runc's ErrNotRunning: containerd, CRI-O and podman match ``container not running``."""


class ExecFailed(InclavareError):
    """Any error of `rune exec` once its arguments are parsed: runc prints ``exec failed: ...`` and exits 255."""

    exit_code = 255

    def __init__(self, cause: InclavareError) -> None:
        super().__init__(f"exec failed: {cause}")
        self.cause = cause


class ShimError(InclavareError):
    """The resident shim could not do what a Task request asked. ``code`` is the containerd error class the
    Task service answers with: not_found, already_exists, failed_precondition, invalid_argument or unknown."""

    def __init__(self, message: str, code: str = "unknown") -> None:
        super().__init__(message)
        self.code = code
