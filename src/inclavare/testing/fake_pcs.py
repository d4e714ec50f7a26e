"""A local stand-in for Intel PCS / a PCCS, for tests: HTTP (or HTTPS with its own CA) on 127.0.0.1.

It serves the documents it is given in the shapes and at the paths the real service uses:

    GET /{sgx,tdx}/certification/{v3,v4}/tcb?fmspc=…     {"tcbInfo":…,"signature":…} + TCB-Info-Issuer-Chain
    GET /{sgx,tdx}/certification/{v3,v4}/qe/identity      {"enclaveIdentity":…,"signature":…}
                                                           + SGX-Enclave-Identity-Issuer-Chain
    GET /sgx/certification/{v3,v4}/pckcrl?ca=…[&encoding=der]   the CRL, DER or PEM + SGX-PCK-CRL-Issuer-Chain
    GET /sgx/certification/{v3,v4}/rootcacrl              the root CA CRL as hex DER (as PCCS serves it)
    GET /IntelSGXRootCA.der                               the root CA CRL as DER (as Intel's CDP serves it)

Issuer chains go in the response headers as URL-encoded PEM. Unknown resources get 404 with PCS's
``Error-Code`` / ``Error-Message`` headers. Every request is counted (``requests``, :meth:`count`) so tests
can tell cache hits from fetches, and :meth:`override` replaces any response to test bad ones.

    with FakePcs.for_bundle(bundle, tee="tdx", fmspc="b0c06f000000", ca="platform") as pcs:
        PcsClient(pcs.url, cache_dir).collateral_for("tdx", "b0c06f000000", "platform")
"""

from __future__ import annotations

import collections
import datetime
import http.server
import os
import ssl
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FakePcs", "pcs_document"]


def pcs_document(key: str, raw: bytes, signature_hex: str) -> bytes:
    """``{"<key>":<raw>,"signature":"<hex>"}`` with ``raw`` inserted byte for byte."""
    return b'{"' + key.encode() + b'":' + raw + b',"signature":"' + signature_hex.encode("ascii") + b'"}'


def _pem_crl(der: bytes) -> bytes:
    import base64

    b64 = base64.b64encode(der).decode("ascii")
    lines = "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64))
    return f"-----BEGIN X509 CRL-----\n{lines}\n-----END X509 CRL-----\n".encode("ascii")


@dataclass
class _Canned:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class FakePcs:
    """The fake service. Add documents (``add_*``) before or while it runs; ``start()``/``stop()`` or use it
    as a context manager. ``tls=True`` serves HTTPS with a fresh self-signed certificate for 127.0.0.1
    whose PEM is at ``ca_file``."""

    def __init__(self, *, api_version: str = "v4", tls: bool = False) -> None:
        self.api_version = api_version
        self.tls = tls
        self.tcb_infos: dict[tuple[str, str], tuple[bytes, str]] = {}  # (tee, FMSPC) -> (document, chain PEM)
        self.qe_identities: dict[str, tuple[bytes, str]] = {}  # tee -> (document, chain PEM)
        self.pck_crls: dict[str, tuple[bytes, str]] = {}  # ca -> (DER, chain PEM)
        self.root_ca_crl: bytes | None = None
        self.overrides: dict[str, _Canned] = {}
        self.requests: collections.Counter[str] = collections.Counter()  # "path?query" -> count
        self.ca_file: str | None = None
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    # ---- content

    def add_tcb_info(self, tee: str, fmspc: str, document: bytes, issuer_chain_pem: str | bytes) -> None:
        self.tcb_infos[(tee, fmspc.upper())] = (document, _text(issuer_chain_pem))

    def add_qe_identity(self, tee: str, document: bytes, issuer_chain_pem: str | bytes) -> None:
        self.qe_identities[tee] = (document, _text(issuer_chain_pem))

    def add_pck_crl(self, ca: str, der: bytes, issuer_chain_pem: str | bytes) -> None:
        self.pck_crls[ca] = (der, _text(issuer_chain_pem))

    def set_root_ca_crl(self, der: bytes) -> None:
        self.root_ca_crl = der

    def add_bundle(self, bundle: dict[str, str], *, tee: str, fmspc: str, ca: str) -> None:
        """Serve a collateral bundle (the QuoteCollateralV3 dict) as PCS would for this platform."""
        self.add_tcb_info(tee, fmspc, pcs_document("tcbInfo", bundle["tcb_info"].encode("utf-8"),
                                                   bundle["tcb_info_signature"]), bundle["tcb_info_issuer_chain"])
        self.add_qe_identity(tee, pcs_document("enclaveIdentity", bundle["qe_identity"].encode("utf-8"),
                                               bundle["qe_identity_signature"]), bundle["qe_identity_issuer_chain"])
        self.add_pck_crl(ca, bytes.fromhex(bundle["pck_crl"]), bundle["pck_crl_issuer_chain"])
        self.set_root_ca_crl(bytes.fromhex(bundle["root_ca_crl"]))

    @classmethod
    def for_bundle(cls, bundle: dict[str, str], *, tee: str, fmspc: str, ca: str, **kw: Any) -> FakePcs:
        pcs = cls(**kw)
        pcs.add_bundle(bundle, tee=tee, fmspc=fmspc, ca=ca)
        return pcs

    @classmethod
    def for_sim(cls, platform: Any, now: datetime.datetime | None = None, **kw: Any) -> FakePcs:
        """Serve a :class:`inclavare.sim.platform.SimPlatform`'s collateral (SGX, its FMSPC, Platform CA),
        using its PCS-shaped documents."""
        pcs = cls(**kw)
        fmspc = platform.fmspc.hex()
        tcb_chain = platform.tcb_issuer_chain_pem()
        pcs.add_tcb_info("sgx", fmspc, platform.tcb_info_document(now), tcb_chain)
        pcs.add_qe_identity("sgx", platform.qe_identity_document(now), tcb_chain)
        pcs.add_pck_crl("platform", platform.pck_crl_der(now), platform.pck_platform_ca_pem() + platform.root_ca_pem())
        pcs.set_root_ca_crl(platform.root_ca_crl_der(now))
        return pcs

    def override(self, path_and_query: str, status: int = 200, body: bytes = b"",
                 headers: dict[str, str] | None = None) -> None:
        """Answer requests for exactly ``path_and_query`` (e.g. "/sgx/certification/v4/qe/identity") with
        this response instead."""
        self.overrides[path_and_query] = _Canned(status, body, dict(headers or {}))

    # ---- requests seen

    def count(self, prefix: str = "") -> int:
        """How many requests had a path (and query) starting with ``prefix``."""
        with self._lock:
            return sum(n for path, n in self.requests.items() if path.startswith(prefix))

    # ---- serving

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakePcs is not running")
        port = self._server.server_address[1]
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{port}"

    def start(self) -> FakePcs:
        if self._server is not None:
            return self
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        if self.tls:
            self._tmp = tempfile.TemporaryDirectory(prefix="fake-pcs-")
            cert, key = _self_signed(self._tmp.name)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
            self.ca_file = cert
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="fake-pcs", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self.ca_file = None

    def __enter__(self) -> FakePcs:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- routing

    def respond(self, path_and_query: str) -> _Canned:
        with self._lock:
            self.requests[path_and_query] += 1
        canned = self.overrides.get(path_and_query)
        if canned is not None:
            return canned
        parts = urllib.parse.urlsplit(path_and_query)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parts.query).items()}
        segs = parts.path.strip("/").split("/")
        v = self.api_version
        if parts.path == "/IntelSGXRootCA.der" and self.root_ca_crl is not None:
            return _Canned(200, self.root_ca_crl, {"Content-Type": "application/pkix-crl"})
        if len(segs) >= 4 and segs[0] in ("sgx", "tdx") and segs[1:3] == ["certification", v]:
            tee, rest = segs[0], segs[3:]
            if rest == ["tcb"]:
                found = self.tcb_infos.get((tee, query.get("fmspc", "").upper()))
                if found:
                    header = "TCB-Info-Issuer-Chain" if v == "v4" else "SGX-TCB-Info-Issuer-Chain"
                    return _json(found[0], header, found[1])
            elif rest == ["qe", "identity"]:
                found = self.qe_identities.get(tee)
                if found:
                    return _json(found[0], "SGX-Enclave-Identity-Issuer-Chain", found[1])
            elif rest == ["pckcrl"] and tee == "sgx":
                crl = self.pck_crls.get(query.get("ca", ""))
                if crl:
                    der = query.get("encoding") == "der"
                    return _Canned(200, crl[0] if der else _pem_crl(crl[0]),
                                   {"Content-Type": "application/pkix-crl" if der else "application/x-pem-file",
                                    "SGX-PCK-CRL-Issuer-Chain": urllib.parse.quote(crl[1], safe="")})
            elif rest == ["rootcacrl"] and tee == "sgx" and self.root_ca_crl is not None:
                return _Canned(200, self.root_ca_crl.hex().encode("ascii"), {"Content-Type": "text/plain"})
        return _Canned(404, b"", {"Error-Code": "NotFound", "Error-Message": "no such collateral"})


def _text(pem: str | bytes) -> str:
    return pem.decode("ascii") if isinstance(pem, bytes) else pem


def _json(document: bytes, header: str, chain_pem: str) -> _Canned:
    return _Canned(200, document, {"Content-Type": "application/json",
                                   header: urllib.parse.quote(chain_pem, safe="")})


def _handler_for(pcs: FakePcs) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            canned = pcs.respond(self.path)
            self.send_response(canned.status)
            for name, value in canned.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(canned.body)))
            self.end_headers()
            self.wfile.write(canned.body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
            pass

    return Handler


def _self_signed(directory: str) -> tuple[str, str]:
    """A throwaway self-signed certificate for 127.0.0.1 (cert path, key path)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake PCS (tests only)")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path
