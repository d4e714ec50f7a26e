"""A fake aesmd for tests: Intel's AESM socket protocol in front of the simulated SGX platform.

It listens on a unix socket, reads 4-byte little-endian length + ``aesm.message.Request`` frames (several per
connection are fine) and answers ``aesm.message.Response`` frames, as aesmd does, for:

- SelectAttKeyID / GetSupportedAttKeyIDNum / GetSupportedAttKeyIDs: an ECDSA P-256 attestation key ID naming
  the sim QE (and, with ``epid_first=True``, an EPID key ID as the default, to exercise the client's search);
- InitQuoteEx: the public key ID size (SHA-256 of the attestation key: 32), then the sim QE's TARGETINFO;
- GetQuoteSizeEx / GetQuoteEx: quotes from :class:`~inclavare.sim.quoting.SimQuotingService` (a REPORT the sim
  QE refuses gets AESM_ERROR_REPORT); with ``require_init=True`` (the default) a quote before any InitQuoteEx
  gets AESM_ATT_KEY_NOT_INITIALIZED, as a freshly started aesmd answers;
- GetLaunchToken: a well-formed EINITTOKEN for the request (:func:`sim_launch_token`);
- anything else: an UnsupportedRequestResponse.

Error injection: :meth:`FakeAesm.fail` (an AESM error code), :meth:`FakeAesm.override` (replace reply
fields), :meth:`FakeAesm.misbehave` (transport faults: close, truncate, garbage, oversize, hang, wrong kind,
unsupported). Every decoded request is recorded in :attr:`FakeAesm.requests`.

The simulated platform gives NO confidentiality; this exists so the AESM client is tested without SGX.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import socket
import struct
import threading
from typing import Any

from inclavare.sgx.aesm import (
    ALG_ECDSA_P256,
    ALG_EPID,
    ATT_KEY_ID_SIZE,
    decode_request,
    encode_response,
    make_att_key_id,
)
from inclavare.sim.launch import sim_launch_token

__all__ = ["MISBEHAVIOURS", "FakeAesm", "SimAesmBackend", "sim_launch_token"]

AESM_SUCCESS = 0
AESM_UNEXPECTED_ERROR = 1
AESM_PARAMETER_ERROR = 3
AESM_GET_LICENSETOKEN_ERROR = 6
AESM_UNSUPPORTED_ATT_KEY_ID = 38
AESM_ATT_KEY_NOT_INITIALIZED = 42
AESM_ERROR_REPORT = 45


MISBEHAVIOURS = ("close", "short-length", "truncate", "garbage", "oversize", "hang", "wrong-kind", "unsupported")


class SimAesmBackend:
    """What the fake aesmd answers with: the simulated platform's QE and a launch enclave stand-in."""

    def __init__(self, state_dir: str | None = None) -> None:
        from inclavare.sim.quoting import SimQuotingService

        self.quoting = SimQuotingService.open(state_dir)
        qe = self.quoting.platform.qe_identity
        self.ecdsa_key_id = make_att_key_id(ALG_ECDSA_P256, qe.mrsigner, qe.isvprodid)
        self.epid_key_id = make_att_key_id(ALG_EPID, qe.mrsigner, qe.isvprodid, att_key_type=0)
        self.pub_key_id = hashlib.sha256(self.quoting.platform.attestation_public_key()).digest()
        self._launch_key = os.urandom(16)
        self._quote_size: int | None = None

    def qe_target_info(self) -> bytes:
        return self.quoting.qe_target_info()

    def quote_size(self) -> int:
        """The size of every quote this platform makes (fixed: the same signature sizes and PCK chain)."""
        if self._quote_size is None:
            from inclavare.formats.sgx import Attributes
            from inclavare.sim.report import EnclaveIdentity, ReportKey

            probe = EnclaveIdentity(mrenclave=bytes(32), mrsigner=bytes(32), attributes=Attributes(0x4, 0x3))
            rkey = ReportKey.load(self.quoting.platform.state_dir)
            report = rkey.make_report(probe, bytes(64), self.qe_target_info())
            self._quote_size = len(self.quoting.get_quote(report))
        return self._quote_size

    def get_quote(self, report: bytes) -> bytes:
        return self.quoting.get_quote(report)

    def launch_token(self, mrenclave: bytes, modulus: bytes, attributes: bytes) -> bytes:
        return sim_launch_token(mrenclave, modulus, attributes, mac_key=self._launch_key,
                                cpusvn=self.quoting.platform.cpusvn)


class FakeAesm:
    """A fake aesmd on ``socket_path`` serving :class:`SimAesmBackend`. Use as a context manager."""

    def __init__(self, socket_path: str, *, state_dir: str | None = None, backend: SimAesmBackend | None = None,
                 epid_first: bool = False, require_init: bool = True) -> None:
        self.socket_path = socket_path
        self.backend = backend or SimAesmBackend(state_dir)
        self.epid_first = epid_first
        self.require_init = require_init
        self.initialized = False
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.errors: list[str] = []  # what made a handler answer AESM_UNEXPECTED_ERROR
        self._failures: dict[str, list[Any]] = {}
        self._overrides: dict[str, dict[str, Any]] = {}
        self._misbehaviour: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()

    # ---- control

    def fail(self, kind: str, code: int, times: int | None = None) -> None:
        """Answer requests ``kind`` with errorCode ``code`` (the next ``times`` ones, or all)."""
        with self._lock:
            self._failures[kind] = [code, times]

    def override(self, kind: str, **fields: Any) -> None:
        """Replace fields of the replies to ``kind`` (e.g. ``target_info=b"..."``)."""
        with self._lock:
            self._overrides.setdefault(kind, {}).update(fields)

    def misbehave(self, kind: str, mode: str | None) -> None:
        """A transport fault for requests ``kind`` ("*" for all); ``None`` clears it. Modes: close (no reply),
        short-length (2 of the 4 length bytes), truncate (half the reply), garbage (bytes that are not
        protobuf), oversize (a length of ~4 GiB), hang (no reply until stopped), wrong-kind (the reply to
        another request), unsupported (UnsupportedRequestResponse)."""
        if mode is not None and mode not in MISBEHAVIOURS:
            raise ValueError(f"unknown misbehaviour {mode!r} (one of {', '.join(MISBEHAVIOURS)})")
        with self._lock:
            if mode is None:
                self._misbehaviour.pop(kind, None)
            else:
                self._misbehaviour[kind] = mode

    def reset(self) -> None:
        """Forget every injected failure, override and misbehaviour."""
        with self._lock:
            self._failures.clear()
            self._overrides.clear()
            self._misbehaviour.clear()

    def kinds(self) -> list[str]:
        """The kinds of the requests received so far, in order."""
        with self._lock:
            return [k for k, _ in self.requests]

    # ---- lifecycle

    def start(self) -> FakeAesm:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(self.socket_path)
            sock.listen(16)
        except OSError:
            sock.close()
            raise
        self._listener = sock
        t = threading.Thread(target=self._accept_loop, name="fake-aesm", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        for t in list(self._threads):
            t.join(timeout=5)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)

    def __enter__(self) -> FakeAesm:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- serving

    def _accept_loop(self) -> None:
        assert self._listener is not None
        listener = self._listener
        while not self._stop.is_set():
            ready, _, _ = select.select([listener], [], [], 0.05)
            if not ready:
                continue
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with self._lock:
                self._conns.add(conn)
            t = threading.Thread(target=self._serve, args=(conn,), name="fake-aesm-conn", daemon=True)
            t.start()
            self._threads.append(t)

    @staticmethod
    def _recv_exact(conn: socket.socket, size: int) -> bytes | None:
        buf = bytearray()
        while len(buf) < size:
            chunk = conn.recv(size - len(buf))
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def _serve(self, conn: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                head = self._recv_exact(conn, 4)
                if head is None:
                    return
                (size,) = struct.unpack("<I", head)
                body = self._recv_exact(conn, size) if size else b""
                if body is None:
                    return
                try:
                    msgs = decode_request(body)
                except ValueError:
                    return  # aesmd drops a connection that sends something it cannot parse
                kind = next(iter(msgs), "")
                fields = msgs.get(kind, {})
                with self._lock:
                    self.requests.append((kind, dict(fields)))
                    mode = self._misbehaviour.get(kind) or self._misbehaviour.get("*")
                if not self._reply(conn, kind, fields, mode):
                    return
        except OSError:
            return
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _reply(self, conn: socket.socket, kind: str, fields: dict[str, Any], mode: str | None) -> bool:
        """Send the reply (or the fault); False closes the connection."""
        if mode == "close":
            return False
        if mode == "hang":
            self._stop.wait()
            return False
        if mode == "oversize":
            conn.sendall(struct.pack("<I", 0xFFFFFFF0))
            return False
        if mode == "short-length":
            conn.sendall(b"\x10\x00")
            return False
        if mode == "unsupported" or not kind:
            reply = encode_response("UnsupportedRequest", errorCode=AESM_UNEXPECTED_ERROR)
        elif mode == "garbage":
            reply = b"\x7a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"  # field 15, a length that is not a varint
        elif mode == "wrong-kind":
            other = "GetQuoteSizeEx" if kind != "GetQuoteSizeEx" else "GetQuoteEx"
            reply = encode_response(other, errorCode=AESM_SUCCESS)
        else:
            reply = encode_response(kind, **self._answer(kind, fields))
        frame = struct.pack("<I", len(reply)) + reply
        if mode == "truncate":
            conn.sendall(frame[:4 + len(reply) // 2])
            return False
        conn.sendall(frame)
        return True

    def _answer(self, kind: str, req: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            failure = self._failures.get(kind)
            if failure is not None:
                code, times = failure
                if times is not None:
                    failure[1] = times - 1
                    if times - 1 <= 0:
                        del self._failures[kind]
                return {"errorCode": code}
            override = dict(self._overrides.get(kind, {}))
        from inclavare.errors import InclavareError

        out: dict[str, Any]
        try:
            out = getattr(self, f"_on_{kind}")(req)
        except (InclavareError, ValueError) as e:  # answer as aesmd would, rather than drop the connection
            out = {"errorCode": AESM_UNEXPECTED_ERROR}
            self.errors.append(f"{kind}: {e}")
        out.update(override)
        return out

    def _key_ok(self, req: dict[str, Any]) -> bool:
        return req.get("att_key_id") == self.backend.ecdsa_key_id

    # one handler per request kind

    def _on_SelectAttKeyID(self, req: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        key = self.backend.epid_key_id if self.epid_first else self.backend.ecdsa_key_id
        return {"errorCode": AESM_SUCCESS, "selected_att_key_id": key}

    def _on_GetSupportedAttKeyIDNum(self, req: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        return {"errorCode": AESM_SUCCESS, "att_key_id_num": 2}

    def _on_GetSupportedAttKeyIDs(self, req: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        if req.get("buf_size", 0) < 2 * ATT_KEY_ID_SIZE:
            return {"errorCode": AESM_PARAMETER_ERROR}
        return {"errorCode": AESM_SUCCESS, "att_key_ids": self.backend.epid_key_id + self.backend.ecdsa_key_id}

    def _on_InitQuoteEx(self, req: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        if not self._key_ok(req):
            return {"errorCode": AESM_UNSUPPORTED_ATT_KEY_ID}
        size = len(self.backend.pub_key_id)
        if not req.get("b_pub_key_id", False):
            return {"errorCode": AESM_SUCCESS, "target_info": self.backend.qe_target_info(), "pub_key_id_size": size}
        if req.get("buf_size", 0) < size:
            return {"errorCode": AESM_PARAMETER_ERROR}
        self.initialized = True
        return {"errorCode": AESM_SUCCESS, "target_info": self.backend.qe_target_info(), "pub_key_id_size": size,
                "pub_key_id": self.backend.pub_key_id}

    def _on_GetQuoteSizeEx(self, req: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        if not self._key_ok(req):
            return {"errorCode": AESM_UNSUPPORTED_ATT_KEY_ID}
        return {"errorCode": AESM_SUCCESS, "quote_size": self.backend.quote_size()}

    def _on_GetQuoteEx(self, req: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        from inclavare.sim.quoting import SimQuoteError

        if not self._key_ok(req):
            return {"errorCode": AESM_UNSUPPORTED_ATT_KEY_ID}
        if self.require_init and not self.initialized:
            return {"errorCode": AESM_ATT_KEY_NOT_INITIALIZED}
        report = req.get("report", b"")
        if len(report) != 432:
            return {"errorCode": AESM_PARAMETER_ERROR}
        try:
            quote = self.backend.get_quote(report)
        except SimQuoteError:
            return {"errorCode": AESM_ERROR_REPORT}
        if req.get("buf_size", 0) < len(quote):
            return {"errorCode": AESM_PARAMETER_ERROR}
        return {"errorCode": AESM_SUCCESS, "quote": quote.ljust(req["buf_size"], b"\0")}

    def _on_GetLaunchToken(self, req: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        try:
            token = self.backend.launch_token(req.get("mr_enclave", b""), req.get("mr_signer", b""),
                                              req.get("se_attributes", b""))
        except PermissionError:
            return {"errorCode": AESM_GET_LICENSETOKEN_ERROR}
        except ValueError:
            return {"errorCode": AESM_PARAMETER_ERROR}
        return {"errorCode": AESM_SUCCESS, "token": token}
