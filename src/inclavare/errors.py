"""Error hierarchy. Every error a user can cause carries a one-line message saying what and where."""

from __future__ import annotations


class InclavareError(Exception):
    """Base of every error the project raises on purpose."""

    exit_code = 1


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
