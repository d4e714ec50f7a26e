"""Collateral from Intel PCS or a PCCS-compatible service over HTTP(S), with an on-disk cache."""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import logging
import os
import re
import stat
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from inclavare.atomicfile import write_atomic
from inclavare.attestation.api import CollateralError
from inclavare.attestation.collateral.encoding import load_crl, parse_certificate_chain
from inclavare.attestation.collateral.files import PathArg
from inclavare.attestation.collateral.jsonbytes import MAX_DOCUMENT
from inclavare.attestation.collateral.model import DcapCollateral
from inclavare.attestation.collateral.pool import utc
from inclavare.attestation.collateral.signed import (
    QE_IDENTITY_KEY,
    TCB_INFO_KEY,
    SignedDocument,
    crl_next_update,
    next_update,
    parse_signed_document,
)

__all__ = ["INTEL_PCS_URL", "PcsClient"]

log = logging.getLogger("inclavare.attestation.collateral")

INTEL_PCS_URL = "https://api.trustedservices.intel.com"
INTEL_ROOT_CA_CRL_URL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
TEES = ("sgx", "tdx")
PCK_CAS = ("platform", "processor")
API_VERSIONS = ("v3", "v4")
# Response headers carrying the URL-encoded PEM issuer chain (API v4 name first, then the v3 one).
TCB_INFO_CHAIN_HEADERS = ("TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain")
QE_IDENTITY_CHAIN_HEADERS = ("SGX-Enclave-Identity-Issuer-Chain", "Enclave-Identity-Issuer-Chain")
PCK_CRL_CHAIN_HEADERS = ("SGX-PCK-CRL-Issuer-Chain",)
CACHE_ENTRY_VERSION = 1
_FMSPC = re.compile(r"[0-9a-fA-F]{12}")

T = TypeVar("T")


@dataclass(frozen=True)
class _Response:
    body: bytes
    chain: str | None  # the issuer-chain header, URL-decoded


class PcsClient:
    """GET collateral from Intel PCS or a PCCS-compatible service, keeping each response in ``cache_dir``.

    A cached response is served while its ``nextUpdate`` (the TCB info's, the identity's, the CRL's) has not
    passed and fetched again after; ``offline=True`` serves only the cache, stale entries included (the
    verifier reports expired collateral). Only well-formed responses are cached; cache files are written
    atomically, 0600 in a 0700 directory, one per URL. TLS certificates are verified (``ca_file`` pins a CA
    bundle). Every failure is a one-line :class:`CollateralError` naming the URL.
    """

    def __init__(self, base_url: str, cache_dir: PathArg | None = None, api_version: str = "v4",
                 ca_file: PathArg | None = None, timeout: float = 30.0, *, offline: bool = False,
                 root_ca_crl_url: str | None = None,
                 clock: Callable[[], datetime.datetime] | None = None) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise CollateralError(f"PCS URL {base_url!r}: expected http(s)://host[:port][/path]")
        if api_version not in API_VERSIONS:
            raise CollateralError(f"PCS API version {api_version!r}: expected one of {', '.join(API_VERSIONS)}")
        if root_ca_crl_url is not None and urllib.parse.urlsplit(root_ca_crl_url).scheme not in ("http", "https"):
            raise CollateralError(f"root CA CRL URL {root_ca_crl_url!r}: expected an http(s) URL")
        if not timeout > 0:
            raise CollateralError(f"PCS timeout {timeout!r}: expected a positive number of seconds")
        self.base_url = base_url.rstrip("/")
        self.api_version = api_version
        self.ca_file = os.fspath(ca_file) if ca_file is not None else None
        self.timeout = timeout
        self.offline = offline
        self.cache_dir = os.fspath(cache_dir) if cache_dir is not None else None
        if root_ca_crl_url is None:
            intel = parts.hostname == urllib.parse.urlsplit(INTEL_PCS_URL).hostname
            root_ca_crl_url = (INTEL_ROOT_CA_CRL_URL if intel
                               else f"{self.base_url}/sgx/certification/{api_version}/rootcacrl")
        self.root_ca_crl_url = root_ca_crl_url
        self._clock = clock or (lambda: datetime.datetime.now(datetime.UTC))
        self.cache_hits = 0
        self.fetches = 0
        self._opener: Any = None
        if offline and self.cache_dir is None:
            raise CollateralError("PCS client: offline use needs a cache directory")

    def __repr__(self) -> str:
        return f"PcsClient({self.base_url!r}, cache_dir={self.cache_dir!r}, offline={self.offline})"

    # ---- URLs

    def _tee(self, tee: str) -> str:
        if tee not in TEES:
            raise CollateralError(f"collateral TEE {tee!r}: expected one of {', '.join(TEES)}")
        if tee == "tdx" and self.api_version == "v3":
            raise CollateralError("TDX collateral needs PCS API v4")
        return tee

    def tcb_info_url(self, tee: str, fmspc: str) -> str:
        if not isinstance(fmspc, str) or not _FMSPC.fullmatch(fmspc):
            raise CollateralError(f"FMSPC {fmspc!r}: expected 6 bytes as 12 hex digits")
        return f"{self.base_url}/{self._tee(tee)}/certification/{self.api_version}/tcb?fmspc={fmspc.upper()}"

    def qe_identity_url(self, tee: str) -> str:
        return f"{self.base_url}/{self._tee(tee)}/certification/{self.api_version}/qe/identity"

    def pck_crl_url(self, ca: str) -> str:
        if ca not in PCK_CAS:
            raise CollateralError(f"PCK CA {ca!r}: expected one of {', '.join(PCK_CAS)}")
        return f"{self.base_url}/sgx/certification/{self.api_version}/pckcrl?ca={ca}&encoding=der"

    # ---- documents

    def tcb_info(self, tee: str, fmspc: str) -> tuple[SignedDocument, list[bytes]]:
        """The TCB info for ``fmspc`` (``tee`` "sgx" or "tdx") and its issuer chain (DER, signer first)."""
        return self._get(self.tcb_info_url(tee, fmspc), TCB_INFO_CHAIN_HEADERS,
                         lambda r, where: self._signed(r, TCB_INFO_KEY, TCB_INFO_CHAIN_HEADERS, where))

    def qe_identity(self, tee: str) -> tuple[SignedDocument, list[bytes]]:
        """The QE identity (``tee`` "sgx": QE, "tdx": TD_QE) and its issuer chain."""
        return self._get(self.qe_identity_url(tee), QE_IDENTITY_CHAIN_HEADERS,
                         lambda r, where: self._signed(r, QE_IDENTITY_KEY, QE_IDENTITY_CHAIN_HEADERS, where))

    def pck_crl(self, ca: str) -> tuple[bytes, list[bytes]]:
        """The PCK CRL of the Platform or Processor CA (DER) and its issuer chain."""
        def parse(r: _Response, where: str) -> tuple[tuple[bytes, list[bytes]], datetime.datetime | None]:
            der = load_crl(r.body, where=where)
            chain = parse_certificate_chain(self._need_chain(r, PCK_CRL_CHAIN_HEADERS, where),
                                            where=f"{where}: {PCK_CRL_CHAIN_HEADERS[0]}")
            return (der, chain), crl_next_update(der)

        return self._get(self.pck_crl_url(ca), PCK_CRL_CHAIN_HEADERS, parse)

    def root_ca_crl(self) -> bytes:
        """The Intel SGX Root CA CRL (DER)."""
        def parse(r: _Response, where: str) -> tuple[bytes, datetime.datetime | None]:
            der = load_crl(r.body, where=where)
            return der, crl_next_update(der)

        return self._get(self.root_ca_crl_url, (), parse)

    def collateral_for(self, tee: str = "sgx", fmspc: str = "", ca: str = "platform") -> DcapCollateral:
        """Everything a DCAP verifier needs for a quote from a platform with ``fmspc`` whose PCK certificate
        was issued by the ``ca`` ("platform" or "processor") PCK CA."""
        self.tcb_info_url(tee, fmspc), self.pck_crl_url(ca)  # check every argument before fetching anything
        tcb, tcb_chain = self.tcb_info(tee, fmspc)
        qe, qe_chain = self.qe_identity(tee)
        pck_crl, pck_crl_chain = self.pck_crl(ca)
        root_crl = self.root_ca_crl()
        return DcapCollateral(
            tcb_info_raw=tcb.raw, tcb_info_signature=tcb.signature, tcb_info_issuer_chain=tcb_chain,
            qe_identity_raw=qe.raw, qe_identity_signature=qe.signature, qe_identity_issuer_chain=qe_chain,
            pck_crl=pck_crl, root_ca_crl=root_crl, pck_crl_issuer_chain=pck_crl_chain,
            source=f"PCS {self.base_url}" + (" (offline cache)" if self.offline else ""),
        )

    # ---- response parsing

    @staticmethod
    def _need_chain(r: _Response, headers: tuple[str, ...], where: str) -> str:
        if not r.chain:
            raise CollateralError(f"{where}: the response has no {headers[0]} header")
        return r.chain

    def _signed(self, r: _Response, key: str, headers: tuple[str, ...],
                where: str) -> tuple[tuple[SignedDocument, list[bytes]], datetime.datetime | None]:
        doc = parse_signed_document(r.body, key, where=where)
        chain = parse_certificate_chain(self._need_chain(r, headers, where), where=f"{where}: {headers[0]}")
        return (doc, chain), next_update(doc.value, where=f"{where}: {key}")

    # ---- fetching and caching

    def _get(self, url: str, chain_headers: tuple[str, ...],
             parse: Callable[[_Response, str], tuple[T, datetime.datetime | None]]) -> T:
        where = f"PCS {url}"
        cached = self._cache_read(url)
        if cached is not None:
            try:
                result, nxt = parse(cached, f"{where} (cached)")
            except CollateralError:
                if self.offline:
                    raise
                # a damaged entry: fetch again
            else:
                if self.offline or (nxt is not None and self._now() < nxt):
                    self.cache_hits += 1
                    return result
        if self.offline:
            raise CollateralError(f"{where}: not in the collateral cache {self.cache_dir} (offline)")
        response = self._fetch(url, chain_headers, where)
        result, nxt = parse(response, where)
        self.fetches += 1
        self._cache_write(url, response, nxt)
        return result

    def _now(self) -> datetime.datetime:
        return utc(self._clock())

    def _build_opener(self) -> Any:
        import ssl
        import urllib.request

        try:
            context = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as e:
            raise CollateralError(f"CA file {self.ca_file}: {getattr(e, 'strerror', None) or e}") from None

        class Redirects(urllib.request.HTTPRedirectHandler):
            """Follow redirects only to http(s) and never from https down to http."""

            def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any,
                                 newurl: str) -> Any:
                old = urllib.parse.urlsplit(req.full_url).scheme
                new = urllib.parse.urlsplit(newurl).scheme
                if new not in ("http", "https") or (old == "https" and new != "https"):
                    raise CollateralError(f"PCS {req.full_url}: refusing redirect to {newurl}")
                return super().redirect_request(req, fp, code, msg, headers, newurl)

        return urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), Redirects())

    def _fetch(self, url: str, chain_headers: tuple[str, ...], where: str) -> _Response:
        import http.client
        import urllib.error
        import urllib.request

        if self._opener is None:
            self._opener = self._build_opener()
        request = urllib.request.Request(url, headers={"User-Agent": "inclavare-containers", "Accept": "*/*"})
        try:
            with self._opener.open(request, timeout=self.timeout) as resp:
                status = resp.status
                body = resp.read(MAX_DOCUMENT + 1)
                headers = resp.headers
        except urllib.error.HTTPError as e:
            detail = " ".join(x for x in (e.headers.get("Error-Code"), e.headers.get("Error-Message")) if x)
            e.close()
            raise CollateralError(f"{where}: HTTP {e.code} {detail or e.reason}".rstrip()) from None
        except urllib.error.URLError as e:
            raise CollateralError(f"{where}: {e.reason}") from None
        except (OSError, http.client.HTTPException, ValueError) as e:
            raise CollateralError(f"{where}: {e or type(e).__name__}") from None
        if status != 200:
            raise CollateralError(f"{where}: HTTP {status}")
        if len(body) > MAX_DOCUMENT:
            raise CollateralError(f"{where}: response larger than {MAX_DOCUMENT} bytes")
        chain = None
        for name in chain_headers:
            value = headers.get(name)
            if value:
                chain = urllib.parse.unquote(value.strip())
                break
        return _Response(body, chain)

    def _cache_path(self, url: str) -> str | None:
        if self.cache_dir is None:
            return None
        return os.path.join(self.cache_dir, hashlib.sha256(url.encode("utf-8")).hexdigest() + ".json")

    def _cache_read(self, url: str) -> _Response | None:
        path = self._cache_path(url)
        if path is None:
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as e:
            log.warning("collateral cache %s: %s; ignoring it", path, e.strerror)
            return None
        try:
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    return None
                raw = f.read(4 * MAX_DOCUMENT)
            entry = json.loads(raw)
            if (not isinstance(entry, dict) or entry.get("version") != CACHE_ENTRY_VERSION
                    or entry.get("url") != url or not isinstance(entry.get("body"), str)):
                raise ValueError("not an entry for this URL")
            chain = entry.get("issuer_chain")
            if chain is not None and not isinstance(chain, str):
                raise ValueError("bad issuer_chain")
            return _Response(base64.b64decode(entry["body"], validate=True), chain)
        except (OSError, ValueError, binascii.Error) as e:
            log.warning("collateral cache %s: damaged (%s); ignoring it", path, e)
            return None

    def _cache_dir_ready(self) -> str:
        d = self.cache_dir
        assert d is not None
        try:
            os.makedirs(d, mode=0o700, exist_ok=True)
            st = os.lstat(d)
        except OSError as e:
            raise CollateralError(f"collateral cache {d}: {e.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise CollateralError(f"collateral cache {d}: not a directory")
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise CollateralError(f"collateral cache {d}: must be owned by this user and not group/world-writable")
        return d

    def _cache_write(self, url: str, r: _Response, nxt: datetime.datetime | None) -> None:
        path = self._cache_path(url)
        if path is None:
            return
        self._cache_dir_ready()
        entry = {"version": CACHE_ENTRY_VERSION, "url": url, "fetched": self._now().isoformat(),
                 "next_update": nxt.isoformat() if nxt else None, "issuer_chain": r.chain,
                 "body": base64.b64encode(r.body).decode("ascii")}
        data = json.dumps(entry, indent=1).encode("utf-8") + b"\n"
        try:
            write_atomic(path, data, sync_dir=True)
        except OSError as e:  # a cache that cannot be written only costs a fetch next time
            log.warning("collateral cache %s: cannot write (%s)", path, e.strerror)
