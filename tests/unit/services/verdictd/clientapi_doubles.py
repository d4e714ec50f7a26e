"""What the clientapi tests share: a Rego tester (policy.PolicyEngine when it is on this branch, else a small
regopy-backed stand-in with the same two methods), a store in a tmp dir, an admin PKI, and a server starter."""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from inclavare.services.verdictd.errors import VerdictdError

KEK = bytes(range(1, 33))
TOKEN = b"admin-token-0123456789abcdef"

POLICY = """package policy

default allow := false

allow if {
    input.mrEnclave == data.mrEnclave[_]
    input.svn >= data.svn
}
"""
REFERENCE = json.dumps({"mrEnclave": ["aa" * 32], "svn": 2}, indent=2).encode()
GOOD_INPUT = json.dumps({"mrEnclave": "aa" * 32, "svn": 3}).encode()
BAD_INPUT = json.dumps({"mrEnclave": "bb" * 32, "svn": 3}).encode()


class RegoTester:
    """The PolicyTester subset of policy.PolicyEngine: compile check, and TestOpa with the reference document
    as data (top level, as upstream) and the input document."""

    def check(self, policy_text: str) -> None:
        import regopy

        try:
            regopy.Interpreter().add_module("policy.rego", policy_text)
        except Exception as e:  # regopy's RegoError
            raise VerdictdError(f"policy: does not compile ({str(e).splitlines()[0]})") from None

    def test(self, policy_text: str, reference_json: str | bytes, input_json: str | bytes) -> dict[str, Any]:
        import regopy

        try:
            reference, doc = json.loads(reference_json), json.loads(input_json)
        except ValueError as e:
            raise VerdictdError(f"TestOpa: not JSON ({e})") from None
        r = regopy.Interpreter()
        try:
            r.add_module("policy.rego", policy_text)
            r.add_data_json(json.dumps(reference))
            r.set_input_term(json.dumps(doc))
            out = r.query("x = data.policy.allow")
        except Exception as e:
            raise VerdictdError(f"TestOpa: {str(e).splitlines()[0]}") from None
        allow = json.loads(str(out)).get("bindings", {}).get("x") is True
        return {"allow": allow, "parseInfo": {k: [v, reference.get(k)] for k, v in doc.items()}}


def make_tester() -> Any:
    try:
        from inclavare.services.verdictd.policy import PolicyEngine  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return RegoTester()
    return PolicyEngine()


@dataclass
class Pki:
    ca_pem: bytes
    server_cert: bytes
    server_key: bytes
    client_cert: bytes
    client_key: bytes
    other_ca_pem: bytes
    other_cert: bytes
    other_key: bytes


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(k: ec.EllipticCurvePrivateKey) -> bytes:
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey,
          ca: bool, san: list[x509.GeneralName] | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_pki() -> Pki:
    import ipaddress

    ca_key, other_ca_key = _key(), _key()
    ca = _cert("verdictd test CA", ca_key, "verdictd test CA", ca_key, True)
    other_ca = _cert("other CA", other_ca_key, "other CA", other_ca_key, True)
    skey, ckey, okey = _key(), _key(), _key()
    server = _cert("verdictd", skey, "verdictd test CA", ca_key, False,
                   [x509.DNSName("verdictd.test"), x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client = _cert("admin", ckey, "verdictd test CA", ca_key, False)
    other = _cert("intruder", okey, "other CA", other_ca_key, False)
    pem = serialization.Encoding.PEM
    return Pki(ca.public_bytes(pem), server.public_bytes(pem), _pem_key(skey), client.public_bytes(pem),
               _pem_key(ckey), other_ca.public_bytes(pem), other.public_bytes(pem), _pem_key(okey))


def short_socket(tmp_path: Path, name: str = "admin.sock") -> str:
    """A unix socket path short enough for sun_path (pytest's tmp paths can be long)."""
    path = str(tmp_path / name)
    if len(path.encode()) <= 100:
        return path
    import tempfile

    d = tempfile.mkdtemp(prefix="vdc")
    os.chmod(d, 0o700)
    return os.path.join(d, name)
