"""OCI runtime-spec config.json: loading, validation and the name tables they use.

This is `rune create`'s path, so it holds only what validating a config needs; the default config of
`rune spec` and the `rune features` structure live in :mod:`inclavare.formats.oci_spec`.

Pure module, no I/O: the caller reads `<bundle>/config.json` (see `inclavare.runtime.launch.load_config`) and
hands `validate_config` the `stat` that checks the root filesystem exists. Every problem is reported
as a `ConfigError` whose field is the JSON path of the offending value (e.g.
``process.capabilities.bounding[1]``), so the message points the user at one spot.

Host-dependent checks (is a namespace path really a namespace, is a `net.*` sysctl with a joined
network namespace really private, does the kernel support time namespaces) belong to the runtime,
which does the system calls. `linux.seccomp` and `linux.resources` are only checked to be objects;
their contents are validated by the seccomp and cgroup modules.
"""

from __future__ import annotations

from inclavare.errors import ConfigError
from inclavare.formats import fastjson as json
from inclavare.formats.jsonshape import Shape

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = [
    "CAPABILITIES",
    "HOOK_NAMES",
    "NAMESPACE_TYPES",
    "RLIMITS",
    "ROOTFS_PROPAGATIONS",
    "capability_number",
    "parse_config",
    "personality_value",
    "validate_config",
    "validate_container_id",
    "validate_process",
]

# --------------------------------------------------------------------------------------------------
# Name tables

# linux/capability.h, CAP_CHOWN (0) .. CAP_CHECKPOINT_RESTORE (40), in number order.
_CAP_NAMES = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
]
CAPABILITIES: dict[str, int] = {f"CAP_{name}": number for number, name in enumerate(_CAP_NAMES)}

# asm-generic/resource.h (the numbering used by x86, arm, arm64, riscv, s390, ppc).
_RLIMIT_NAMES = [
    "CPU",
    "FSIZE",
    "DATA",
    "STACK",
    "CORE",
    "RSS",
    "NPROC",
    "NOFILE",
    "MEMLOCK",
    "AS",
    "LOCKS",
    "SIGPENDING",
    "MSGQUEUE",
    "NICE",
    "RTPRIO",
    "RTTIME",
]
RLIMITS: dict[str, int] = {f"RLIMIT_{name}": number for number, name in enumerate(_RLIMIT_NAMES)}

NAMESPACE_TYPES: tuple[str, ...] = ("cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts")

HOOK_NAMES: tuple[str, ...] = (
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
)

ROOTFS_PROPAGATIONS: tuple[str, ...] = (
    "shared",
    "slave",
    "private",
    "unbindable",
    "rshared",
    "rslave",
    "rprivate",
    "runbindable",
)

# config.json versions accepted: 1.0.0 up to any 1.<_MAX_MINOR>.x (pre-releases of those included).
_MAX_MINOR = 2
_SEMVER_IDENT = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.-")


def _semver(version: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) of a SemVer 2.0.0 string, None if it is not one (no regex: `re` is slow to import)."""
    core, plus, build = version.partition("+")
    if plus and (not build or not set(build) <= _SEMVER_IDENT):
        return None
    core, dash, pre = core.partition("-")
    if dash and (not pre or not set(pre) <= _SEMVER_IDENT):
        return None
    parts = core.split(".")
    if len(parts) != 3 or not all(p.isdigit() and p.isascii() and (p == "0" or p[0] != "0") for p in parts):
        return None
    return int(parts[0]), int(parts[1]), int(parts[2])

_UINT32_MAX = 2**32 - 1
_UINT64_MAX = 2**64 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_MAX_ID_MAPPINGS = 340  # kernel limit on lines in uid_map / gid_map since 4.15

_CAP_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")
_SCHED_POLICIES = (
    "SCHED_OTHER",
    "SCHED_FIFO",
    "SCHED_RR",
    "SCHED_BATCH",
    "SCHED_ISO",
    "SCHED_IDLE",
    "SCHED_DEADLINE",
)
_SCHED_FLAGS = (
    "SCHED_FLAG_RESET_ON_FORK",
    "SCHED_FLAG_RECLAIM",
    "SCHED_FLAG_DL_OVERRUN",
    "SCHED_FLAG_KEEP_POLICY",
    "SCHED_FLAG_KEEP_PARAMS",
    "SCHED_FLAG_UTIL_CLAMP_MIN",
    "SCHED_FLAG_UTIL_CLAMP_MAX",
)
_IOPRIO_CLASSES = ("IOPRIO_CLASS_RT", "IOPRIO_CLASS_BE", "IOPRIO_CLASS_IDLE")
_TIME_CLOCKS = ("monotonic", "boottime")
_DEVICE_TYPES = ("c", "b", "u", "p")
# Sysctls that live in the IPC namespace (besides everything under fs.mqueue.).
_IPC_SYSCTLS = frozenset(
    (
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    )
)


def capability_number(name: str) -> int:
    """Number of capability `name` (e.g. "CAP_KILL" -> 5); ConfigError if unknown."""
    try:
        return CAPABILITIES[name]
    except KeyError:
        raise ConfigError("capability", f"unknown capability {json.quote(name)}") from None


# --------------------------------------------------------------------------------------------------
# Container ids


def validate_container_id(cid: str) -> None:
    """Raise ConfigError unless `cid` is a container id runc would accept (see formats.container_id)."""
    from inclavare.formats.container_id import problem

    bad = problem(cid)
    if bad is not None:
        raise ConfigError(*bad)


# --------------------------------------------------------------------------------------------------
# Loading and validation


def parse_config(raw: bytes) -> dict[str, Any]:
    """Decode and parse the bytes of a config.json into its top-level object (not yet validated)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError("config.json", f"not valid UTF-8 at byte {e.start}") from None
    try:
        doc = json.loads(text)
    except RecursionError:
        raise ConfigError("config.json", "invalid JSON: nested too deeply") from None
    except json.NonStandardNumber as e:
        raise ConfigError(f"config.json: {e.path}" if e.path else "config.json",
                          f"{e.constant} is not a JSON number (RFC 8259)") from None
    except ValueError as e:
        raise ConfigError(
            "config.json",
            f"invalid JSON at line {getattr(e, 'lineno', '?')} column {getattr(e, 'colno', '?')}: "
            f"{getattr(e, 'msg', e)}",
        ) from None
    if not isinstance(doc, dict):
        raise ConfigError("config.json", "must be a JSON object")
    return doc


def _join(base: str, path: str) -> str:
    """`os.path.join(base, path)` for two parts, without importing os."""
    if path.startswith("/") or not base:
        return path
    return base + path if base.endswith("/") else base + "/" + path


def validate_config(
    doc: dict[str, Any],
    bundle: str,
    *,
    need_process: bool = True,
    stat: Callable[[str], Any] | None = None,
) -> None:
    """Validate a parsed config.json; `bundle` anchors a relative root.path.

    `stat` (e.g. `os.stat`) is the caller's way to check that root.path is a directory: this module does
    no I/O itself. Without it the root filesystem is not looked at.
    """
    _Validator(doc, bundle, stat).run(need_process)


# ---- typed accessors: each takes the container, the key and the JSON path of the value -----------


def _get(obj: dict[str, Any], key: str) -> Any:
    """obj[key], with JSON null treated as absent (as Go's encoding/json does)."""
    return obj.get(key)


_shape = Shape(ConfigError)


def _required_string(obj: dict[str, Any], key: str, field: str) -> str:
    """The member `key` of `obj`, required, a string without NUL bytes; `field` is its JSON path."""
    value = obj.get(key)
    if type(value) is str and "\x00" not in value:  # the common case in one call; Shape words the errors
        return value
    return _shape.c_string(_shape.required(obj, key, field), field)


def _required_int(obj: dict[str, Any], key: str, field: str, lo: int, hi: int) -> int:
    """The member `key` of `obj`, required, an integer in [lo, hi] (not a bool); `field` is its JSON path."""
    value = obj.get(key)
    if type(value) is int and lo <= value <= hi:  # the common case in one call; Shape words the errors
        return value
    return _shape.integer(_shape.required(obj, key, field), field, lo, hi)


def _objects(value: Any, field: str) -> list[tuple[int, str, dict[str, Any]]]:
    """(index, JSON path, object) for each item of the array of objects `value`; none when it is absent.

    A list, not a generator: resuming a generator per item costs more than building the list."""
    if value is None:
        return []
    out = []
    for i, entry in enumerate(_shape.array(value, field)):
        path = f"{field}[{i}]"
        out.append((i, path, _shape.object(entry, path)))
    return out


def _uint32(value: Any, field: str) -> int:
    return _shape.integer(value, field, 0, _UINT32_MAX)


def _strings(value: Any, field: str) -> list[str]:
    return _shape.strings(value, field, allow_nul=False)


def _abs_path(value: Any, field: str) -> str:
    path = _shape.c_string(value, field)
    if not path.startswith("/"):
        raise ConfigError(field, "must be an absolute path")
    return path


def _env(value: Any, field: str) -> None:
    for i, item in enumerate(_strings(value, field)):
        name, sep, _ = item.partition("=")
        if not sep:
            raise ConfigError(f"{field}[{i}]", f'must be "NAME=VALUE", got {json.quote(item)}')
        if not name:
            raise ConfigError(f"{field}[{i}]", "variable name must not be empty")


def _id_mappings(value: Any, field: str) -> list[tuple[int, int, int]]:
    """Validate a LinuxIDMapping array; return (containerID, hostID, size) triples."""
    if len(_shape.array(value, field)) > _MAX_ID_MAPPINGS:
        raise ConfigError(field, f"at most {_MAX_ID_MAPPINGS} entries are allowed")
    ranges: list[tuple[int, int, int]] = []
    for _, f, m in _objects(value, field):
        cid, hid, size = (_required_int(m, k, f"{f}.{k}", 0, _UINT32_MAX) for k in ("containerID", "hostID", "size"))
        if size == 0:
            raise ConfigError(f"{f}.size", "must be > 0")
        if cid + size - 1 > _UINT32_MAX:
            raise ConfigError(f"{f}.size", "containerID + size exceeds the 32-bit id space")
        if hid + size - 1 > _UINT32_MAX:
            raise ConfigError(f"{f}.size", "hostID + size exceeds the 32-bit id space")
        for j, (ocid, ohid, osize) in enumerate(ranges):
            if cid < ocid + osize and ocid < cid + size:
                raise ConfigError(f, f"container id range overlaps {field}[{j}]")
            if hid < ohid + osize and ohid < hid + size:
                raise ConfigError(f, f"host id range overlaps {field}[{j}]")
        ranges.append((cid, hid, size))
    return ranges


def _sysctl_name(key: str) -> str:
    """sysctl(8) accepts '/' as the separator when the first separator is '/'; normalise to dots."""
    first = min((i for i in (key.find("."), key.find("/")) if i >= 0), default=-1)
    if first < 0 or key[first] == ".":
        return key
    return key.translate(str.maketrans("./", "/."))


class _Validator:
    def __init__(self, doc: dict[str, Any], bundle: str, stat: Callable[[str], Any] | None = None) -> None:
        self.doc = doc
        self.bundle = bundle
        self.stat = stat
        self.linux: dict[str, Any] = {}
        self.namespaces: dict[str, str] = {}  # type -> path ("" when a new namespace is created)

    def run(self, need_process: bool) -> None:
        doc = self.doc
        self.version()
        self.root()
        linux = _get(doc, "linux")
        if linux is not None:
            self.linux = _shape.object(linux, "linux")
            self.linux_namespaces()
        process = _get(doc, "process")
        if process is not None:
            self.process(_shape.object(process, "process"))
        elif need_process:
            raise ConfigError("process", "required")
        self.uts()
        self.mounts()
        self.hooks()
        self.annotations()
        if linux is not None:
            self.linux_rest()

    # ---- top level --------------------------------------------------------------------------------

    def version(self) -> None:
        version = _required_string(self.doc, "ociVersion", "ociVersion")
        m = _semver(version)
        if not m:
            raise ConfigError("ociVersion", f"{json.quote(version)} is not a SemVer 2.0.0 version")
        major, minor = m[0], m[1]
        if major != 1 or minor > _MAX_MINOR:
            raise ConfigError(
                "ociVersion",
                f"unsupported version {json.quote(version)} (supported 1.0.0 to 1.{_MAX_MINOR}.x)",
            )

    def root(self) -> None:
        root = _shape.object(_shape.required(self.doc, "root", "root"), "root")
        path = _required_string(root, "path", "root.path")
        if not path:
            raise ConfigError("root.path", "must not be empty")
        readonly = _get(root, "readonly")
        if readonly is not None:
            _shape.boolean(readonly, "root.readonly")
        if self.stat is None:
            return
        full = _join(self.bundle, path)
        try:
            st = self.stat(full)
        except FileNotFoundError:
            raise ConfigError("root.path", f"{full} does not exist") from None
        except OSError as e:
            raise ConfigError("root.path", f"{full}: {e.strerror}") from None
        if not _is_dir(st.st_mode):
            raise ConfigError("root.path", f"{full} is not a directory")

    def uts(self) -> None:
        for key in ("hostname", "domainname"):
            value = _get(self.doc, key)
            if value is None:
                continue
            if _shape.c_string(value, key) and "uts" not in self.namespaces:
                raise ConfigError(key, "requires a UTS namespace")

    def mounts(self) -> None:
        for _, f, m in _objects(_get(self.doc, "mounts"), "mounts"):
            _abs_path(_shape.required(m, "destination", f"{f}.destination"), f"{f}.destination")
            for key in ("type", "source"):
                if _get(m, key) is not None:
                    _shape.c_string(m[key], f"{f}.{key}")
            options = [] if _get(m, "options") is None else _strings(m["options"], f"{f}.options")
            uid_maps, gid_maps = _get(m, "uidMappings"), _get(m, "gidMappings")
            if uid_maps is not None:
                _id_mappings(uid_maps, f"{f}.uidMappings")
            if gid_maps is not None:
                _id_mappings(gid_maps, f"{f}.gidMappings")
            if uid_maps or gid_maps:
                if not uid_maps or not gid_maps:
                    raise ConfigError(f, "id-mapped mounts need both uidMappings and gidMappings")
                if "bind" not in options and "rbind" not in options:
                    raise ConfigError(f, "id-mapped mounts must be bind mounts (options bind or rbind)")

    def hooks(self) -> None:
        hooks = _get(self.doc, "hooks")
        if hooks is None:
            return
        hooks = _shape.object(hooks, "hooks")
        for kind in HOOK_NAMES:
            for _, f, h in _objects(_get(hooks, kind), f"hooks.{kind}"):
                _abs_path(_shape.required(h, "path", f"{f}.path"), f"{f}.path")
                if _get(h, "args") is not None:
                    _strings(h["args"], f"{f}.args")
                if _get(h, "env") is not None:
                    _env(h["env"], f"{f}.env")
                if _get(h, "timeout") is not None:
                    _shape.integer(h["timeout"], f"{f}.timeout", 1, _INT64_MAX, "must be > 0")

    def annotations(self) -> None:
        annotations = _get(self.doc, "annotations")
        if annotations is None:
            return
        for key, value in _shape.object(annotations, "annotations").items():
            if not key:
                raise ConfigError("annotations", "keys must not be empty")
            if not isinstance(value, str):
                raise ConfigError(f"annotations[{json.quote(key)}]", "must be a string")

    # ---- process ----------------------------------------------------------------------------------

    def process(self, p: dict[str, Any]) -> None:
        if _get(p, "terminal") is not None:
            _shape.boolean(p["terminal"], "process.terminal")
        if _get(p, "consoleSize") is not None:
            size = _shape.object(p["consoleSize"], "process.consoleSize")
            for key in ("height", "width"):
                _required_int(size, key, f"process.consoleSize.{key}", 0, 65535)
        if _get(p, "user") is not None:
            self.user(_shape.object(p["user"], "process.user"))
        args = _get(p, "args")
        if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
            raise ConfigError("process.args", "must be a non-empty array of strings")
        for i, arg in enumerate(args):
            _shape.c_string(arg, f"process.args[{i}]")
        if _get(p, "env") is not None:
            _env(p["env"], "process.env")
        _abs_path(_shape.required(p, "cwd", "process.cwd"), "process.cwd")
        if _get(p, "capabilities") is not None:
            caps = _shape.object(p["capabilities"], "process.capabilities")
            for cap_set in _CAP_SETS:
                if _get(caps, cap_set) is None:
                    continue
                f = f"process.capabilities.{cap_set}"
                for i, name in enumerate(_strings(caps[cap_set], f)):
                    if name not in CAPABILITIES:
                        raise ConfigError(f"{f}[{i}]", f"unknown capability {json.quote(name)}")
        if _get(p, "rlimits") is not None:
            self.rlimits(p["rlimits"])
        if _get(p, "noNewPrivileges") is not None:
            _shape.boolean(p["noNewPrivileges"], "process.noNewPrivileges")
        if _get(p, "oomScoreAdj") is not None:
            _shape.integer(p["oomScoreAdj"], "process.oomScoreAdj", -1000, 1000)
        if _get(p, "apparmorProfile") is not None and _shape.c_string(
            p["apparmorProfile"], "process.apparmorProfile"
        ):
            raise ConfigError("process.apparmorProfile", "AppArmor is not supported by this runtime")
        if _get(p, "selinuxLabel") is not None and _shape.c_string(p["selinuxLabel"], "process.selinuxLabel"):
            raise ConfigError("process.selinuxLabel", "SELinux is not supported by this runtime")
        if _get(p, "scheduler") is not None:
            self.scheduler(_shape.object(p["scheduler"], "process.scheduler"))
        if _get(p, "ioPriority") is not None:
            io = _shape.object(p["ioPriority"], "process.ioPriority")
            cls = _required_string(io, "class", "process.ioPriority.class")
            if cls not in _IOPRIO_CLASSES:
                raise ConfigError("process.ioPriority.class", f"must be one of {', '.join(_IOPRIO_CLASSES)}")
            _required_int(io, "priority", "process.ioPriority.priority", 0, 7)

    def user(self, u: dict[str, Any]) -> None:
        for key in ("uid", "gid"):
            _required_int(u, key, f"process.user.{key}", 0, _UINT32_MAX)
        if _get(u, "umask") is not None:
            _shape.integer(u["umask"], "process.user.umask", 0, 0o777)
        if _get(u, "additionalGids") is not None:
            for i, gid in enumerate(_shape.array(u["additionalGids"], "process.user.additionalGids")):
                _uint32(gid, f"process.user.additionalGids[{i}]")

    def rlimits(self, value: Any) -> None:
        seen: dict[str, int] = {}
        for i, f, r in _objects(value, "process.rlimits"):
            kind = _required_string(r, "type", f"{f}.type")
            if kind not in RLIMITS:
                raise ConfigError(f"{f}.type", f"unknown rlimit {json.quote(kind)}")
            if kind in seen:
                raise ConfigError(
                    f"{f}.type", f"duplicate rlimit {json.quote(kind)} (see process.rlimits[{seen[kind]}])"
                )
            seen[kind] = i
            soft = _required_int(r, "soft", f"{f}.soft", 0, _UINT64_MAX)
            hard = _required_int(r, "hard", f"{f}.hard", 0, _UINT64_MAX)
            if soft > hard:
                raise ConfigError(f"{f}.soft", f"must not exceed hard ({soft} > {hard})")

    def scheduler(self, s: dict[str, Any]) -> None:
        f = "process.scheduler"
        policy = _required_string(s, "policy", f"{f}.policy")
        if policy not in _SCHED_POLICIES:
            raise ConfigError(f"{f}.policy", f"unknown policy {json.quote(policy)}")
        if _get(s, "nice") is not None:
            _shape.integer(s["nice"], f"{f}.nice", -20, 19)
        if _get(s, "priority") is not None:
            prio = _shape.integer(s["priority"], f"{f}.priority", -(2**31), 2**31 - 1)
            if prio and policy not in ("SCHED_FIFO", "SCHED_RR"):
                raise ConfigError(f"{f}.priority", "only allowed with SCHED_FIFO or SCHED_RR")
        for key in ("runtime", "deadline", "period"):
            if _get(s, key) is not None:
                value = _shape.integer(s[key], f"{f}.{key}", 0, _UINT64_MAX)
                if value and policy != "SCHED_DEADLINE":
                    raise ConfigError(f"{f}.{key}", "only allowed with SCHED_DEADLINE")
        if _get(s, "flags") is not None:
            for i, flag in enumerate(_strings(s["flags"], f"{f}.flags")):
                if flag not in _SCHED_FLAGS:
                    raise ConfigError(f"{f}.flags[{i}]", f"unknown flag {json.quote(flag)}")

    # ---- linux ------------------------------------------------------------------------------------

    def linux_namespaces(self) -> None:
        for _, f, ns in _objects(_get(self.linux, "namespaces"), "linux.namespaces"):
            kind = _required_string(ns, "type", f"{f}.type")
            if kind not in NAMESPACE_TYPES:
                raise ConfigError(f"{f}.type", f"unknown namespace {json.quote(kind)}")
            if kind in self.namespaces:
                raise ConfigError(f"{f}.type", f"duplicate namespace {json.quote(kind)}")
            path = _get(ns, "path")
            self.namespaces[kind] = "" if path is None or path == "" else _abs_path(path, f"{f}.path")

    def linux_rest(self) -> None:
        linux = self.linux
        ns = self.namespaces
        has_maps = False
        for key in ("uidMappings", "gidMappings"):
            if _get(linux, key) is None:
                continue
            has_maps = True
            if "user" not in ns:
                raise ConfigError(f"linux.{key}", "requires a user namespace")
            _id_mappings(linux[key], f"linux.{key}")
        if ns.get("user") == "" and not has_maps:
            raise ConfigError(
                "linux.uidMappings",
                "required when a new user namespace is created (or give a namespace path)",
            )
        self.time_offsets()
        self.devices()
        if _get(linux, "cgroupsPath") is not None:
            _shape.c_string(linux["cgroupsPath"], "linux.cgroupsPath")
        for key in ("resources", "seccomp", "intelRdt"):
            if _get(linux, key) is not None:
                _shape.object(linux[key], f"linux.{key}")
        self.sysctl()
        for key in ("maskedPaths", "readonlyPaths"):
            if _get(linux, key) is None:
                continue
            paths = _shape.array(linux[key], f"linux.{key}")
            for i, path in enumerate(paths):
                _abs_path(path, f"linux.{key}[{i}]")
            if paths and "mount" not in ns:
                raise ConfigError(f"linux.{key}", "requires a mount namespace")
        prop = _get(linux, "rootfsPropagation")
        if prop is not None and _shape.c_string(prop, "linux.rootfsPropagation") and prop not in ROOTFS_PROPAGATIONS:
            raise ConfigError("linux.rootfsPropagation", f"must be one of {', '.join(ROOTFS_PROPAGATIONS)}")
        if _get(linux, "mountLabel") is not None:
            _shape.c_string(linux["mountLabel"], "linux.mountLabel")
        if _get(linux, "personality") is not None:
            pers = _shape.object(linux["personality"], "linux.personality")
            domain = _required_string(pers, "domain", "linux.personality.domain")
            if domain not in ("LINUX", "LINUX32"):
                raise ConfigError("linux.personality.domain", "must be LINUX or LINUX32")
            if _get(pers, "flags") is not None:
                for i, flag in enumerate(_strings(pers["flags"], "linux.personality.flags")):
                    raise ConfigError(f"linux.personality.flags[{i}]", f"unsupported flag {json.quote(flag)}")

    def time_offsets(self) -> None:
        offsets = _get(self.linux, "timeOffsets")
        if offsets is None:
            return
        offsets = _shape.object(offsets, "linux.timeOffsets")
        if "time" not in self.namespaces:
            raise ConfigError("linux.timeOffsets", "requires a time namespace")
        if self.namespaces["time"]:
            raise ConfigError("linux.timeOffsets", "cannot be combined with a time namespace path")
        for clock, value in offsets.items():
            f = f"linux.timeOffsets.{clock}"
            if clock not in _TIME_CLOCKS:
                raise ConfigError(f, f"unknown clock {json.quote(clock)} (expected monotonic or boottime)")
            off = _shape.object(value, f)
            if _get(off, "secs") is not None:
                _shape.integer(off["secs"], f"{f}.secs", _INT64_MIN, _INT64_MAX)
            if _get(off, "nanosecs") is not None:
                _shape.integer(off["nanosecs"], f"{f}.nanosecs", 0, 999_999_999)

    def devices(self) -> None:
        for _, f, d in _objects(_get(self.linux, "devices"), "linux.devices"):
            kind = _required_string(d, "type", f"{f}.type")
            if kind not in _DEVICE_TYPES:
                raise ConfigError(f"{f}.type", "must be one of c, b, u, p")
            _abs_path(_shape.required(d, "path", f"{f}.path"), f"{f}.path")
            for key in ("major", "minor"):
                value = _get(d, key)
                if value is None and kind != "p":
                    raise ConfigError(f"{f}.{key}", f"required for device type {kind}")
                if value is not None:
                    _shape.integer(value, f"{f}.{key}", 0, _UINT32_MAX)
            if _get(d, "fileMode") is not None:
                _shape.integer(d["fileMode"], f"{f}.fileMode", 0, 0o7777)
            for key in ("uid", "gid"):
                if _get(d, key) is not None:
                    _uint32(d[key], f"{f}.{key}")

    def sysctl(self) -> None:
        sysctl = _get(self.linux, "sysctl")
        if sysctl is None:
            return
        ns = self.namespaces
        for key, value in _shape.object(sysctl, "linux.sysctl").items():
            _shape.c_string(value, f"linux.sysctl[{json.quote(key)}]")
            name = _sysctl_name(key)
            quoted = json.quote(key)
            if name in _IPC_SYSCTLS or name.startswith("fs.mqueue."):
                if "ipc" not in ns:
                    raise ConfigError("linux.sysctl", f"{quoted} requires an IPC namespace")
            elif name.startswith("net."):
                # A joined network namespace might be the host's; the runtime checks that at create.
                if "network" not in ns:
                    raise ConfigError("linux.sysctl", f"{quoted} requires a network namespace")
            elif name == "kernel.domainname" and "uts" in ns:
                pass
            elif name == "kernel.hostname" and "uts" in ns:
                raise ConfigError("linux.sysctl", f"{quoted} conflicts with the hostname field; use hostname")
            elif name.startswith("user."):
                if "user" not in ns:
                    raise ConfigError("linux.sysctl", f"{quoted} requires a user namespace")
            else:
                raise ConfigError("linux.sysctl", f"{quoted} is not in a separate kernel namespace")


def _is_dir(mode: int) -> bool:
    return (mode & 0o170000) == 0o040000


def validate_process(process: Any, field: str = "process") -> None:
    """Validate a standalone process object (`rune exec --process FILE`)."""
    if field != "process":
        raise ValueError("only the 'process' field path is supported")
    _Validator({}, "").process(_shape.object(process, field))
    if not _get(process, "args"):
        raise ConfigError("process.args", "must be a non-empty array of strings")


_PERSONALITY = {"LINUX": 0x0000, "LINUX32": 0x0008}


def personality_value(personality: dict[str, Any]) -> int:
    """The personality(2) persona for a validated linux.personality object."""
    return _PERSONALITY[personality["domain"]]
