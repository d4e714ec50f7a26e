"""The last steps of a container process before the workload runs: identity, limits, capabilities,
seccomp, and the executor that replaces the process (execve for plain containers).

Shared by the init process (`create`) and by `exec`. Everything here runs in the forked child.
"""

from __future__ import annotations

import errno
import os
import stat

from inclavare.errors import ConfigError, ExecutableError, SysError
from inclavare.linux import caps as capmod
from inclavare.linux import syscalls as sc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def lookup_user(uid: int, gid: int, extra_gids: list[int]) -> tuple[str | None, list[int]]:
    """HOME and supplementary groups for ``uid`` from the container's /etc/passwd and /etc/group."""
    home: str | None = None
    name: str | None = None
    try:
        with open("/etc/passwd") as f:
            for line in f:
                parts = line.rstrip("\n").split(":")
                if len(parts) >= 6 and parts[2].isdigit() and int(parts[2]) == uid:
                    name, home = parts[0], parts[5]
                    break
    except OSError:
        pass
    groups: list[int] = []
    if name is not None:
        try:
            with open("/etc/group") as f:
                for line in f:
                    parts = line.rstrip("\n").split(":")
                    if len(parts) >= 4 and parts[2].isdigit() and name in parts[3].split(","):
                        groups.append(int(parts[2]))
        except OSError:
            pass
    out: list[int] = []
    for g in groups + list(extra_gids):
        if g not in out:
            out.append(g)
    return home, out


def set_rlimits(rlimits: list[dict[str, Any]] | None) -> None:
    if not rlimits:
        return
    import resource

    from inclavare.formats.oci import RLIMITS

    for i, rl in enumerate(rlimits):
        try:
            resource.setrlimit(RLIMITS[rl["type"]], (int(rl["soft"]), int(rl["hard"])))
        except (OSError, ValueError) as e:
            raise SysError(f"process.rlimits[{i}] ({rl['type']}): setrlimit {rl['soft']}:{rl['hard']}: "
                           f"{getattr(e, 'strerror', None) or e}", getattr(e, "errno", 0) or 0) from None


def write_oom_score_adj(value: int | None, pid: str = "self") -> None:
    if value is None:
        return
    try:
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write(str(value))
    except OSError as e:
        raise SysError(f"process.oomScoreAdj: writing {value}: {e.strerror}", e.errno or 0) from None


def find_executable(arg0: str, env: list[str], cwd: str) -> str:
    """Resolve process.args[0] as exec.LookPath would, with the container's PATH."""
    if "/" in arg0:
        path = arg0 if arg0.startswith("/") else os.path.join(cwd, arg0)
        _check_exec(path, arg0)
        return path
    search = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    for e in env:
        if e.startswith("PATH="):
            search = e[5:]
    for d in search.split(":"):
        cand = os.path.join(d or ".", arg0)
        try:
            st = os.stat(cand)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return cand
    raise ExecutableError("process.args[0]", f'exec: "{arg0}": executable file not found in $PATH')


def _check_exec(path: str, arg0: str) -> None:
    try:
        st = os.stat(path)
    except OSError as e:
        # Go's *PathError text, as runc prints it: `stat /foo: no such file or directory`
        why = (e.strerror or str(e))
        raise ExecutableError("process.args[0]", f'exec: "{arg0}": stat {arg0}: {why[:1].lower()}{why[1:]}') from None
    if stat.S_ISDIR(st.st_mode) or not st.st_mode & 0o111:
        raise ExecutableError("process.args[0]", f'exec: "{arg0}": permission denied')


def fix_stdio_owner(uid: int) -> None:
    """Give fds 0-2 to ``uid`` (group unchanged), as runc's fixStdioPermissions does before it switches
    user, so a non-root container user owns its terminal (and its stdio pipes or files).

    /dev/null is left alone; EINVAL (an unmapped id) and EPERM (an inode owned outside our user
    namespace) are ignored, as runc ignores them.
    """
    try:
        null_rdev = os.stat("/dev/null").st_rdev
    except OSError:
        null_rdev = os.makedev(1, 3)
    for fd in (0, 1, 2):
        try:
            st = os.fstat(fd)
        except OSError:
            continue  # a closed stdio fd has nothing to fix
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == null_rdev:
            continue
        try:
            os.fchown(fd, uid, st.st_gid)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.EPERM):
                continue
            raise SysError(f"process.user: giving stdio fd {fd} to uid {uid}: {e.strerror}", e.errno or 0) from None


def _chdir_error(cwd: str, e: OSError) -> ConfigError:
    # runc's words (Go's lower-case errno text), which also name the field; `exec` prints them as
    # "exec failed: unable to start container process: chdir to cwd ..."
    reason = (e.strerror or str(e)).lower()
    return ExecutableError("process.cwd", f'chdir to cwd ("{cwd}") set in config.json failed: {reason}')


class Finalizer:
    """Applies an OCI ``process`` object to the current (child) process in runc's order."""

    def __init__(self, process: dict[str, Any], seccomp: dict[str, Any] | None, in_userns: bool = False,
                 fix_stdio: bool = True) -> None:
        self.process = process
        self.seccomp_cfg = seccomp
        self.in_userns = in_userns
        self.fix_stdio = fix_stdio  # False when fds 0-2 are the caller's own (foreground run/exec)
        self.seccomp_filter: Any = None
        self.env: list[str] = list(process.get("env") or [])
        self.path = ""
        self._chdir_pending = True

    def prepare_seccomp(self) -> None:
        """Compile the filter early so that a bad profile fails `create`, not the workload.

        A profile with neither defaultAction nor syscalls means "no seccomp", as runc reads it."""
        if self.seccomp_cfg:
            from inclavare.linux import seccomp

            if seccomp.enabled(self.seccomp_cfg):
                self.seccomp_filter = seccomp.compile(self.seccomp_cfg)

    @property
    def nnp(self) -> bool:
        return bool(self.process.get("noNewPrivileges"))

    def identity_and_caps(self) -> None:
        """Bounding set, uid/gid switch with kept caps, then the other capability sets."""
        proc = self.process
        caps = proc.get("capabilities")
        if caps is not None:
            capmod.drop_bounding(capmod.names_to_numbers(caps.get("bounding")))
        user = proc.get("user") or {}
        uid, gid = int(user.get("uid", 0)), int(user.get("gid", 0))
        home, groups = lookup_user(uid, gid, [int(g) for g in user.get("additionalGids") or []])
        if not any(e.startswith("HOME=") for e in self.env):
            self.env.append(f"HOME={home or '/'}")  # runc: "/" for a user /etc/passwd does not know
        sc.prctl(sc.PR_SET_KEEPCAPS, 1)
        if self.fix_stdio:
            fix_stdio_owner(uid)
        try:
            os.setgroups(groups)
        except OSError as e:
            # setgroups is denied in user namespaces whose gid_map was written with setgroups=deny
            if not (self.in_userns and e.errno == 1):
                raise SysError(f"process.user.additionalGids: setgroups {groups}: {e.strerror}", e.errno or 0) from None
        try:
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        except OSError as e:
            raise SysError(f"process.user: cannot switch to uid {uid} gid {gid}: {e.strerror}", e.errno or 0) from None
        sc.prctl(sc.PR_SET_KEEPCAPS, 0)
        if caps is not None:
            capmod.apply(caps)
        umask = user.get("umask")
        os.umask(0o022 if umask is None else int(umask))

    def chdir_early(self) -> None:
        """runc's first chdir, still with the runtime's identity: a cwd that only root can reach
        works for any user. Permission errors wait for :meth:`chdir`, after the switch (a cwd that
        only the container user can reach); any other error fails now."""
        cwd = self.process.get("cwd") or "/"
        try:
            os.chdir(cwd)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EPERM):
                return
            raise _chdir_error(cwd, e) from None
        self._chdir_pending = False

    def chdir(self) -> None:
        """The chdir after the user switch, when :meth:`chdir_early` could not do it."""
        if not self._chdir_pending:
            return
        cwd = self.process.get("cwd") or "/"
        try:
            os.chdir(cwd)
        except OSError as e:
            raise _chdir_error(cwd, e) from None
        self._chdir_pending = False

    def resolve(self) -> None:
        args = self.process.get("args") or []
        if not args:
            raise ConfigError("process.args", "must be a non-empty array of strings")
        self.path = find_executable(args[0], self.env, self.process.get("cwd") or "/")

    def resolve_lenient(self) -> None:
        try:
            self.resolve()
        except ConfigError:
            if not self.process.get("args"):
                raise
            self.path = self.process["args"][0]

    def load_seccomp(self) -> int | None:
        """Install the filter (stub and all, see linux.seccomp_enosys); the notify fd if the profile has
        SCMP_ACT_NOTIFY rules, which the caller must hand to the agent before anything else."""
        if self.seccomp_filter is None:
            return None
        fd = self.seccomp_filter.load()
        return fd  # type: ignore[no-any-return]

    def execute(self) -> None:
        """The plain-container executor: replace this process with the workload."""
        args = self.process["args"]
        try:
            os.execve(self.path, args, _env_dict(self.env))
        except OSError as e:
            raise SysError(f'exec: "{args[0]}": {e.strerror}', e.errno or 0) from None


def _env_dict(env: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in env:
        k, _, v = item.partition("=")
        out[k] = v
    return out
