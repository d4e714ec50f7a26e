"""Local attestation on the simulated SGX platform: the per-host report key, EREPORT and its check.

The simulated platform gives NO confidentiality: its keys are files on the host. What it reproduces is the
SGX REPORT format and the MAC relation between a reporting enclave and the target enclave.

Platform root key
    16 random bytes in ``<state_dir>/report-key``, created on first use (file mode 0600, directory 0700,
    written to a temporary file, fsynced and renamed under an flock). The state directory is
    ``$INCLAVARE_SIM_STATE_DIR`` or ``/var/lib/inclavare/sim``. An existing key file must be a regular file
    owned by the current user with no group/other permissions and exactly 16 bytes, or it is refused. The key
    is never logged; ``repr()`` hides it.

Report key derivation (our analogue of EGETKEY(REPORT_KEY))
    The key depends on the *target* enclave and the report's KEYID, as on hardware, so only the target (or
    the platform) can check a report's MAC. With K the platform root key::

        D = "INCLAVARE-SIM-REPORT-KEY-V1" (27 bytes)
            || KEYNAME=3 (u16) || CPUSVN (16) || target ATTRIBUTES (16) || target MRENCLAVE (32)
            || target MISCSELECT (u32) || target CONFIGSVN (u16) || target CET_ATTRIBUTES (u8)
            || target CONFIGID (64) || KEYID (32)
        report key = AES-128-CMAC(K, D)                        (16 bytes)
        REPORT.MAC = AES-128-CMAC(report key, REPORTBODY)     (over the 384 body bytes)

    The target's values are TARGETINFO's when the report is made, and the target's own identity when it is
    verified, exactly the inputs EREPORT and the target's EGETKEY use. KEYID is 32 fresh random bytes per
    report.

A running enclave always has ATTRIBUTES.INIT set, so the reported attributes and the target's attributes are
taken with INIT set, whatever the identity passed in says.

``cryptography`` is imported inside the functions that need it.
"""

from __future__ import annotations

import errno
import fcntl
import hmac
import os
import stat
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from inclavare.atomicfile import write_atomic
from inclavare.errors import InclavareError
from inclavare.formats.sgx import (
    CONFIGID_SIZE,
    CPUSVN_SIZE,
    KEYID_SIZE,
    REPORT_DATA_SIZE,
    AttributeFlags,
    Attributes,
    KeyName,
    Report,
    ReportBody,
    SigStruct,
    TargetInfo,
)

__all__ = [
    "DEFAULT_STATE_DIR",
    "SIM_CPUSVN",
    "EnclaveIdentity",
    "ReportKey",
    "SimPlatformError",
    "default_state_dir",
    "make_report",
    "verify_report",
]

DEFAULT_STATE_DIR = "/var/lib/inclavare/sim"
STATE_DIR_ENV = "INCLAVARE_SIM_STATE_DIR"
KEY_FILE = "report-key"
KEY_SIZE = 16
SIM_CPUSVN = bytes([1]) + bytes(CPUSVN_SIZE - 1)  # the simulated platform's CPUSVN
_LABEL = b"INCLAVARE-SIM-REPORT-KEY-V1"
_INIT = Attributes(int(AttributeFlags.INIT), 0)


class SimPlatformError(InclavareError):
    """The simulated platform's key store is unusable, or a report request is malformed."""


class IdentityLike(Protocol):
    """What make_report needs to know about an enclave (EnclaveIdentity and EnclaveImage both fit)."""

    @property
    def mrenclave(self) -> bytes: ...
    @property
    def mrsigner(self) -> bytes: ...
    @property
    def attributes(self) -> Attributes: ...
    @property
    def miscselect(self) -> int: ...
    @property
    def isvprodid(self) -> int: ...
    @property
    def isvsvn(self) -> int: ...


@dataclass(frozen=True)
class EnclaveIdentity:
    """The identity EREPORT reports about an enclave (SECS values after EINIT)."""

    mrenclave: bytes
    mrsigner: bytes
    attributes: Attributes
    miscselect: int = 0
    isvprodid: int = 0
    isvsvn: int = 0
    configid: bytes = bytes(CONFIGID_SIZE)
    configsvn: int = 0
    isvfamilyid: bytes = bytes(16)
    isvextprodid: bytes = bytes(16)
    cet_attributes: int = 0

    @classmethod
    def from_sigstruct(cls, sig: SigStruct, mrenclave: bytes | None = None) -> EnclaveIdentity:
        """The identity EINIT gives an enclave signed by ``sig`` (MRENCLAVE defaults to its ENCLAVEHASH)."""
        return cls(
            mrenclave=sig.enclavehash if mrenclave is None else mrenclave, mrsigner=sig.mrsigner,
            attributes=sig.attributes | _INIT, miscselect=sig.miscselect, isvprodid=sig.isvprodid,
            isvsvn=sig.isvsvn, isvfamilyid=sig.isvfamilyid, isvextprodid=sig.isvextprodid,
            cet_attributes=sig.cet_attributes,
        )

    def targetinfo(self) -> bytes:
        """TARGETINFO naming this enclave (what another enclave passes to EREPORT to report to it)."""
        return _targetinfo_of(self).pack()


def _opt(identity: Any, name: str, default: Any) -> Any:
    return getattr(identity, name, default)


def _targetinfo_of(identity: IdentityLike) -> TargetInfo:
    return TargetInfo(
        measurement=identity.mrenclave, attributes=identity.attributes | _INIT,
        cet_attributes=_opt(identity, "cet_attributes", 0), configsvn=_opt(identity, "configsvn", 0),
        miscselect=identity.miscselect, configid=_opt(identity, "configid", bytes(CONFIGID_SIZE)),
    )


def default_state_dir() -> str:
    return os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR


@contextmanager
def state_lock(state_dir: str) -> Iterator[None]:
    """Hold the exclusive lock of ``state_dir`` (created 0700 if absent), so that one process at a time creates
    the files in it; the caller looks again under the lock, as another process may have made them meanwhile."""
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        lock_fd = os.open(os.path.join(state_dir, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise SimPlatformError(f"sim state directory {state_dir}: {e.strerror}") from None
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(lock_fd)


def check_private(what: str, st: os.stat_result, *, directory: bool = False) -> None:
    """The simulated platform's secrets live in files (0600) and directories (0700) of the current user only."""
    if directory and not stat.S_ISDIR(st.st_mode):
        raise SimPlatformError(f"{what}: not a directory")
    if not directory and not stat.S_ISREG(st.st_mode):
        raise SimPlatformError(f"{what}: not a regular file")
    if st.st_uid != os.geteuid():
        raise SimPlatformError(f"{what}: owned by uid {st.st_uid}, not by uid {os.geteuid()}")
    if st.st_mode & 0o077:
        mode = f"{stat.S_IMODE(st.st_mode):04o}"
        raise SimPlatformError(f"{what}: mode {mode} (must be 0700)" if directory
                               else f"{what}: mode {mode} lets others read it (must be 0600)")


def _check_key_file(path: str, st: os.stat_result) -> None:
    check_private(f"sim report key {path}", st)
    if st.st_size != KEY_SIZE:
        raise SimPlatformError(f"sim report key {path}: {st.st_size} bytes, expected {KEY_SIZE}")


def read_private(path: str, what: str, check: Callable[[str, os.stat_result], None], limit: int) -> bytes | None:
    """The content of the state file ``path``, or None if it does not exist. It is opened without following a
    symbolic link and ``check`` judges its fstat (owner, mode, size); at most ``limit`` + 1 bytes are read, so a
    file that grew past ``limit`` shows as too long. Errors name the file as ``what``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise SimPlatformError(f"{what}: is a symbolic link") from None
        raise SimPlatformError(f"{what}: {e.strerror}") from None
    try:
        check(path, os.fstat(fd))
        chunks, size = [], 0
        while size <= limit and (chunk := os.read(fd, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def _read_key(path: str) -> bytes | None:
    data = read_private(path, f"sim report key {path}", _check_key_file, KEY_SIZE)
    if data is not None and len(data) != KEY_SIZE:
        raise SimPlatformError(f"sim report key {path}: {len(data)} bytes, expected {KEY_SIZE}")
    return data


def _create_key(path: str) -> bytes:
    key = os.urandom(KEY_SIZE)
    write_atomic(path, key, sync_dir=True)
    return key


class ReportKey:
    """The simulated platform's report root key, held in memory (load it on the host before pivot_root)."""

    __slots__ = ("_key", "cpusvn", "state_dir")

    def __init__(self, key: bytes, *, cpusvn: bytes = SIM_CPUSVN, state_dir: str | None = None) -> None:
        if len(key) != KEY_SIZE:
            raise SimPlatformError(f"sim report key: {len(key)} bytes, expected {KEY_SIZE}")
        if len(cpusvn) != CPUSVN_SIZE:
            raise SimPlatformError(f"sim CPUSVN: {len(cpusvn)} bytes, expected {CPUSVN_SIZE}")
        self._key, self.cpusvn, self.state_dir = bytes(key), bytes(cpusvn), state_dir

    def __repr__(self) -> str:
        return f"ReportKey(state_dir={self.state_dir!r}, key=<hidden>)"

    @classmethod
    def load(cls, state_dir: str | None = None, *, create: bool = True) -> ReportKey:
        """Read the platform key from ``state_dir`` (default :func:`default_state_dir`), creating it if absent."""
        state_dir = state_dir or default_state_dir()
        path = os.path.join(state_dir, KEY_FILE)
        key = _read_key(path)
        if key is not None:
            return cls(key, state_dir=state_dir)
        if not create:
            raise SimPlatformError(f"sim report key {path}: does not exist")
        with state_lock(state_dir):
            key = _read_key(path)  # another process may have won the race
            if key is None:
                try:
                    key = _create_key(path)
                except OSError as e:
                    raise SimPlatformError(f"sim report key {path}: cannot create ({e.strerror})") from None
        return cls(key, state_dir=state_dir)

    # ---- EREPORT / EGETKEY analogues

    def _derive(self, target: TargetInfo, keyid: bytes) -> bytes:
        from cryptography.hazmat.primitives import cmac
        from cryptography.hazmat.primitives.ciphers import algorithms

        deps = (_LABEL + struct.pack("<H", int(KeyName.REPORT_KEY)) + self.cpusvn + target.attributes.pack()
                + target.measurement + struct.pack("<IHB", target.miscselect, target.configsvn,
                                                   target.cet_attributes)
                + target.configid + keyid)
        c = cmac.CMAC(algorithms.AES128(self._key))
        c.update(deps)
        return c.finalize()

    @staticmethod
    def _mac(report_key: bytes, body: bytes) -> bytes:
        from cryptography.hazmat.primitives import cmac
        from cryptography.hazmat.primitives.ciphers import algorithms

        c = cmac.CMAC(algorithms.AES128(report_key))
        c.update(body)
        return c.finalize()

    def make_report(self, identity: IdentityLike, report_data: bytes, targetinfo: bytes) -> bytes:
        """EREPORT: a 432-byte REPORT about ``identity`` for the enclave ``targetinfo`` names."""
        if len(report_data) != REPORT_DATA_SIZE:
            raise SimPlatformError(f"EREPORT: report_data is {len(report_data)} bytes, expected {REPORT_DATA_SIZE}")
        target = TargetInfo.parse(targetinfo)
        body = ReportBody(
            cpusvn=self.cpusvn, miscselect=identity.miscselect, cet_attributes=_opt(identity, "cet_attributes", 0),
            isvextprodid=_opt(identity, "isvextprodid", bytes(16)), attributes=identity.attributes | _INIT,
            mrenclave=identity.mrenclave, mrsigner=identity.mrsigner,
            configid=_opt(identity, "configid", bytes(CONFIGID_SIZE)), isvprodid=identity.isvprodid,
            isvsvn=identity.isvsvn, configsvn=_opt(identity, "configsvn", 0),
            isvfamilyid=_opt(identity, "isvfamilyid", bytes(16)), reportdata=bytes(report_data),
        ).pack()
        keyid = os.urandom(KEYID_SIZE)
        mac = self._mac(self._derive(target, keyid), body)
        return body + keyid + mac

    def verify_report(self, report: bytes, target_identity: IdentityLike) -> bool:
        """What the target's EGETKEY(REPORT_KEY) + CMAC check does: True iff the MAC is right for this target."""
        parsed = Report.parse(report)
        expected = self._mac(self._derive(_targetinfo_of(target_identity), parsed.keyid), bytes(report[:384]))
        return hmac.compare_digest(expected, parsed.mac)


_LOADED: dict[str, ReportKey] = {}


def _default_key() -> ReportKey:
    state_dir = default_state_dir()
    key = _LOADED.get(state_dir)
    if key is None:
        key = _LOADED[state_dir] = ReportKey.load(state_dir)
    return key


def make_report(identity: IdentityLike, report_data: bytes, targetinfo: bytes, *,
                key: ReportKey | None = None) -> bytes:
    """EREPORT on the simulated platform (``key`` defaults to the default state dir's, loaded once)."""
    return (key or _default_key()).make_report(identity, report_data, targetinfo)


def verify_report(report: bytes, target_identity: IdentityLike, *, key: ReportKey | None = None) -> bool:
    """Check a REPORT's MAC as the target enclave would."""
    return (key or _default_key()).verify_report(report, target_identity)
