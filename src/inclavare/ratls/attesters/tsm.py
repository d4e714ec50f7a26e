"""configfs-tsm, the kernel's TEE-neutral report interface, shared by ``tdx_ecdsa`` and ``sev_snp``.

The ABI (``/sys/kernel/config/tsm/report``, ``$INCLAVARE_TSM_REPORT_DIR``): mkdir a private entry, read
``provider`` (``tdx_guest`` / ``sev_guest``) and ``generation``, write ``privlevel`` (SNP, optional) and the
64-byte ``inblob``, read ``outblob`` (TDX: the quote; SNP: the report) and, for SNP, ``auxblob`` (the GHCB
certificate table). ``generation`` counts the writes to the entry; after reading it must have advanced by
exactly our writes, else another writer raced us and the blobs are refused. The entry is removed after.
"""

from __future__ import annotations

import errno
import os
import secrets
from dataclasses import dataclass

from inclavare.ratls.attesters.base import AttesterError

TSM_REPORT_DIR = "/sys/kernel/config/tsm/report"
TSM_REPORT_DIR_ENV = "INCLAVARE_TSM_REPORT_DIR"
TSM_INBLOB_MAX = 64
MAX_BLOB = 16 << 20  # far above any quote, report or certificate table


@dataclass(frozen=True)
class TsmReport:
    """One configfs-tsm report: the blobs read back and the entry they came from."""

    provider: str
    outblob: bytes
    auxblob: bytes | None
    generation: int
    path: str


class ConfigfsTsm:
    """The configfs-tsm report interface under ``root`` (default ``$INCLAVARE_TSM_REPORT_DIR`` or
    /sys/kernel/config/tsm/report). The file operations :meth:`mkdir`, :meth:`rmdir`, :meth:`read` and
    :meth:`write` are plain system calls; a test double overrides them to behave like the kernel."""

    def __init__(self, root: str | None = None) -> None:
        self.root = root or os.environ.get(TSM_REPORT_DIR_ENV) or TSM_REPORT_DIR
        self._probed: tuple[str | None, str] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={self.root!r})"

    # ---- file operations

    def mkdir(self, path: str) -> None:
        os.mkdir(path)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)

    def read(self, path: str, limit: int = MAX_BLOB) -> bytes:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks: list[bytes] = []
            size = 0
            while True:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    return b"".join(chunks)
                size += len(chunk)
                if size > limit:
                    raise OSError(errno.EFBIG, f"more than {limit} bytes")
                chunks.append(chunk)
        finally:
            os.close(fd)

    def write(self, path: str, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
        finally:
            os.close(fd)  # configfs commits a binary attribute when the file is released

    # ---- the protocol

    def present(self) -> bool:
        return os.path.isdir(self.root)

    def _entry(self) -> str:
        return os.path.join(self.root, f"inclavare-{os.getpid()}-{secrets.token_hex(6)}")

    def provider(self) -> str | None:
        """The report provider's name (``tdx_guest``, ``sev_guest``), probed once with a scratch entry; None
        when configfs-tsm is absent or unusable (:meth:`probe_error` says why)."""
        if self._probed is None:
            if not self.present():
                self._probed = (None, f"{self.root} does not exist (configfs not mounted, or no TSM provider)")
            else:
                path = self._entry()
                try:
                    self.mkdir(path)
                except OSError as e:
                    self._probed = (None, f"cannot create an entry in {self.root}: {e.strerror or e}")
                else:
                    try:
                        name = self.read(os.path.join(path, "provider"), 4096).decode("ascii", "replace").strip()
                        self._probed = (name or None, f"{path}/provider is empty")
                    except OSError as e:
                        self._probed = (None, f"{path}/provider: {e.strerror or e}")
                    finally:
                        try:
                            self.rmdir(path)
                        except OSError:
                            pass
        return self._probed[0]

    def probe_error(self) -> str:
        self.provider()
        assert self._probed is not None
        return self._probed[1]

    def report(self, inblob: bytes, *, provider: str, who: str, privlevel: int | None = None,
               auxblob: bool = False) -> TsmReport:
        """Make one report with ``inblob`` (written as given; at most 64 bytes) in a fresh private entry.

        ``provider`` is what the entry's provider must say; ``privlevel`` is written first when given, or
        raised to ``privlevel_floor`` when that is above 0; ``auxblob`` asks for the auxiliary blob too."""
        if len(inblob) > TSM_INBLOB_MAX:
            raise AttesterError(f"{who}: configfs-tsm inblob is {len(inblob)} bytes, at most {TSM_INBLOB_MAX}")
        path = self._entry()
        try:
            self.mkdir(path)
        except FileNotFoundError:
            raise AttesterError(f"{who}: configfs-tsm {self.root}: does not exist (is configfs mounted and the "
                                "guest driver loaded?)") from None
        except OSError as e:
            raise AttesterError(f"{who}: configfs-tsm: cannot create {path}: {e.strerror or e}") from None

        def attr(name: str) -> str:
            return os.path.join(path, name)

        def fail(name: str, e: OSError) -> AttesterError:
            return AttesterError(f"{who}: configfs-tsm {attr(name)}: {e.strerror or e}")

        def read_text(name: str) -> str:
            try:
                return self.read(attr(name), 4096).decode("ascii", "replace").strip()
            except OSError as e:
                raise fail(name, e) from None

        def read_int(name: str) -> int:
            text = read_text(name)
            try:
                return int(text, 10)
            except ValueError:
                raise AttesterError(f"{who}: configfs-tsm {attr(name)}: {text[:40]!r} is not a number") from None

        def write(name: str, data: bytes) -> None:
            try:
                self.write(attr(name), data)
            except OSError as e:
                raise fail(name, e) from None

        try:
            got = read_text("provider")
            if got != provider:
                raise AttesterError(f"{who}: configfs-tsm {attr('provider')}: the provider is {got!r}, not "
                                    f"{provider!r} (this guest is another TEE)")
            start = read_int("generation")
            writes = 0
            if privlevel is None and os.path.exists(attr("privlevel_floor")):
                floor = read_int("privlevel_floor")
                if floor > 0:
                    privlevel = floor
            if privlevel is not None:
                write("privlevel", f"{privlevel}\n".encode())
                writes += 1
            write("inblob", bytes(inblob))
            writes += 1
            try:
                out = self.read(attr("outblob"))
            except OSError as e:
                raise fail("outblob", e) from None
            aux: bytes | None = None
            if auxblob and os.path.exists(attr("auxblob")):
                try:
                    aux = self.read(attr("auxblob"))
                except OSError as e:
                    raise fail("auxblob", e) from None
            end = read_int("generation")
            if end != start + writes:
                raise AttesterError(f"{who}: configfs-tsm {path}: generation went from {start} to {end}, expected "
                                    f"{start + writes} after our {writes} write(s): another writer changed the "
                                    "entry, so the report may not be ours")
            if not out:
                raise AttesterError(f"{who}: configfs-tsm {attr('outblob')}: empty")
            return TsmReport(got, out, aux, end, path)
        finally:
            try:
                self.rmdir(path)
            except OSError:
                pass
