"""The PAL contract as Python sees it: what the init-runelet drives, for C and Python enclave runtimes alike.

Upstream's Enclave Runtime PAL API (v1-v3) is a C ABI; ``pal.NativePal`` drives a shared object through
ctypes. Built-in runtimes written in Python subclass :class:`EnclaveRuntime` and are selected with
``ENCLAVE_RUNTIME_PATH=builtin:NAME``; they obey the same call order and the same meaning of every call:

  load(spec)                   on the host, before pivot_root (import what you need, read host files);
                               ``spec`` is the container's OCI config (e.g. linux.resources.memory.limit)
  get_version()                PAL API version (1..3)
  init(args, log_level)        pal_init: create the enclave; fails ``rune create``
  create_process(path, argv, env, stdio) -> pid     pal_create_process (v2+)
  exec(pid) -> exit value      pal_exec (v2+): wait for that process
  kill(pid, sig)               pal_kill (v2+); pid -1 means every process of the enclave
  destroy()                    pal_destroy, once, when the container's payload has returned
  get_local_report(targetinfo) -> 432-byte REPORT   pal_get_local_report (v3)

Failures raise :class:`PalError` naming the PAL function and a (negative) code, as a C PAL's return does.
``exec`` may run in several threads at once (``rune exec`` adds processes to the same enclave); ``kill`` is
called from the init-runelet's signal handler and must not block.
"""

from __future__ import annotations

from inclavare.errors import InclavareError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PAL_API_VERSION = 3  # the highest version rune speaks
LOG_LEVELS = ("trace", "debug", "info", "warning", "error", "fatal", "panic", "off")
DEFAULT_LOG_LEVEL = "info"
REPORT_SIZE = 432
TARGETINFO_SIZE = 512


class PalError(InclavareError):
    """A PAL call failed: ``func`` is the PAL API function (e.g. ``pal_init``), ``code`` what it returned."""

    def __init__(self, func: str, code: int, detail: str = "") -> None:
        self.func, self.code, self.detail = func, code, detail
        msg = f"enclave runtime: {func}() failed with {code}"
        super().__init__(f"{msg}: {detail}" if detail else msg)


class EnclaveConfigError(InclavareError):
    """The enclave configuration (env / annotations / PAL path) is unusable; names the key and the problem."""

    def __init__(self, key: str, problem: str) -> None:
        self.key, self.problem = key, problem
        super().__init__(f"{key}: {problem}")


class EnclaveRuntime:
    """Base class of built-in (Python) enclave runtimes. Override what your runtime supports."""

    name = "?"
    api_version = PAL_API_VERSION

    def load(self, spec: dict[str, Any]) -> None:
        """Runs on the host before pivot_root; the container's files are not visible yet."""

    def get_version(self) -> int:
        return self.api_version

    def init(self, args: str, log_level: str) -> None:
        raise NotImplementedError

    def create_process(self, path: str, argv: list[str], env: list[str], stdio: tuple[int, int, int]) -> int:
        raise PalError("pal_create_process", -38, f"{self.name} does not create processes")

    def exec(self, pid: int) -> int:
        raise PalError("pal_exec", -38, f"{self.name} does not run processes")

    def kill(self, pid: int, sig: int) -> None:
        raise PalError("pal_kill", -38, f"{self.name} does not take signals")

    def destroy(self) -> None:
        pass

    def get_local_report(self, targetinfo: bytes) -> bytes:
        raise PalError("pal_get_local_report", -38, f"{self.name} has no local report")
