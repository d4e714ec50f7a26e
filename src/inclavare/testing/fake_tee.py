"""Fakes of the guest kernel interfaces the RATS-TLS attesters use, for tests without TDX or SEV-SNP.

The devices themselves cannot be faked without root-only kernel modules, so each interface is faked where the
attester reaches it:

* :class:`FakeConfigfsTsm` -- configfs-tsm in a temporary directory. It overrides the four file operations of
  :class:`~inclavare.ratls.attesters.ConfigfsTsm` with the kernel's behaviour: ``mkdir`` of an entry directly
  under the root populates ``provider``, ``generation``, ``inblob``, ``outblob`` (and ``auxblob``,
  ``privlevel``, ``privlevel_floor`` for sev_guest); writes to ``inblob`` (at most 64 bytes) and
  ``privlevel`` (0..3, not below the floor) advance ``generation``; read-only and write-only attributes
  refuse the other direction; reading ``outblob``/``auxblob`` makes the report from the current inblob when
  it is stale (and then requires exactly 64 bytes, as both guest drivers do); ``rmdir`` removes the entry.
  The files are real, so a test can look at them.
* :class:`FakeGuestIoctl` -- an ``ioctl(fd, request, arg)`` function for /dev/tdx_guest and /dev/sev-guest.
  It checks the request structs byte by byte (sizes, versions, reserved bytes, addresses, page-aligned
  certificate buffers), reads and writes the caller's memory at the addresses the structs carry (as the
  kernel's copy_from_user / copy_to_user do) and answers as the drivers do, including the "certificate
  buffer too small" reply (EIO, exitinfo2 = 1 << 32, certs_len rewritten).
* :class:`FakeQgs` -- Intel's Quote Generation Service: framed QGS messages over a stream socket (the vsock
  transport; ``connect`` hands out one end of a socket pair) or through ``TDX_CMD_GET_QUOTE``.

Behind them, :class:`FakeTdxModule` makes TDREPORTs (1024 bytes, REPORTDATA at offset 128, a keyed MAC the
fake QGS checks) and TDX DCAP v4 quotes whose TD body is taken from the TDREPORT, and :class:`FakeSnpFirmware`
makes genuine-format SEV-SNP reports signed with a test VCEK (or VLEK) of its own AMD-shaped PKI (ARK, ASK or
ASVK, leaf with AMD's extensions), which :class:`~inclavare.attestation.snp.SnpVerifier` verifies when pinned
to :attr:`FakeSnpFirmware.ark_pins`, plus the GHCB certificate table of those certificates.

Every value comes from the specs (Linux uapi headers, GHCB, Intel DCAP); nothing here reuses the attesters'
encoders, so a mistake on one side shows up as a failure. None of this gives any confidentiality.
"""

from __future__ import annotations

import ctypes
import datetime
import errno
import hashlib
import hmac
import os
import shutil
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from inclavare.ratls.attesters import ConfigfsTsm

__all__ = [
    "FakeConfigfsTsm",
    "FakeGuestIoctl",
    "FakeQgs",
    "FakeSnpFirmware",
    "FakeTdxModule",
    "GUID_ARK",
    "GUID_ASK",
    "GUID_VCEK",
    "GUID_VLEK",
    "build_cert_table",
]

# ioctl numbers, written out (Linux uapi: _IOWR('T', 1, struct tdx_report_req) with 1088 bytes, _IOR('T', 4,
# struct tdx_quote_req) with 16, _IOWR('S', 0 / 2, struct snp_guest_request_ioctl) with 32).
TDX_CMD_GET_REPORT0 = 0xC4405401
TDX_CMD_GET_QUOTE = 0x80105404
SNP_GET_REPORT = 0xC0205300
SNP_GET_EXT_REPORT = 0xC0205302
PAGE = 4096
SEV_FW_BLOB_MAX_SIZE = 4 * PAGE

# GHCB certificate table GUIDs, as their 16 wire bytes (RFC 4122 order).
GUID_VCEK = bytes.fromhex("63da758de6644564adc5f4b93be8accd")
GUID_VLEK = bytes.fromhex("a8074bc2a25a483eaae639c045a0b8a1")
GUID_ASK = bytes.fromhex("4ab7b379bbac4fe4a02f05aef327c782")
GUID_ARK = bytes.fromhex("c0b406a4a803495297433fb6014cd0ae")


def build_cert_table(entries: Sequence[tuple[bytes, bytes]], *, pad_to: int = 0) -> bytes:
    """A GHCB certificate table: ``(guid bytes, certificate)`` entries, the all-zero terminator, then the
    certificates, offsets from the table's start; zero-padded to ``pad_to`` bytes."""
    header_size = 24 * (len(entries) + 1)
    table, blobs, offset = b"", b"", header_size
    for guid, cert in entries:
        table += guid + struct.pack("<II", offset, len(cert))
        blobs += cert
        offset += len(cert)
    out = table + bytes(24) + blobs
    return out.ljust(pad_to, b"\x00")


# --------------------------------------------------------------------------------------------------
# configfs-tsm


@dataclass
class _Entry:
    inblob: bytes = b""
    privlevel: int = 0
    write_generation: int = 0
    read_generation: int = -1


class FakeConfigfsTsm(ConfigfsTsm):
    """configfs-tsm's report directory under ``root`` for ``provider`` (``tdx_guest`` or ``sev_guest``);
    ``backend(inblob, privlevel) -> (outblob, auxblob or None)`` makes the reports.

    Knobs: ``foreign_writes`` (writes "another process" makes to the entry right after outblob is read),
    ``outblob_errno`` (reading outblob fails), ``tamper`` (rewrites every outblob). ``log`` records
    ``(operation, attribute, bytes)``; ``inblobs`` every inblob a report was made from."""

    def __init__(self, root: str, provider: str, backend: Callable[[bytes, int], tuple[bytes, bytes | None]], *,
                 privlevel_floor: int | None = None) -> None:
        super().__init__(root)
        os.makedirs(root, exist_ok=True)
        self.provider_name = provider
        self.backend = backend
        self.privlevel_floor = privlevel_floor
        self.entries: dict[str, _Entry] = {}
        self.log: list[tuple[str, str, bytes]] = []
        self.inblobs: list[bytes] = []
        self.foreign_writes = 0
        self.outblob_errno: int | None = None
        self.tamper: Callable[[bytes], bytes] | None = None

    def _locate(self, path: str) -> tuple[_Entry, str]:
        entry = self.entries.get(os.path.dirname(path))
        if entry is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        return entry, os.path.basename(path)

    def _put(self, path: str, data: bytes) -> None:
        with open(path, "wb") as f:
            f.write(data)

    def mkdir(self, path: str) -> None:
        if os.path.dirname(path) != self.root.rstrip("/"):
            raise PermissionError(errno.EPERM, "Operation not permitted", path)
        os.mkdir(path)
        self.entries[path] = _Entry()
        attrs = {"provider": f"{self.provider_name}\n".encode(), "generation": b"0\n", "inblob": b"", "outblob": b""}
        if self.provider_name == "sev_guest":
            attrs.update(auxblob=b"", privlevel=b"")
            if self.privlevel_floor is not None:
                attrs["privlevel_floor"] = f"{self.privlevel_floor}\n".encode()
        for name, data in attrs.items():
            self._put(os.path.join(path, name), data)
        self.log.append(("mkdir", os.path.basename(path), b""))

    def rmdir(self, path: str) -> None:
        if self.entries.pop(path, None) is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        shutil.rmtree(path)
        self.log.append(("rmdir", os.path.basename(path), b""))

    def _advance(self, path: str, entry: _Entry) -> None:
        entry.write_generation += 1
        self._put(os.path.join(os.path.dirname(path), "generation"), f"{entry.write_generation}\n".encode())

    def write(self, path: str, data: bytes) -> None:
        entry, name = self._locate(path)
        self.log.append(("write", name, bytes(data)))
        if name == "inblob":
            if len(data) > 64:
                raise OSError(errno.EFBIG, "File too large", path)
            entry.inblob = bytes(data)
        elif name == "privlevel":
            try:
                value = int(bytes(data).decode().strip())
            except ValueError:
                raise OSError(errno.EINVAL, "Invalid argument", path) from None
            if not 0 <= value <= 3 or value < (self.privlevel_floor or 0):
                raise OSError(errno.EINVAL, "Invalid argument", path)
            entry.privlevel = value
        else:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        self._put(path, bytes(data))
        self._advance(path, entry)

    def read(self, path: str, limit: int = 1 << 24) -> bytes:
        entry, name = self._locate(path)
        if name in ("inblob", "privlevel"):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        if name in ("outblob", "auxblob"):
            if self.outblob_errno is not None:
                raise OSError(self.outblob_errno, os.strerror(self.outblob_errno), path)
            if entry.read_generation != entry.write_generation:
                if len(entry.inblob) != 64:
                    raise OSError(errno.EINVAL, "Invalid argument", path)
                out, aux = self.backend(entry.inblob, entry.privlevel)
                self.inblobs.append(entry.inblob)
                if self.tamper is not None:
                    out = self.tamper(out)
                d = os.path.dirname(path)
                self._put(os.path.join(d, "outblob"), out)
                if aux is not None:
                    self._put(os.path.join(d, "auxblob"), aux)
                entry.read_generation = entry.write_generation
        data = super().read(path, limit)
        self.log.append(("read", name, data))
        if name == "outblob":
            for _ in range(self.foreign_writes):
                entry.inblob = os.urandom(64)
                self._advance(path, entry)
        return data


# --------------------------------------------------------------------------------------------------
# TDX


TDREPORT_SIZE = 1024
TDREPORT_REPORTDATA = 128
TDREPORT_MAC = 224


class FakeTdxModule:
    """The TDX module and the quoting enclave of a fake TD: TDREPORTs and TDX DCAP quotes v4."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        self._mac_key = os.urandom(32)
        self._att_key = ec.generate_private_key(ec.SECP256R1())
        self._pck_key = ec.generate_private_key(ec.SECP256R1())
        self.mrtd = hashlib.sha384(b"fake TD image").digest()
        self.mrseam = hashlib.sha384(b"fake TDX module").digest()
        self.rtmrs = [hashlib.sha384(bytes([i])).digest() for i in range(4)]
        self.tee_tcb_svn = bytes([3, 0, 5]) + bytes(13)
        self.xfam = bytes.fromhex("e702060000000000")
        self.td_attributes = bytes(8)
        self.quotes: list[bytes] = []

    def tdreport(self, report_data: bytes) -> bytes:
        """TDG.MR.REPORT: REPORTMACSTRUCT (256), TEE_TCB_INFO (239), 17 reserved, TDINFO (512)."""
        if len(report_data) != 64:
            raise ValueError("REPORTDATA is 64 bytes")
        tee_tcb_info = (b"\xff" * 8 + self.tee_tcb_svn + self.mrseam + bytes(48) + bytes(8)).ljust(239, b"\x00")
        tdinfo = (self.td_attributes + self.xfam + self.mrtd + bytes(48 * 3) + b"".join(self.rtmrs)).ljust(512, b"\x00")
        mac_struct = (bytes([0x81, 0, 0, 0]) + bytes(12) + bytes(16) + hashlib.sha384(tee_tcb_info).digest()
                      + hashlib.sha384(tdinfo).digest() + bytes(report_data) + bytes(32))
        mac_struct += hmac.new(self._mac_key, mac_struct, "sha256").digest()
        out = mac_struct + tee_tcb_info + bytes(17) + tdinfo
        assert len(out) == TDREPORT_SIZE
        return out

    def genuine(self, tdreport: bytes) -> bool:
        return len(tdreport) == TDREPORT_SIZE and hmac.compare_digest(
            hmac.new(self._mac_key, tdreport[:TDREPORT_MAC], "sha256").digest(), tdreport[TDREPORT_MAC:256])

    def quote(self, tdreport: bytes) -> bytes:
        """A DCAP quote v4 (TEE type 0x81) whose TD body comes from ``tdreport``; ValueError if the TDREPORT
        is not one of this module's."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
        from cryptography.x509.oid import NameOID

        from inclavare.formats.dcap import (
            BODY_TYPE_TD10,
            INTEL_QE_VENDOR_ID,
            CertDataType,
            CertificationData,
            DcapQuote,
            QuoteHeader,
            TdReportBody,
            qe_report_data_for,
        )
        from inclavare.formats.sgx import ReportBody

        if not self.genuine(tdreport):
            raise ValueError("the TDREPORT's MAC does not verify")
        tcb, info = tdreport[256:495], tdreport[512:]
        body = TdReportBody(
            tee_tcb_svn=tcb[8:24], mrseam=tcb[24:72], mrsignerseam=tcb[72:120], seam_attributes=tcb[120:128],
            td_attributes=info[0:8], xfam=info[8:16], mrtd=info[16:64], mrconfigid=info[64:112],
            mrowner=info[112:160], mrownerconfig=info[160:208], rtmr0=info[208:256], rtmr1=info[256:304],
            rtmr2=info[304:352], rtmr3=info[352:400],
            report_data=tdreport[TDREPORT_REPORTDATA:TDREPORT_REPORTDATA + 64])

        def raw_sig(key: Any, data: bytes) -> bytes:
            r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")

        nums = self._att_key.public_key().public_numbers()
        att_pub = nums.x.to_bytes(32, "big") + nums.y.to_bytes(32, "big")
        auth = bytes(range(32))
        qe_body = ReportBody(reportdata=qe_report_data_for(att_pub, auth))
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Inclavare Containers FAKE TDX PCK (not Intel)")])
        now = datetime.datetime.now(datetime.UTC)
        pck = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self._pck_key.public_key())
               .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
               .not_valid_after(now + datetime.timedelta(days=365)).sign(self._pck_key, hashes.SHA256()))
        header = QuoteHeader(version=4, att_key_type=2, tee_type=0x81, qe_svn=8, pce_svn=13,
                             qe_vendor_id=INTEL_QE_VENDOR_ID, user_data=bytes(20))
        q = DcapQuote(header=header, body_type=BODY_TYPE_TD10, body=body, body_raw=body.pack(),
                      isv_signature=bytes(64), attestation_key=att_pub, qe_report=qe_body,
                      qe_report_raw=qe_body.pack(), qe_report_signature=raw_sig(self._pck_key, qe_body.pack()),
                      qe_auth_data=auth,
                      certification=CertificationData(int(CertDataType.PCK_CERT_CHAIN),
                                                      pck.public_bytes(serialization.Encoding.PEM)))
        out = replace(q, isv_signature=raw_sig(self._att_key, q.signed_bytes())).pack()
        self.quotes.append(out)
        return out

    def configfs(self, inblob: bytes, privlevel: int) -> tuple[bytes, bytes | None]:
        """What the tdx_guest provider puts in outblob: the quote of a TDREPORT made with ``inblob``."""
        return self.quote(self.tdreport(inblob)), None


class FakeQgs:
    """Intel's Quote Generation Service for ``tdx``: framed QGS messages in, framed replies out.

    Knobs: ``refuse`` (connections are refused), ``error_code`` (every reply carries it), ``reply`` (replace
    the whole framed reply). ``requests`` records every framed request."""

    def __init__(self, tdx: FakeTdxModule) -> None:
        self.tdx = tdx
        self.refuse = False
        self.error_code = 0
        self.reply: bytes | None = None
        self.requests: list[bytes] = []
        self._threads: list[threading.Thread] = []

    def handle(self, framed: bytes) -> bytes:
        self.requests.append(bytes(framed))
        if self.reply is not None:
            return self.reply
        error, quote = self.error_code, b""
        size = struct.unpack_from(">I", framed, 0)[0] if len(framed) >= 4 else -1
        msg = framed[4:]
        if size != len(msg) or len(msg) < 24:
            error = 0x00012002  # QGS_MSG_ERROR_INVALID_PARAMETER
        else:
            major, _minor, kind, msg_size, err_in = struct.unpack_from("<HHIII", msg, 0)
            report_size, id_list_size = struct.unpack_from("<II", msg, 16)
            if (major, kind, msg_size, err_in) != (1, 0, len(msg), 0) or report_size != TDREPORT_SIZE \
                    or 24 + report_size + id_list_size != len(msg):
                error = 0x00012002
            elif not error:
                try:
                    quote = self.tdx.quote(msg[24:24 + report_size])
                except ValueError:
                    error = 0x00012001  # QGS_MSG_ERROR_UNEXPECTED
        body = struct.pack("<II", 0, len(quote)) + quote
        reply = struct.pack("<HHIII", 1, 0, 1, 16 + len(body), error) + body
        return struct.pack(">I", len(reply)) + reply

    def connect(self) -> socket.socket:
        """One connection, as the vsock transport makes it."""
        if self.refuse:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
        ours, theirs = socket.socketpair()
        t = threading.Thread(target=self._serve, args=(ours,), name="fake-qgs", daemon=True)
        t.start()
        self._threads.append(t)
        return theirs

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            sock.settimeout(10)
            try:
                head = sock.recv(4, socket.MSG_WAITALL)
                if len(head) != 4:
                    return
                (size,) = struct.unpack(">I", head)
                body = sock.recv(size, socket.MSG_WAITALL) if size else b""
                sock.sendall(self.handle(head + body))
            except OSError:
                return

    def close(self) -> None:
        for t in self._threads:
            t.join(timeout=10)


# --------------------------------------------------------------------------------------------------
# SEV-SNP


AMD_OID = "1.3.6.1.4.1.3704.1"
MILAN_CPUID = (0x19, 0x01)


@cache
def _rsa_key(n: int) -> Any:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _der_uint(v: int) -> bytes:
    body = v.to_bytes(v.bit_length() // 8 + 1, "big")
    return bytes([0x02, len(body)]) + body


def _der_ia5(text: str) -> bytes:
    return bytes([0x16, len(text)]) + text.encode("ascii")


class FakeSnpFirmware:
    """The AMD secure processor of a fake SNP guest (Milan): reports signed with its own VCEK (or, with
    ``signing_key="vlek"``, a VLEK), certificates chaining to its own ARK, and the host's certificate table."""

    def __init__(self, *, signing_key: str = "vcek") -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        if signing_key not in ("vcek", "vlek"):
            raise ValueError(f"signing_key {signing_key!r}: vcek or vlek")
        self.signing_key = signing_key
        self.product = "Milan"
        self.chip_id = hashlib.sha512(b"fake SNP chip").digest()
        self.measurement = hashlib.sha384(b"fake SNP guest image").digest()
        self.tcb = bytes([3, 0, 0, 0, 0, 0, 8, 115])  # Milan layout: bootloader 3, tee 0, snp 8, microcode 115
        self._leaf_key = ec.generate_private_key(ec.SECP384R1())
        ark_key, ica_key = _rsa_key(0), _rsa_key(1)
        ica_cn = "SEV-Milan" if signing_key == "vcek" else "SEV-VLEK-Milan"
        self.ark = self._cert("ARK-Milan", "ARK-Milan", ark_key.public_key(), ark_key, ca=True)
        self.ask = self._cert(ica_cn, "ARK-Milan", ica_key.public_key(), ark_key, ca=True)
        exts = [(f"{AMD_OID}.1", _der_uint(0)), (f"{AMD_OID}.2", _der_ia5("Milan-B0")),
                (f"{AMD_OID}.3.1", _der_uint(3)), (f"{AMD_OID}.3.2", _der_uint(0)), (f"{AMD_OID}.3.3", _der_uint(8)),
                (f"{AMD_OID}.3.8", _der_uint(115))]
        if signing_key == "vcek":
            exts.append((f"{AMD_OID}.4", self.chip_id))
        else:
            exts.append((f"{AMD_OID}.5", _der_ia5("ExampleCloud")))
        self.leaf = self._cert("SEV-VCEK" if signing_key == "vcek" else "SEV-VLEK", ica_cn,
                               self._leaf_key.public_key(), ica_key, ca=False, exts=exts)
        self.reports: list[bytes] = []

    @staticmethod
    def _cert(subject: str, issuer: str, public_key: Any, signer: Any, *, ca: bool,
              exts: Sequence[tuple[str, bytes]] = ()) -> bytes:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding
        from cryptography.hazmat.primitives.serialization import Encoding
        from cryptography.x509.oid import NameOID

        def name(cn: str) -> x509.Name:
            return x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
                              x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                              x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Advanced Micro Devices"),
                              x509.NameAttribute(NameOID.COMMON_NAME, cn)])

        now = datetime.datetime.now(datetime.UTC)
        b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer)).public_key(public_key)
             .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
             .not_valid_after(now + datetime.timedelta(days=3650)))
        if ca:
            b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        for oid, value in exts:
            b = b.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False)
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
        return b.sign(signer, hashes.SHA384(), rsa_padding=pss).public_bytes(Encoding.DER)

    @property
    def ark_pins(self) -> dict[str, str]:
        """What SnpVerifier(ark_sha256=...) needs to trust this firmware's ARK."""
        return {self.product: hashlib.sha256(self.ark).hexdigest()}

    def collateral(self) -> Any:
        from inclavare.attestation.snp import SnpCollateral

        return SnpCollateral(vcek=self.leaf, chain=[self.ask, self.ark], source="fake SNP firmware")

    def cert_table(self, *, pad_to: int = 0) -> bytes:
        leaf_guid = GUID_VCEK if self.signing_key == "vcek" else GUID_VLEK
        return build_cert_table([(leaf_guid, self.leaf), (GUID_ASK, self.ask), (GUID_ARK, self.ark)], pad_to=pad_to)

    def report(self, report_data: bytes, vmpl: int = 0) -> bytes:
        """MSG_REPORT_REQ: a version 3 attestation report with ``report_data``, signed by the leaf key."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        from inclavare.formats.snp import FirmwareVersion, GuestPolicy, PlatformInfo, SnpReport

        if len(report_data) != 64:
            raise ValueError("REPORT_DATA is 64 bytes")
        fam, mod = MILAN_CPUID
        r = SnpReport(
            version=3, guest_svn=1, policy=GuestPolicy(0x30000), family_id=bytes(16), image_id=bytes(16), vmpl=vmpl,
            signature_algo=1, current_tcb=self.tcb, platform_info=PlatformInfo(1),
            flags=0 if self.signing_key == "vcek" else 1 << 2, report_data=bytes(report_data),
            measurement=self.measurement, host_data=bytes(32), id_key_digest=bytes(48), author_key_digest=bytes(48),
            report_id=os.urandom(32), report_id_ma=b"\xff" * 32, reported_tcb=self.tcb, cpuid_fam_id=fam,
            cpuid_mod_id=mod, cpuid_step=1, chip_id=self.chip_id, committed_tcb=self.tcb,
            current_version=FirmwareVersion(1, 55, 21), committed_version=FirmwareVersion(1, 55, 21),
            launch_tcb=self.tcb, launch_mit_vector=None, current_mit_vector=None, signature_r=0, signature_s=0)
        sig_r, sig_s = decode_dss_signature(self._leaf_key.sign(r.to_bytes()[:0x2A0], ec.ECDSA(hashes.SHA384())))
        out = replace(r, signature_r=sig_r, signature_s=sig_s).to_bytes()
        self.reports.append(out)
        return out

    def configfs(self, inblob: bytes, privlevel: int) -> tuple[bytes, bytes | None]:
        """What the sev_guest provider puts in outblob and auxblob."""
        return self.report(inblob, privlevel), self.cert_table()


# --------------------------------------------------------------------------------------------------
# ioctls


class FakeGuestIoctl:
    """An ``ioctl(fd, request, arg)`` for /dev/tdx_guest and /dev/sev-guest, checking what it is given.

    Knobs: ``errno_for`` (request -> errno to fail with), ``fw_error`` / ``vmm_error`` (SNP: fail with EIO and
    this exitinfo2), ``status`` (SNP MSG_REPORT_RSP status), ``report_data`` (answer for these bytes instead of
    the requested), ``certs`` (the host's certificate blob; default the firmware's table; b"" none),
    ``max_certs_len`` (the largest certificate buffer accepted), ``quote_status`` (TDX_CMD_GET_QUOTE).
    ``calls`` records ``(request name, decoded request fields)``."""

    NAMES = {TDX_CMD_GET_REPORT0: "TDX_CMD_GET_REPORT0", TDX_CMD_GET_QUOTE: "TDX_CMD_GET_QUOTE",
             SNP_GET_REPORT: "SNP_GET_REPORT", SNP_GET_EXT_REPORT: "SNP_GET_EXT_REPORT"}

    def __init__(self, *, tdx: FakeTdxModule | None = None, qgs: FakeQgs | None = None,
                 snp: FakeSnpFirmware | None = None) -> None:
        self.tdx, self.qgs, self.snp = tdx, qgs, snp
        self.errno_for: dict[int, int] = {}
        self.fw_error = 0
        self.vmm_error = 0
        self.status = 0
        self.report_data: bytes | None = None
        self.certs: bytes | None = None
        self.max_certs_len = SEV_FW_BLOB_MAX_SIZE
        self.quote_status = 0
        self.calls: list[tuple[str, dict[str, Any]]] = []

    @staticmethod
    def _fail(code: int, what: str) -> OSError:
        return OSError(code, f"{os.strerror(code)} ({what})")

    def __call__(self, fd: int, request: int, arg: bytearray) -> int:
        os.fstat(fd)  # a real, open descriptor
        name = self.NAMES.get(request)
        if name is None:
            raise self._fail(errno.ENOTTY, f"unknown request {request:#x}")
        if not isinstance(arg, bytearray):
            raise self._fail(errno.EFAULT, "the argument must be a mutable buffer")
        if request in self.errno_for:
            self.calls.append((name, {}))
            raise self._fail(self.errno_for[request], "injected")
        if request == TDX_CMD_GET_REPORT0:
            return self._tdx_report(arg)
        if request == TDX_CMD_GET_QUOTE:
            return self._tdx_quote(arg)
        return self._snp(arg, extended=request == SNP_GET_EXT_REPORT)

    # ---- TDX

    def _tdx_report(self, arg: bytearray) -> int:
        if self.tdx is None:
            raise self._fail(errno.ENOTTY, "not a TDX guest")
        if len(arg) != 64 + TDREPORT_SIZE:
            raise self._fail(errno.EFAULT, f"struct tdx_report_req is 1088 bytes, got {len(arg)}")
        rd = bytes(arg[:64])
        self.calls.append(("TDX_CMD_GET_REPORT0", {"reportdata": rd}))
        arg[64:] = self.tdx.tdreport(self.report_data if self.report_data is not None else rd)
        return 0

    def _tdx_quote(self, arg: bytearray) -> int:
        if self.qgs is None:
            raise self._fail(errno.ENOTTY, "TDX_CMD_GET_QUOTE is not in this kernel")
        if len(arg) != 16:
            raise self._fail(errno.EFAULT, f"struct tdx_quote_req is 16 bytes, got {len(arg)}")
        buf, length = struct.unpack("<QQ", arg)
        if not buf or length < 24 or length % PAGE:
            raise self._fail(errno.EINVAL, "buffer address/length")
        version, status, in_len, out_len = struct.unpack("<QQII", ctypes.string_at(buf, 24))
        self.calls.append(("TDX_CMD_GET_QUOTE", {"len": length, "version": version, "in_len": in_len}))
        if version != 1 or status != 0 or out_len != 0 or not 0 < in_len <= length - 24:
            raise self._fail(errno.EINVAL, "tdx_quote_hdr")
        reply = self.qgs.handle(ctypes.string_at(buf + 24, in_len))
        if len(reply) > length - 24:
            raise self._fail(errno.ENOSPC, "quote buffer too small")
        ctypes.memmove(buf, struct.pack("<QQII", 1, self.quote_status, in_len, len(reply)) + reply, 24 + len(reply))
        return 0

    # ---- SNP

    def _snp(self, arg: bytearray, *, extended: bool) -> int:
        if self.snp is None:
            raise self._fail(errno.ENOTTY, "not an SNP guest")
        if len(arg) != 32:
            raise self._fail(errno.EFAULT, f"struct snp_guest_request_ioctl is 32 bytes, got {len(arg)}")
        version, pad, req_addr, resp_addr, exitinfo2 = struct.unpack("<B7sQQQ", arg)
        if version == 0 or any(pad) or exitinfo2 or not req_addr or not resp_addr:
            raise self._fail(errno.EINVAL, "snp_guest_request_ioctl")
        req = ctypes.string_at(req_addr, 112 if extended else 96)
        user_data, vmpl, rsvd = req[:64], struct.unpack_from("<I", req, 64)[0], req[68:96]
        fields: dict[str, Any] = {"msg_version": version, "user_data": user_data, "vmpl": vmpl}
        if any(rsvd) or vmpl > 3:
            self.calls.append(("SNP_GET_EXT_REPORT" if extended else "SNP_GET_REPORT", fields))
            raise self._fail(errno.EINVAL, "snp_report_req")
        table = b""
        if extended:
            certs_addr, certs_len = struct.unpack_from("<QI", req, 96)
            fields.update(certs_len=certs_len, tail=req[108:112])
            self.calls.append(("SNP_GET_EXT_REPORT", fields))
            bad_len = certs_len % PAGE or certs_len > self.max_certs_len
            if any(req[108:112]) or bad_len or (certs_len and not certs_addr):
                raise self._fail(errno.EINVAL, "snp_ext_report_req")
            table = self.snp.cert_table() if self.certs is None else self.certs
            if len(table) > certs_len:
                needed = -(-len(table) // PAGE) * PAGE
                ctypes.memmove(req_addr + 104, struct.pack("<I", needed), 4)
                arg[24:32] = struct.pack("<Q", 1 << 32)
                raise self._fail(errno.EIO, "certificate buffer too small")
        else:
            self.calls.append(("SNP_GET_REPORT", fields))
        if self.fw_error or self.vmm_error:
            arg[24:32] = struct.pack("<II", self.fw_error, self.vmm_error)
            raise self._fail(errno.EIO, "guest request failed")
        report = self.snp.report(self.report_data if self.report_data is not None else user_data, vmpl)
        resp = struct.pack("<II", self.status, len(report)).ljust(0x20, b"\x00") + report
        ctypes.memmove(resp_addr, resp.ljust(4000, b"\x00"), 4000)
        if extended and certs_len:
            ctypes.memmove(certs_addr, table.ljust(certs_len, b"\x00"), certs_len)
        return 0
