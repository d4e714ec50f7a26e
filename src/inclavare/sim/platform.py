"""The simulated SGX platform's provisioning side: its own PCK PKI, QE identity, attestation key and collateral.

THE SIMULATED PLATFORM GIVES NO CONFIDENTIALITY. Its keys are files on the host; anyone who can read them can
forge its quotes. What it reproduces are the formats: the certificates, extensions, quotes, CRLs and
collateral JSON are shaped exactly like Intel's, so one verifier verifies real and simulated quotes and only
the trust anchor differs. Verifiers must never trust the sim root CA unless told to explicitly.

State (under ``<state_dir>/dcap``, directory 0700, every file 0600; ``state_dir`` as in
:mod:`inclavare.sim.report`: ``$INCLAVARE_SIM_STATE_DIR`` or ``/var/lib/inclavare/sim``), created on first use
under the state directory's flock, each file written to a temporary name, fsynced and renamed, and
``platform.json`` last (its presence marks a complete set):

    root-ca.key / .pem          sim root CA, self-signed, ECDSA P-256 ("Inclavare Containers SIM SGX Root CA")
    pck-platform-ca.key / .pem  sim PCK Platform CA, issued by the root
    pck.key / .pem              PCK leaf with Intel's SGX extension (PPID, TCB, PCE-ID, FMSPC, SGX type, ...)
    tcb-signing.key / .pem      signs the TCB info and QE identity collateral, issued by the root
    qe-attestation.key          the sim QE's attestation key (signs quotes)
    platform.json               PPID, QE ID, FMSPC, PCE-ID, SVNs, creation time

CRLs and collateral are issued fresh on request (``issueDate`` = now, ``nextUpdate`` = now + 30 days) so
they never go stale. Private keys are never logged and ``repr()`` does not show them.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from inclavare.atomicfile import fsync_dir, write_atomic
from inclavare.formats.dcap import SGX_EXTENSION_OID, PckConfiguration, PckExtension, SgxType
from inclavare.formats.sgx import AttributeFlags, Attributes, SgxFormatError, Xfrm
from inclavare.sim.report import (
    SIM_CPUSVN,
    EnclaveIdentity,
    SimPlatformError,
    check_private,
    default_state_dir,
    read_private,
    state_lock,
)

__all__ = [
    "COLLATERAL_VALIDITY",
    "ROOT_CA_CN",
    "SIM_FMSPC",
    "SimPlatform",
    "qe_identity_for",
]

SUBDIR = "dcap"
MANIFEST = "platform.json"
MANIFEST_VERSION = 1
ROOT_CA_CN = "Inclavare Containers SIM SGX Root CA"
PLATFORM_CA_CN = "Inclavare Containers SIM SGX PCK Platform CA"
PCK_CN = "Inclavare Containers SIM SGX PCK Certificate"
TCB_SIGNING_CN = "Inclavare Containers SIM SGX TCB Signing"
ORG = "Inclavare Containers (simulated SGX platform, not Intel)"
SIM_FMSPC = b"SIM\x00\x00\x00"  # "53494D000000": no Intel FMSPC family reads like this
SIM_PCE_ID = bytes(2)
DEFAULT_PCE_SVN = 1
DEFAULT_QE_ISVSVN = 1
QE_ISVPRODID = 1
TCB_EVALUATION_DATA_NUMBER = 1
COLLATERAL_VALIDITY = datetime.timedelta(days=30)
CA_VALIDITY = datetime.timedelta(days=15 * 365)
LEAF_VALIDITY = datetime.timedelta(days=7 * 365)
BACKDATE = datetime.timedelta(days=1)  # tolerate verifiers whose clock is a little behind
MAX_FILE = 64 * 1024
# The QE's SECS attributes, as Intel's QE: INIT | MODE64BIT | PROVISIONKEY, x87 + SSE.
QE_ATTRIBUTES = Attributes(int(AttributeFlags.INIT | AttributeFlags.MODE64BIT | AttributeFlags.PROVISIONKEY),
                           int(Xfrm.X87 | Xfrm.SSE))
# QE identity matching rules, the values Intel publishes for its QE.
QE_IDENTITY_MISCSELECT_MASK = "FFFFFFFF"
QE_IDENTITY_ATTRIBUTES_MASK = bytes.fromhex("FBFFFFFFFFFFFFFF0000000000000000")

_KEY_NAMES = ("root-ca", "pck-platform-ca", "pck", "tcb-signing", "qe-attestation")
_CERT_NAMES = ("root-ca", "pck-platform-ca", "pck", "tcb-signing")


def qe_identity_for(isvsvn: int) -> EnclaveIdentity:
    """The sim QE's enclave identity: MRENCLAVE / MRSIGNER derived from fixed labels (the build changes with
    the ISVSVN, as a real QE's MRENCLAVE does), ISVPRODID 1."""
    mrenclave = hashlib.sha256(b"INCLAVARE-SIM-QE-MRENCLAVE-V1" + isvsvn.to_bytes(2, "little")).digest()
    mrsigner = hashlib.sha256(b"INCLAVARE-SIM-QE-MRSIGNER-V1").digest()
    return EnclaveIdentity(mrenclave=mrenclave, mrsigner=mrsigner, attributes=QE_ATTRIBUTES,
                           isvprodid=QE_ISVPRODID, isvsvn=isvsvn)


# --------------------------------------------------------------------------------------------------
# Files


def _check_file(path: str, st: os.stat_result) -> None:
    check_private(f"sim platform file {path}", st)
    if st.st_size > MAX_FILE:
        raise SimPlatformError(f"sim platform file {path}: {st.st_size} bytes is too large")


def _read(path: str) -> bytes:
    data = read_private(path, f"sim platform file {path}", _check_file, MAX_FILE)
    if data is None:
        raise SimPlatformError(f"sim platform file {path}: missing (the set is incomplete; remove "
                               f"{os.path.dirname(path)} to recreate the simulated platform)")
    return data



def _check_dir(path: str) -> None:
    check_private(f"sim platform directory {path}", os.lstat(path), directory=True)


# --------------------------------------------------------------------------------------------------
# Certificates


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG)])


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject_cn: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
          issuer_key: ec.EllipticCurvePrivateKey, now: datetime.datetime, lifetime: datetime.timedelta, *,
          ca_pathlen: int | None = None, extra: x509.ExtensionType | None = None) -> x509.Certificate:
    pub = key.public_key()
    issuer_name = issuer.subject if issuer is not None else _name(subject_cn)
    aki = (x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()))
    is_ca = ca_pathlen is not None
    b = (x509.CertificateBuilder().subject_name(_name(subject_cn)).issuer_name(issuer_name).public_key(pub)
         .serial_number(x509.random_serial_number()).not_valid_before(now - BACKDATE)
         .not_valid_after(now + lifetime)
         .add_extension(aki, critical=False)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
         .add_extension(x509.KeyUsage(digital_signature=not is_ca, content_commitment=not is_ca,
                                      key_encipherment=False, data_encipherment=False, key_agreement=False,
                                      key_cert_sign=is_ca, crl_sign=is_ca, encipher_only=False,
                                      decipher_only=False), critical=True)
         .add_extension(x509.BasicConstraints(ca=is_ca, path_length=ca_pathlen), critical=True))
    if extra is not None:
        b = b.add_extension(extra, critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _raw_sig(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _raw_pub(key: ec.EllipticCurvePublicKey) -> bytes:
    n = key.public_numbers()
    return n.x.to_bytes(32, "big") + n.y.to_bytes(32, "big")


def _iso(t: datetime.datetime) -> str:
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now(now: datetime.datetime | None) -> datetime.datetime:
    t = now if now is not None else datetime.datetime.now(datetime.UTC)
    if t.tzinfo is None:
        raise SimPlatformError("sim collateral: 'now' must be timezone-aware")
    return t.astimezone(datetime.UTC).replace(microsecond=0)


def _compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Config:
    ppid: bytes
    qe_id: bytes
    platform_instance_id: bytes
    fmspc: bytes
    pce_id: bytes
    pce_svn: int
    cpusvn: bytes
    qe_isvsvn: int
    created: datetime.datetime

    def to_json(self) -> bytes:
        return json.dumps({
            "version": MANIFEST_VERSION, "ppid": self.ppid.hex(), "qe_id": self.qe_id.hex(),
            "platform_instance_id": self.platform_instance_id.hex(), "fmspc": self.fmspc.hex(),
            "pce_id": self.pce_id.hex(), "pce_svn": self.pce_svn, "cpusvn": self.cpusvn.hex(),
            "qe_isvsvn": self.qe_isvsvn, "created": _iso(self.created),
        }, indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, path: str, raw: bytes) -> _Config:
        try:
            d = json.loads(raw)
            if d.get("version") != MANIFEST_VERSION:
                raise ValueError(f"version {d.get('version')!r}, expected {MANIFEST_VERSION}")
            cfg = cls(
                ppid=bytes.fromhex(d["ppid"]), qe_id=bytes.fromhex(d["qe_id"]),
                platform_instance_id=bytes.fromhex(d["platform_instance_id"]), fmspc=bytes.fromhex(d["fmspc"]),
                pce_id=bytes.fromhex(d["pce_id"]), pce_svn=int(d["pce_svn"]), cpusvn=bytes.fromhex(d["cpusvn"]),
                qe_isvsvn=int(d["qe_isvsvn"]),
                created=datetime.datetime.strptime(d["created"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise SimPlatformError(f"sim platform file {path}: malformed ({e})") from None
        sizes = (("ppid", cfg.ppid, 16), ("qe_id", cfg.qe_id, 16), ("platform_instance_id",
                 cfg.platform_instance_id, 16), ("fmspc", cfg.fmspc, 6), ("pce_id", cfg.pce_id, 2),
                 ("cpusvn", cfg.cpusvn, 16))
        for name, value, size in sizes:
            if len(value) != size:
                raise SimPlatformError(f"sim platform file {path}: {name} is {len(value)} bytes, expected {size}")
        for name, svn in (("pce_svn", cfg.pce_svn), ("qe_isvsvn", cfg.qe_isvsvn)):
            if not 0 <= svn <= 0xFFFF:
                raise SimPlatformError(f"sim platform file {path}: {name}={svn} is not a 16-bit SVN")
        return cfg


class SimPlatform:
    """The simulated SGX platform's PKI, QE identity and collateral, loaded into memory.

    Open it on the host (:meth:`open`); it holds the private keys, so keep it out of logs (``repr`` hides them).
    """

    def __init__(self, state_dir: str, config: _Config, keys: dict[str, ec.EllipticCurvePrivateKey],
                 certs: dict[str, x509.Certificate]) -> None:
        self.state_dir = state_dir
        self.dir = os.path.join(state_dir, SUBDIR)
        self._cfg = config
        self._keys = keys
        self._certs = certs
        self.qe_identity = qe_identity_for(config.qe_isvsvn)
        self.pck_extension = self._extension_of(config)

    def __repr__(self) -> str:
        return f"SimPlatform(state_dir={self.state_dir!r}, fmspc={self.fmspc.hex()}, keys=<hidden>)"

    # ---- opening

    @classmethod
    def open(cls, state_dir: str | None = None, *, qe_isvsvn: int | None = None,
             pce_svn: int | None = None) -> SimPlatform:
        """Load the simulated platform from ``state_dir`` (default :func:`default_state_dir`), creating it on
        first use. ``qe_isvsvn`` / ``pce_svn`` choose the SVNs when it is created; given for an existing
        platform they must match what it was created with."""
        state_dir = state_dir or default_state_dir()
        d = os.path.join(state_dir, SUBDIR)
        for name, value in (("qe_isvsvn", qe_isvsvn), ("pce_svn", pce_svn)):
            if value is not None and (isinstance(value, bool) or not 0 <= value <= 0xFFFF):
                raise SimPlatformError(f"sim platform: {name}={value!r} is not a 16-bit SVN")
        if not os.path.exists(os.path.join(d, MANIFEST)):
            with state_lock(state_dir):
                if not os.path.exists(os.path.join(d, MANIFEST)):  # another process may have won the race
                    try:
                        cls._create(state_dir, d, qe_isvsvn, pce_svn)
                    except OSError as e:
                        raise SimPlatformError(f"sim platform {d}: cannot create ({e.strerror})") from None
        platform = cls._load(state_dir, d)
        for name, want, have in (("qe_isvsvn", qe_isvsvn, platform._cfg.qe_isvsvn),
                                 ("pce_svn", pce_svn, platform._cfg.pce_svn)):
            if want is not None and want != have:
                raise SimPlatformError(f"sim platform {d}: was created with {name}={have}, not {want} "
                                       "(remove the directory to recreate it)")
        return platform

    @classmethod
    def _create(cls, state_dir: str, d: str, qe_isvsvn: int | None, pce_svn: int | None) -> None:
        if not os.path.isdir(d):
            os.mkdir(d, 0o700)
        os.chmod(d, 0o700)
        _check_dir(d)
        now = _now(None)
        cfg = _Config(ppid=os.urandom(16), qe_id=os.urandom(16), platform_instance_id=os.urandom(16),
                      fmspc=SIM_FMSPC, pce_id=SIM_PCE_ID,
                      pce_svn=DEFAULT_PCE_SVN if pce_svn is None else pce_svn, cpusvn=SIM_CPUSVN,
                      qe_isvsvn=DEFAULT_QE_ISVSVN if qe_isvsvn is None else qe_isvsvn, created=now)
        keys = {name: _new_key() for name in _KEY_NAMES}
        root = _cert(ROOT_CA_CN, keys["root-ca"], None, keys["root-ca"], now, CA_VALIDITY, ca_pathlen=1)
        pca = _cert(PLATFORM_CA_CN, keys["pck-platform-ca"], root, keys["root-ca"], now, CA_VALIDITY, ca_pathlen=0)
        ext = cls._extension_of(cfg)
        pck = _cert(PCK_CN, keys["pck"], pca, keys["pck-platform-ca"], now, LEAF_VALIDITY,
                    extra=x509.UnrecognizedExtension(x509.ObjectIdentifier(SGX_EXTENSION_OID), ext.to_der()))
        tcb = _cert(TCB_SIGNING_CN, keys["tcb-signing"], root, keys["root-ca"], now, LEAF_VALIDITY)
        certs = {"root-ca": root, "pck-platform-ca": pca, "pck": pck, "tcb-signing": tcb}
        for name, key in keys.items():
            write_atomic(os.path.join(d, f"{name}.key"), _key_pem(key))
        for name, cert in certs.items():
            write_atomic(os.path.join(d, f"{name}.pem"), _pem(cert))
        fsync_dir(d)
        write_atomic(os.path.join(d, MANIFEST), cfg.to_json())  # last: marks the set complete
        fsync_dir(d)

    @staticmethod
    def _extension_of(cfg: _Config) -> PckExtension:
        return PckExtension(
            ppid=cfg.ppid, comp_svns=tuple(cfg.cpusvn), pce_svn=cfg.pce_svn, cpusvn=cfg.cpusvn, pce_id=cfg.pce_id,
            fmspc=cfg.fmspc, sgx_type=SgxType.SCALABLE, platform_instance_id=cfg.platform_instance_id,
            configuration=PckConfiguration(dynamic_platform=False, cached_keys=False, smt_enabled=True),
        )

    @classmethod
    def _load(cls, state_dir: str, d: str) -> SimPlatform:
        try:
            _check_dir(d)
        except FileNotFoundError:
            raise SimPlatformError(f"sim platform directory {d}: does not exist") from None
        manifest = os.path.join(d, MANIFEST)
        cfg = _Config.from_json(manifest, _read(manifest))
        keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        for name in _KEY_NAMES:
            path = os.path.join(d, f"{name}.key")
            try:
                key = serialization.load_pem_private_key(_read(path), password=None)
            except (ValueError, TypeError):
                raise SimPlatformError(f"sim platform file {path}: not an unencrypted PEM private key") from None
            if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
                raise SimPlatformError(f"sim platform file {path}: not an ECDSA P-256 key")
            keys[name] = key
        certs: dict[str, x509.Certificate] = {}
        for name in _CERT_NAMES:
            path = os.path.join(d, f"{name}.pem")
            try:
                cert = x509.load_pem_x509_certificate(_read(path))
            except ValueError:
                raise SimPlatformError(f"sim platform file {path}: not a PEM certificate") from None
            if _raw_pub(cert.public_key()) != _raw_pub(keys[name].public_key()):  # type: ignore[arg-type]
                raise SimPlatformError(f"sim platform file {path}: its public key does not match {name}.key")
            certs[name] = cert
        path = os.path.join(d, "pck.pem")
        try:
            ext = certs["pck"].extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID)).value
            in_cert = PckExtension.parse_der(ext.value)  # type: ignore[attr-defined]
        except (x509.ExtensionNotFound, SgxFormatError) as e:
            raise SimPlatformError(f"sim platform file {path}: bad SGX extension ({e})") from None
        if in_cert != cls._extension_of(cfg):
            raise SimPlatformError(f"sim platform file {path}: its SGX extension does not match {MANIFEST}")
        return cls(state_dir, cfg, keys, certs)

    # ---- platform values

    @property
    def fmspc(self) -> bytes:
        return self._cfg.fmspc

    @property
    def pce_id(self) -> bytes:
        return self._cfg.pce_id

    @property
    def pce_svn(self) -> int:
        return self._cfg.pce_svn

    @property
    def cpusvn(self) -> bytes:
        return self._cfg.cpusvn

    @property
    def qe_svn(self) -> int:
        return self._cfg.qe_isvsvn

    @property
    def qe_id(self) -> bytes:
        """16-byte QE ID (Intel's QE puts it in the first 16 bytes of the quote header's user data)."""
        return self._cfg.qe_id

    @property
    def ppid(self) -> bytes:
        return self._cfg.ppid

    @property
    def created(self) -> datetime.datetime:
        return self._cfg.created

    # ---- certificates

    def root_ca_der(self) -> bytes:
        return self._certs["root-ca"].public_bytes(serialization.Encoding.DER)

    def root_ca_pem(self) -> bytes:
        """The sim root CA certificate: give it to a verifier to trust simulated quotes."""
        return _pem(self._certs["root-ca"])

    def root_ca_fingerprint(self) -> str:
        """SHA-256 of the sim root CA's DER, lowercase hex."""
        return hashlib.sha256(self.root_ca_der()).hexdigest()

    def pck_platform_ca_pem(self) -> bytes:
        return _pem(self._certs["pck-platform-ca"])

    def pck_cert_pem(self) -> bytes:
        return _pem(self._certs["pck"])

    def tcb_signing_cert_pem(self) -> bytes:
        return _pem(self._certs["tcb-signing"])

    def pck_chain_pem(self) -> bytes:
        """PCK leaf, PCK Platform CA, root: what quote certification data type 5 carries."""
        return self.pck_cert_pem() + self.pck_platform_ca_pem() + self.root_ca_pem()

    def tcb_issuer_chain_pem(self) -> bytes:
        """TCB signing certificate, root: the issuer chain of the TCB info and QE identity."""
        return self.tcb_signing_cert_pem() + self.root_ca_pem()

    # ---- signing (what the QE and the PCE do with their keys)

    def attestation_public_key(self) -> bytes:
        """The QE attestation public key as a quote carries it: x || y, 64 bytes."""
        return _raw_pub(self._keys["qe-attestation"].public_key())

    def sign_with_attestation_key(self, data: bytes) -> bytes:
        """ECDSA-P256-SHA256 signature (r || s) of ``data`` by the QE attestation key."""
        return _raw_sig(self._keys["qe-attestation"], data)

    def sign_with_pck(self, data: bytes) -> bytes:
        """ECDSA-P256-SHA256 signature (r || s) of ``data`` by the PCK leaf key."""
        return _raw_sig(self._keys["pck"], data)

    # ---- CRLs

    def _crl(self, issuer: str, now: datetime.datetime | None) -> bytes:
        t = _now(now)
        cert, key = self._certs[issuer], self._keys[issuer]
        crl = (x509.CertificateRevocationListBuilder().issuer_name(cert.subject).last_update(t)
               .next_update(t + COLLATERAL_VALIDITY)
               .add_extension(x509.CRLNumber(1), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
               .sign(key, hashes.SHA256()))
        return crl.public_bytes(serialization.Encoding.DER)

    def root_ca_crl_der(self, now: datetime.datetime | None = None) -> bytes:
        """An empty CRL issued by the sim root CA (DER)."""
        return self._crl("root-ca", now)

    def pck_crl_der(self, now: datetime.datetime | None = None) -> bytes:
        """An empty CRL issued by the sim PCK Platform CA (DER)."""
        return self._crl("pck-platform-ca", now)

    # ---- TCB info and QE identity

    def tcb_info_json(self, now: datetime.datetime | None = None) -> bytes:
        """The raw ``tcbInfo`` object (TCB info v3 for the sim FMSPC): one UpToDate level at the platform's TCB."""
        t = _now(now)
        return _compact({
            "id": "SGX", "version": 3, "issueDate": _iso(t), "nextUpdate": _iso(t + COLLATERAL_VALIDITY),
            "fmspc": self.fmspc.hex().upper(), "pceId": self.pce_id.hex().upper(), "tcbType": 0,
            "tcbEvaluationDataNumber": TCB_EVALUATION_DATA_NUMBER,
            "tcbLevels": [{
                "tcb": {"sgxtcbcomponents": [{"svn": svn} for svn in self.pck_extension.comp_svns],
                        "pcesvn": self.pce_svn},
                "tcbDate": self._tcb_date(), "tcbStatus": "UpToDate",
            }],
        })

    def qe_identity_json(self, now: datetime.datetime | None = None) -> bytes:
        """The raw ``enclaveIdentity`` object (QE identity v2 of the sim QE)."""
        t = _now(now)
        qe = self.qe_identity
        attrs = bytes(a & m for a, m in zip(qe.attributes.pack(), QE_IDENTITY_ATTRIBUTES_MASK, strict=True))
        return _compact({
            "id": "QE", "version": 2, "issueDate": _iso(t), "nextUpdate": _iso(t + COLLATERAL_VALIDITY),
            "tcbEvaluationDataNumber": TCB_EVALUATION_DATA_NUMBER,
            "miscselect": qe.miscselect.to_bytes(4, "little").hex().upper(),  # report byte order, as Intel
            "miscselectMask": QE_IDENTITY_MISCSELECT_MASK,
            "attributes": attrs.hex().upper(), "attributesMask": QE_IDENTITY_ATTRIBUTES_MASK.hex().upper(),
            "mrsigner": qe.mrsigner.hex().upper(), "isvprodid": qe.isvprodid,
            "tcbLevels": [{"tcb": {"isvsvn": qe.isvsvn}, "tcbDate": self._tcb_date(), "tcbStatus": "UpToDate"}],
        })

    def _tcb_date(self) -> str:
        return _iso(self.created.replace(hour=0, minute=0, second=0))

    def sign_collateral(self, raw: bytes) -> str:
        """Hex r || s of the TCB signing key's ECDSA-P256-SHA256 signature over ``raw`` (exact bytes)."""
        return _raw_sig(self._keys["tcb-signing"], raw).hex()

    def tcb_info_document(self, now: datetime.datetime | None = None) -> bytes:
        """``{"tcbInfo":{...},"signature":"<hex>"}`` as PCS serves it; the signature covers the tcbInfo bytes."""
        raw = self.tcb_info_json(now)
        return b'{"tcbInfo":' + raw + b',"signature":"' + self.sign_collateral(raw).encode() + b'"}'

    def qe_identity_document(self, now: datetime.datetime | None = None) -> bytes:
        """``{"enclaveIdentity":{...},"signature":"<hex>"}`` as PCS serves it."""
        raw = self.qe_identity_json(now)
        return b'{"enclaveIdentity":' + raw + b',"signature":"' + self.sign_collateral(raw).encode() + b'"}'

    def collateral_bundle(self, now: datetime.datetime | None = None) -> dict[str, str]:
        """Collateral for this platform's quotes in the QuoteCollateralV3 JSON shape (as dcap-qvl reads it):
        PEM issuer chains, CRLs as hex DER, tcb_info / qe_identity as the exact signed JSON text, hex
        signatures."""
        t = _now(now)
        tcb_info = self.tcb_info_json(t)
        qe_identity = self.qe_identity_json(t)
        tcb_chain = self.tcb_issuer_chain_pem().decode()
        return {
            "pck_crl_issuer_chain": (self.pck_platform_ca_pem() + self.root_ca_pem()).decode(),
            "root_ca_crl": self.root_ca_crl_der(t).hex(),
            "pck_crl": self.pck_crl_der(t).hex(),
            "tcb_info_issuer_chain": tcb_chain,
            "tcb_info": tcb_info.decode(),
            "tcb_info_signature": self.sign_collateral(tcb_info),
            "qe_identity_issuer_chain": tcb_chain,
            "qe_identity": qe_identity.decode(),
            "qe_identity_signature": self.sign_collateral(qe_identity),
        }
