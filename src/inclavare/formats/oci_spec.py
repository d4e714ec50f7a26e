"""What `rune spec` writes and `rune features` reports: the default config.json and the runtime-spec Features
structure, with the name tables only `features` lists (mount options, the seccomp vocabulary).

Kept apart from :mod:`inclavare.formats.oci` so that `rune create` and `rune run`, which validate a config
but never generate one, do not load these tables. Pure module, no I/O.
"""

from __future__ import annotations

import inclavare
from inclavare.formats.oci import CAPABILITIES, HOOK_NAMES, NAMESPACE_TYPES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "MOUNT_OPTIONS",
    "SECCOMP_ACTIONS",
    "SECCOMP_ARCHS",
    "SECCOMP_FLAGS_KNOWN",
    "SECCOMP_FLAGS_SUPPORTED",
    "SECCOMP_OPERATORS",
    "default_spec",
    "features",
]

# Mount options the runtime recognises (runtime-spec config.md "Linux mount options"); anything else
# is passed to mount(2) as filesystem data.
MOUNT_OPTIONS: tuple[str, ...] = tuple(
    sorted(
        [
            "acl",
            "async",
            "atime",
            "bind",
            "defaults",
            "dev",
            "diratime",
            "dirsync",
            "exec",
            "iversion",
            "lazytime",
            "loud",
            "mand",
            "noacl",
            "noatime",
            "nodev",
            "nodiratime",
            "noexec",
            "noiversion",
            "nolazytime",
            "nomand",
            "norelatime",
            "nostrictatime",
            "nosuid",
            "nosymfollow",
            "private",
            "ratime",
            "rbind",
            "rdev",
            "rdiratime",
            "relatime",
            "remount",
            "rexec",
            "rnoatime",
            "rnodev",
            "rnodiratime",
            "rnoexec",
            "rnorelatime",
            "rnostrictatime",
            "rnosuid",
            "rnosymfollow",
            "ro",
            "rprivate",
            "rrelatime",
            "rro",
            "rrw",
            "rshared",
            "rslave",
            "rstrictatime",
            "rsuid",
            "rsymfollow",
            "runbindable",
            "rw",
            "shared",
            "silent",
            "slave",
            "strictatime",
            "suid",
            "symfollow",
            "sync",
            "tmpcopyup",
            "unbindable",
        ]
    )
)

# Seccomp names from config-linux.md (libseccomp 2.5 vocabulary).
SECCOMP_ACTIONS: tuple[str, ...] = (
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_LOG",
    "SCMP_ACT_NOTIFY",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_TRAP",
)
SECCOMP_OPERATORS: tuple[str, ...] = (
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_LE",
    "SCMP_CMP_LT",
    "SCMP_CMP_MASKED_EQ",
    "SCMP_CMP_NE",
)
SECCOMP_ARCHS: tuple[str, ...] = (
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
)
SECCOMP_FLAGS_KNOWN: tuple[str, ...] = (
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
)
# WAIT_KILLABLE_RECV needs libseccomp >= 2.6; the platform has 2.5.4.
SECCOMP_FLAGS_SUPPORTED: tuple[str, ...] = SECCOMP_FLAGS_KNOWN[:3]


_DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def default_spec(rootless: bool = False, host_uid: int = 0, host_gid: int = 0) -> dict[str, Any]:
    """The config.json `runc spec` (or `runc spec --rootless`) writes, with our ociVersion.

    `host_uid`/`host_gid` (the caller's effective ids) are mapped to root in a rootless spec.
    """
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        },
    ]
    linux: dict[str, Any] = {
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
        "maskedPaths": [
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/sys/firmware",
            "/proc/scsi",
        ],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    }
    if rootless:
        # What `runc spec --rootless` changes: no network namespace, a user namespace mapping the
        # caller to root, /sys as a read-only rbind, no uid=/gid= mount options, no resources.
        linux["namespaces"] = [{"type": t} for t in ("pid", "ipc", "uts", "mount", "user")]
        linux["uidMappings"] = [{"containerID": 0, "hostID": host_uid, "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": host_gid, "size": 1}]
        del linux["resources"]
        for m in mounts:
            if m["destination"] == "/sys":
                m.clear()
                m.update(
                    destination="/sys",
                    type="none",
                    source="/sys",
                    options=["rbind", "nosuid", "noexec", "nodev", "ro"],
                )
            elif "options" in m:
                m["options"] = [o for o in m["options"] if not o.startswith(("uid=", "gid="))]
    return {
        "ociVersion": inclavare.OCI_VERSION,
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                s: list(_DEFAULT_CAPS) for s in ("bounding", "effective", "permitted", "ambient")
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "runc",
        "mounts": mounts,
        "linux": linux,
    }


def features() -> dict[str, Any]:
    """The runtime-spec Features structure (features.md) for `rune features`."""
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": inclavare.OCI_VERSION,
        "hooks": list(HOOK_NAMES),
        "mountOptions": list(MOUNT_OPTIONS),
        "linux": {
            "namespaces": sorted(NAMESPACE_TYPES),
            "capabilities": list(CAPABILITIES),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False},
            "seccomp": {
                "enabled": True,
                "actions": list(SECCOMP_ACTIONS),
                "operators": list(SECCOMP_OPERATORS),
                "archs": list(SECCOMP_ARCHS),
                "knownFlags": list(SECCOMP_FLAGS_KNOWN),
                "supportedFlags": list(SECCOMP_FLAGS_SUPPORTED),
            },
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
        },
        "annotations": {"io.github.inclavare-containers.rune.version": inclavare.__version__},
    }
