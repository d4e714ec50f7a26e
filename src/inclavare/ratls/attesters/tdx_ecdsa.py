"""``tdx_ecdsa``: TDX DCAP quotes through configfs-tsm, or /dev/tdx_guest and Intel's QGS.

* ``/dev/tdx_guest`` (``$INCLAVARE_TDX_GUEST_DEVICE``): ``TDX_CMD_GET_REPORT0`` (struct tdx_report_req:
  reportdata[64], tdreport[1024]) gives the TDREPORT; Intel's Quote Generation Service turns it into a quote,
  reached over vsock (host CID 2, port 4050) or, on kernels that have it, the ``TDX_CMD_GET_QUOTE`` ioctl
  (struct tdx_quote_req {u64 buf, u64 len}; the buffer is tdx_quote_hdr {u64 version=1, u64 status, u32 in_len,
  u32 out_len} then data). Both carry the same QGS message: a 4-byte big-endian length, then
  qgs_msg_header {u16 major=1, u16 minor=0, u32 type (0 GET_QUOTE_REQ, 1 GET_QUOTE_RESP), u32 size,
  u32 error_code}, then for a request u32 report_size, u32 id_list_size, the TDREPORT; for a response
  u32 selected_id_size, u32 quote_size, the id, the quote.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
from collections.abc import Callable

from inclavare.ratls.attesters.base import (
    REPORT_DATA_SIZE,
    AttesterError,
    CollateralFn,
    Evidence,
    IoctlFn,
    _check_quote,
    _mismatch,
    _report_data,
)
from inclavare.ratls.attesters.guest import GuestAttester
from inclavare.ratls.attesters.ioctls import _IOC_READ, _IOC_WRITE, _ioc, _open_device
from inclavare.ratls.attesters.tsm import ConfigfsTsm
from inclavare.sockio import recv_exact

TDX_GUEST_DEVICE = "/dev/tdx_guest"
TDX_GUEST_DEVICE_ENV = "INCLAVARE_TDX_GUEST_DEVICE"
TDX_METHODS = ("auto", "configfs", "vsock", "ioctl")

TDX_REPORT_REQ_SIZE = 64 + 1024
TDX_REPORT_SIZE = 1024
TDX_REPORTDATA_OFFSET = 128  # REPORTMACSTRUCT.REPORTDATA inside the TDREPORT
TDX_CMD_GET_REPORT0 = _ioc(_IOC_READ | _IOC_WRITE, "T", 1, TDX_REPORT_REQ_SIZE)
TDX_CMD_GET_QUOTE = _ioc(_IOC_READ, "T", 4, 16)

TDX_QUOTE_HDR = struct.Struct("<QQII")
TDX_QUOTE_BUFFER = 64 * 1024
GET_QUOTE_STATUS = {0xFFFFFFFFFFFFFFFF: "still in flight", 0x8000000000000000: "error",
                    0x8000000000000001: "quote service unavailable"}
QGS_HEADER = struct.Struct("<HHIII")
QGS_GET_QUOTE_REQ, QGS_GET_QUOTE_RESP = 0, 1
QGS_VSOCK_PORT = 4050
QGS_HOST_CID = 2
QGS_TIMEOUT = 30.0
MAX_QGS_MESSAGE = 1 << 20


def qgs_quote_request(tdreport: bytes) -> bytes:
    """A framed GET_QUOTE_REQ QGS message (4-byte big-endian length first) for ``tdreport``."""
    body = struct.pack("<II", len(tdreport), 0) + bytes(tdreport)
    msg = QGS_HEADER.pack(1, 0, QGS_GET_QUOTE_REQ, QGS_HEADER.size + len(body), 0) + body
    return struct.pack(">I", len(msg)) + msg


def qgs_quote_response(who: str, framed: bytes) -> bytes:
    """The quote of a framed GET_QUOTE_RESP QGS message; anything malformed or an error code raises."""
    if len(framed) < 4:
        raise AttesterError(f"{who}: QGS reply of {len(framed)} bytes has no length header")
    (size,) = struct.unpack_from(">I", framed, 0)
    msg = framed[4:]
    if size != len(msg):
        raise AttesterError(f"{who}: QGS reply says {size} bytes, {len(msg)} came")
    if len(msg) < QGS_HEADER.size + 8:
        raise AttesterError(f"{who}: QGS reply of {len(msg)} bytes is too short for a GET_QUOTE_RESP")
    major, _minor, kind, msg_size, error = QGS_HEADER.unpack_from(msg, 0)
    if major != 1:
        raise AttesterError(f"{who}: QGS reply has major version {major}, expected 1")
    if kind != QGS_GET_QUOTE_RESP:
        raise AttesterError(f"{who}: QGS reply is message type {kind}, expected {QGS_GET_QUOTE_RESP} (GET_QUOTE_RESP)")
    if msg_size != len(msg):
        raise AttesterError(f"{who}: QGS reply header says {msg_size} bytes, the message is {len(msg)}")
    if error:
        raise AttesterError(f"{who}: the quote generation service failed with error {error:#x}")
    id_size, quote_size = struct.unpack_from("<II", msg, QGS_HEADER.size)
    start = QGS_HEADER.size + 8 + id_size
    if start + quote_size != len(msg) or quote_size == 0:
        raise AttesterError(f"{who}: QGS reply sizes (id {id_size}, quote {quote_size}) do not fit its "
                            f"{len(msg)} bytes")
    return bytes(msg[start:])


def _vsock_connect() -> socket.socket:
    s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    try:
        s.settimeout(QGS_TIMEOUT)
        s.connect((QGS_HOST_CID, QGS_VSOCK_PORT))
    except BaseException:
        s.close()
        raise
    return s


class TdxEcdsaAttester(GuestAttester):
    """TDX DCAP quotes. ``method``: ``auto`` (configfs-tsm when its provider is tdx_guest, else the device
    with QGS over vsock, then the TDX_CMD_GET_QUOTE ioctl), or exactly one of ``configfs``, ``vsock``,
    ``ioctl``. ``collateral_fn(quote)`` may supply endorsements."""

    name = "tdx_ecdsa"
    priority = 42
    evidence_kind = "tdx_ecdsa"

    methods = TDX_METHODS
    tsm_provider = "tdx_guest"
    device_path = TDX_GUEST_DEVICE
    device_env = TDX_GUEST_DEVICE_ENV
    guest = "a TDX guest"

    def __init__(self, *, method: str = "auto", tsm: ConfigfsTsm | None = None, device: str | None = None,
                 ioctl: IoctlFn | None = None, qgs_connect: Callable[[], socket.socket] | None = None,
                 collateral_fn: CollateralFn | None = None) -> None:
        super().__init__(method=method, tsm=tsm, device=device, ioctl=ioctl)
        self.qgs_connect = qgs_connect or _vsock_connect
        self.collateral_fn = collateral_fn

    def collect(self, report_data: bytes) -> Evidence:
        rd = _report_data(self.name, report_data)
        if self._use_configfs():
            r = self.tsm.report(rd, provider="tdx_guest", who=self.name)
            _check_quote(self.name, f"configfs-tsm {r.path}", r.outblob, rd, tdx=True)
            quote, extra = r.outblob, {"source": "configfs-tsm", "generation": r.generation}
        else:
            tdreport = self.tdreport(rd)
            quote, source = self._quote(tdreport)
            _check_quote(self.name, source, quote, rd, tdx=True)
            extra = {"source": source, "tdreport": tdreport}
        endorsements = self.collateral_fn(quote) if self.collateral_fn is not None else None
        return Evidence(self.evidence_kind, quote, endorsements, extra)

    def tdreport(self, report_data: bytes) -> bytes:
        """TDX_CMD_GET_REPORT0: the 1024-byte TDREPORT carrying ``report_data``."""
        rd = _report_data(self.name, report_data)
        req = bytearray(rd + bytes(TDX_REPORT_SIZE))
        fd = _open_device(self.name, self.device)
        try:
            self.ioctl(fd, TDX_CMD_GET_REPORT0, req)
        except OSError as e:
            raise AttesterError(f"{self.name}: {self.device}: TDX_CMD_GET_REPORT0 failed: {e.strerror or e}") from None
        finally:
            os.close(fd)
        tdreport = bytes(req[REPORT_DATA_SIZE:])
        got = tdreport[TDX_REPORTDATA_OFFSET:TDX_REPORTDATA_OFFSET + REPORT_DATA_SIZE]
        if got != rd:
            raise _mismatch(self.name, f"{self.device} (TDREPORT)", got, rd)
        return tdreport

    def _quote(self, tdreport: bytes) -> tuple[bytes, str]:
        request = qgs_quote_request(tdreport)
        if self.method == "ioctl":
            return self._quote_ioctl(request), f"{self.device} TDX_CMD_GET_QUOTE"
        try:
            sock = self.qgs_connect()
        except OSError as e:
            if self.method == "vsock":
                raise AttesterError(f"{self.name}: cannot reach the quote generation service over vsock "
                                    f"(port {QGS_VSOCK_PORT}): {e.strerror or e}") from None
            try:
                return self._quote_ioctl(request), f"{self.device} TDX_CMD_GET_QUOTE"
            except AttesterError as e2:
                raise AttesterError(f"{e2} (and QGS over vsock: {e.strerror or e})") from None
        with sock:
            try:
                sock.sendall(request)
                header = recv_exact(sock, 4)
                if len(header) != 4:
                    raise AttesterError(f"{self.name}: the quote generation service closed the connection")
                (size,) = struct.unpack(">I", header)
                if size > MAX_QGS_MESSAGE:
                    raise AttesterError(f"{self.name}: QGS reply of {size} bytes is over the "
                                        f"{MAX_QGS_MESSAGE}-byte limit")
                body = recv_exact(sock, size)
            except OSError as e:
                raise AttesterError(f"{self.name}: QGS over vsock: {e.strerror or e}") from None
        return qgs_quote_response(self.name, header + body), "QGS over vsock"

    def _quote_ioctl(self, request: bytes) -> bytes:
        buf = ctypes.create_string_buffer(TDX_QUOTE_BUFFER)
        hdr = TDX_QUOTE_HDR.pack(1, 0, len(request), 0)
        ctypes.memmove(buf, hdr + request, len(hdr) + len(request))
        arg = bytearray(struct.pack("<QQ", ctypes.addressof(buf), TDX_QUOTE_BUFFER))
        fd = _open_device(self.name, self.device)
        try:
            self.ioctl(fd, TDX_CMD_GET_QUOTE, arg)
        except OSError as e:
            hint = " (this kernel has no TDX_CMD_GET_QUOTE; use configfs-tsm)" if e.errno == errno.ENOTTY else ""
            raise AttesterError(f"{self.name}: {self.device}: TDX_CMD_GET_QUOTE failed: {e.strerror or e}"
                                f"{hint}") from None
        finally:
            os.close(fd)
        raw = buf.raw
        _version, status, _in_len, out_len = TDX_QUOTE_HDR.unpack_from(raw, 0)
        if status != 0:
            what = GET_QUOTE_STATUS.get(status, "unknown status")
            raise AttesterError(f"{self.name}: TDX_CMD_GET_QUOTE: status {status:#x} ({what})")
        if out_len > TDX_QUOTE_BUFFER - TDX_QUOTE_HDR.size:
            raise AttesterError(f"{self.name}: TDX_CMD_GET_QUOTE: out_len {out_len} exceeds the buffer")
        return qgs_quote_response(self.name, raw[TDX_QUOTE_HDR.size:TDX_QUOTE_HDR.size + out_len])
