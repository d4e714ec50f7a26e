"""RATS-TLS connections over loopback sockets: verifier selection, mutual / one-way attestation, the verification
callback, freshness (and replay), rejections with their reasons, the asyncio and socket-style forms, the
sample programs, and interop with Debian's openssl s_client / s_server in null mode."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import http.client
import http.server
import json
import os
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from inclavare.attestation.api import AttestationError
from inclavare.ratls.attesters import SimAttester, sim_attester_identity
from inclavare.ratls.cert import make_certificate, parse_certificate
from inclavare.ratls.dice import TCG_DICE_TAGGED_EVIDENCE_OID, RatlsError
from inclavare.ratls.tls import (
    AsyncRatsTls,
    FreshnessError,
    PeerRejected,
    RatsTls,
    RatsTlsConfig,
    RatsTlsError,
    decode_freshness_hello,
    encode_freshness_hello,
    wrap_socket,
)
from inclavare.ratls.verifiers import (
    VERIFIERS,
    EvidenceRejected,
    PeerClaims,
    VerifyOptions,
    select_verifier,
    verifier_for,
    verify_peer_certificate,
)
from inclavare.sim.platform import SimPlatform

SRC = Path(__file__).resolve().parents[3] / "src"
CLAIMS = {"key_0": b"value_0\x00", "key_1": b"value_1\x00"}
TIMEOUT = 20.0
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


# --------------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = str(tmp_path_factory.mktemp("ratls-sim") / "state")
    SimPlatform.open(d)
    return d


@pytest.fixture(scope="module")
def sim(sim_dir: str) -> SimAttester:
    return SimAttester(sim_dir)


@pytest.fixture(scope="module")
def sim_root(sim_dir: str) -> str:
    return SimPlatform.open(sim_dir).root_ca_fingerprint()


def sim_config(sim: SimAttester, sim_root: str, **kw: Any) -> RatsTlsConfig:
    kw.setdefault("custom_claims", CLAIMS)
    return RatsTlsConfig(attester=sim, trust_sim=True, sim_root_fingerprints=(sim_root,), **kw)


def null_config(**kw: Any) -> RatsTlsConfig:
    return RatsTlsConfig(attester="nullattester", verifier="nullverifier", **kw)


def pair(server_cfg: RatsTlsConfig, client_cfg: RatsTlsConfig, message: bytes = b"ping") -> dict[str, Any]:
    """One connection over a socketpair: the server echoes what the client sends. Records peers, errors."""
    a, b = socket.socketpair()
    a.settimeout(TIMEOUT)
    b.settimeout(TIMEOUT)
    out: dict[str, Any] = {}

    def server() -> None:
        try:
            h = RatsTls(server_cfg, True)
            out["server"] = h
            out["server_peer"] = h.negotiate(a)
            h.transmit(h.receive(1024))
            h.close()
        except Exception as e:
            out["server_error"] = e
        finally:
            a.close()

    t = threading.Thread(target=server, daemon=True)
    t.start()
    try:
        h = RatsTls(client_cfg, False)
        out["client"] = h
        out["client_peer"] = h.negotiate(b)
        h.transmit(message)
        out["echo"] = h.receive(1024)
        h.close()
    except Exception as e:
        out["client_error"] = e
    finally:
        b.close()
    t.join(TIMEOUT)
    return out


def _name() -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Inclavare Containers"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "RATS-TLS")])


def cert_with(ext_value: bytes | None, *, key: Any = None, not_before: datetime.datetime | None = None,
              days: int = 30) -> tuple[bytes, bytes]:
    """A self-signed certificate carrying ``ext_value`` as the DICE evidence extension."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    t = not_before or datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    b = (x509.CertificateBuilder().subject_name(_name()).issuer_name(_name()).public_key(key.public_key())
         .serial_number(1).not_valid_before(t).not_valid_after(t + datetime.timedelta(days=days)))
    if ext_value is not None:
        b = b.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(TCG_DICE_TAGGED_EVIDENCE_OID),
                                                       ext_value), critical=False)
    cert = b.sign(key, hashes.SHA256())
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


@pytest.fixture(autouse=True)
def _both_tls_libraries(tls_library: str) -> str:
    """Every test runs twice (see the tls_library fixture in tests/conftest.py)."""
    return tls_library


def test_the_intended_tls_library_carries_the_connection(tls_library: str) -> None:
    from inclavare.ratls import tls as tls_module

    out = pair(null_config(mutual=True), null_config(mutual=True), b"x")
    assert out["echo"] == b"x"
    is_ssl = isinstance(out["client"].connection, tls_module._SslConnection)
    assert is_ssl == (tls_library == "ssl")


def dice_value(pem: bytes) -> bytes:
    ext = x509.load_pem_x509_certificate(pem).extensions.get_extension_for_oid(
        x509.ObjectIdentifier(TCG_DICE_TAGGED_EVIDENCE_OID))
    return bytes(ext.value.value)  # type: ignore[attr-defined]


def rejected_by_client(served: tuple[bytes, bytes], client_cfg: RatsTlsConfig) -> str:
    """Serve ``served`` (cert, key); the client's rejection message (the server sees the alert)."""
    server_cfg = RatsTlsConfig(certificate=served[0], private_key=served[1], freshness=client_cfg.freshness)
    out = pair(server_cfg, client_cfg)
    err = out.get("client_error")
    assert isinstance(err, PeerRejected), out
    assert isinstance(out.get("server_error"), RatsTlsError)
    return str(err)


# --------------------------------------------------------------------------------------------------
# Null mode, sim mutual, one-way


@pytest.mark.parametrize("mutual", [False, True])
def test_null_mode_both_ways(mutual: bool) -> None:
    out = pair(null_config(mutual=mutual), null_config(mutual=mutual), b"null mode data")
    assert "client_error" not in out and "server_error" not in out, out
    assert out["echo"] == b"null mode data"
    peer = out["client_peer"]
    assert (peer.verifier, peer.verified, peer.format, peer.tee) == ("nullverifier", False, "none", None)
    if mutual:
        assert out["server_peer"].verifier == "nullverifier"
    else:
        assert out["server_peer"] is None  # a one-way server verifies nobody
    assert out["client"].connection.get_protocol_version_name() == "TLSv1.3"


def test_sim_mutual_attestation(sim: SimAttester, sim_root: str) -> None:
    out = pair(sim_config(sim, sim_root, mutual=True), sim_config(sim, sim_root, mutual=True,
                                                                  custom_claims={"who": b"client"}))
    assert "client_error" not in out and "server_error" not in out, out
    ident = sim_attester_identity()
    for side, claims in (("client_peer", CLAIMS), ("server_peer", {"who": b"client"})):
        peer = out[side]
        assert (peer.verifier, peer.tee, peer.verified, peer.format) == ("sim", "sim", True, "dice")
        assert peer.claims["mrenclave"] == ident.mrenclave.hex()
        assert peer.custom_claims == claims
        assert peer.nonce is None
    # the server's certificate was made once and reused: both peers carry distinct keys
    assert out["client"].peer_certificate != out["server"].peer_certificate


def test_one_way_with_a_null_attester_client(sim: SimAttester, sim_root: str) -> None:
    client = RatsTlsConfig(attester="nullattester", trust_sim=True, sim_root_fingerprints=(sim_root,))
    out = pair(sim_config(sim, sim_root), client)
    assert out["echo"] == b"ping" and out["server_peer"] is None
    assert out["client_peer"].tee == "sim"


def test_endorsements_extension_is_the_collateral(sim: SimAttester, sim_root: str) -> None:
    out = pair(sim_config(sim, sim_root, provide_endorsements=True),
               RatsTlsConfig(trust_sim=True, sim_root_fingerprints=(sim_root,), require_collateral=True))
    peer = out["client_peer"]
    assert (peer.collateral_valid, peer.tcb_status, peer.collateral_source) == \
        (True, "UpToDate", "endorsements extension")
    # without endorsements and with collateral required: refused
    msg = str(pair(sim_config(sim, sim_root), RatsTlsConfig(trust_sim=True, sim_root_fingerprints=(sim_root,),
                                                            require_collateral=True))["client_error"])
    assert "no collateral" in msg and "required" in msg


def test_collateral_from_files_or_a_pccs(sim: SimAttester, sim_root: str, sim_dir: str) -> None:
    from inclavare.attestation.collateral import from_bundle
    from inclavare.testing.fake_pcs import FakePcs

    platform = SimPlatform.open(sim_dir)
    files = RatsTlsConfig(trust_sim=True, sim_root_fingerprints=(sim_root,),
                          collateral=from_bundle(platform.collateral_bundle()))
    peer = pair(sim_config(sim, sim_root), files)["client_peer"]
    assert (peer.collateral_source, peer.collateral_valid, peer.tcb_status) == ("configured", True, "UpToDate")
    with FakePcs.for_sim(platform) as pcs:
        pccs = RatsTlsConfig(trust_sim=True, sim_root_fingerprints=(sim_root,), pccs=pcs.url)
        peer = pair(sim_config(sim, sim_root), pccs)["client_peer"]
        assert (peer.collateral_source, peer.collateral_valid, peer.tcb_status) == ("PCCS", True, "UpToDate")
        assert pcs.count("/sgx/certification/v4/tcb?fmspc=53494D000000") == 1
    # collateral that does not verify is refused, whatever its source
    other = SimPlatform.open(os.path.join(sim_dir, "..", "other-platform"))
    bad = RatsTlsConfig(trust_sim=True, sim_root_fingerprints=(sim_root,),
                        collateral=from_bundle(other.collateral_bundle()))
    msg = str(pair(sim_config(sim, sim_root), bad)["client_error"])
    assert "collateral (configured) is not valid" in msg


# --------------------------------------------------------------------------------------------------
# Selection


def test_selection_rules_and_priorities() -> None:
    assert {n: v.priority for n, v in VERIFIERS.items()} == \
        {"sgx_ecdsa": 52, "tdx_ecdsa": 42, "sev_snp": 42, "sim": 10, "nullverifier": 0}
    assert select_verifier(None).name == "sgx_ecdsa"
    assert select_verifier("tdx_ecdsa").name == "tdx_ecdsa"
    with pytest.raises(RatlsError, match="unknown"):
        select_verifier("sgx_ecdsa_qve")
    with pytest.raises(RatlsError, match="trust_sim"):
        select_verifier("sim")
    assert select_verifier("sim", VerifyOptions(trust_sim=True, sim_root_fingerprints=("00" * 32,))).name == "sim"


def _synthetic(kind: str) -> bytes:
    """A certificate with a synthetic TDX quote / SNP report (the right header; not genuine)."""
    def tdx(rd: bytes) -> bytes:
        buf = bytearray(1400)
        buf[0:8] = (4).to_bytes(2, "little") + (2).to_bytes(2, "little") + (0x81).to_bytes(4, "little")
        buf[48 + 520:48 + 584] = rd
        return bytes(buf)

    def snp(rd: bytes) -> bytes:
        buf = bytearray(b"\x02" * 1184)
        buf[0x50:0x90] = rd
        return bytes(buf)

    return make_certificate(kind, tdx if kind == "tdx_ecdsa" else snp)[0]


def test_reselection_from_the_evidence_type(sim: SimAttester, sim_root: str) -> None:
    opts = VerifyOptions(trust_sim=True, sim_root_fingerprints=(sim_root,))
    sim_cert = make_certificate("sim", lambda rd: sim.collect(rd).data)[0]
    assert verifier_for(parse_certificate(sim_cert), opts) == "sim"
    assert verifier_for(parse_certificate(sim_cert), VerifyOptions()) == "sim"  # recognised, then refused
    assert verifier_for(parse_certificate(_synthetic("tdx_ecdsa")), opts) == "tdx_ecdsa"
    assert verifier_for(parse_certificate(_synthetic("sev_snp")), opts) == "sev_snp"
    # over TLS: the client selects sgx_ecdsa by priority and re-selects sim for the sim peer
    client = RatsTlsConfig(trust_sim=True, sim_root_fingerprints=(sim_root,))
    assert client.verifier_name == "sgx_ecdsa"
    assert pair(sim_config(sim, sim_root), client)["client_peer"].verifier == "sim"
    # re-selection goes to the TEE's verifier, which judges it (here: not genuine / no VCEK)
    for kind, who in (("tdx_ecdsa", "tdx_ecdsa:"), ("sev_snp", "sev_snp:")):
        with pytest.raises(EvidenceRejected, match=who):
            verify_peer_certificate(_synthetic(kind), select_verifier(None), enforced=False, options=opts)


def test_reselection_to_the_null_verifier_only_when_evidence_is_not_required(sim_root: str) -> None:
    lax = RatsTlsConfig(attester="nullattester", require_evidence=False)
    assert pair(null_config(), lax)["client_peer"].verifier == "nullverifier"
    msg = str(pair(null_config(), RatsTlsConfig(attester="nullattester"))["client_error"])
    assert "no evidence" in msg and "evidence is required" in msg


def test_named_verifier_is_enforced(sim: SimAttester, sim_root: str) -> None:
    tdx = RatsTlsConfig(verifier="tdx_ecdsa", trust_sim=True, sim_root_fingerprints=(sim_root,))
    out = pair(sim_config(sim, sim_root), tdx)
    msg = str(out["client_error"])
    assert "tdx_ecdsa is enforced" in msg and "sgx_ecdsa evidence" in msg
    assert "rejected" in str(out["server_error"]) or "alert" in str(out["server_error"])
    # sgx_ecdsa named: a sim quote never passes it, even with trust_sim
    sgx = RatsTlsConfig(verifier="sgx_ecdsa", trust_sim=True, sim_root_fingerprints=(sim_root,))
    msg = str(pair(sim_config(sim, sim_root), sgx)["client_error"])
    assert "sgx_ecdsa: the evidence does not verify" in msg and "sim verifier" in msg
    # and a named nullverifier takes the sim peer without judging its evidence
    peer = pair(sim_config(sim, sim_root), RatsTlsConfig(verifier="nullverifier"))["client_peer"]
    assert (peer.verifier, peer.verified, peer.custom_claims) == ("nullverifier", False, CLAIMS)


def test_sim_evidence_needs_trust_sim(sim: SimAttester, sim_root: str) -> None:
    msg = str(pair(sim_config(sim, sim_root), RatsTlsConfig())["client_error"])
    assert "simulated platform" in msg and "trust_sim" in msg
    # trusting another sim root is not trusting this one
    other = RatsTlsConfig(verifier="sim", trust_sim=True, sim_root_fingerprints=("ab" * 32,))
    msg = str(pair(sim_config(sim, sim_root), other)["client_error"])
    assert "sim: the evidence does not verify" in msg


# --------------------------------------------------------------------------------------------------
# The verification callback


def test_callback_sees_verified_claims_and_decides(sim: SimAttester, sim_root: str) -> None:
    seen: list[PeerClaims] = []

    def accept(peer: PeerClaims) -> bool:
        seen.append(peer)
        return bool(peer.claims["mrenclave"] == sim_attester_identity().mrenclave.hex())

    out = pair(sim_config(sim, sim_root), sim_config(sim, sim_root, callback=accept))
    assert out["echo"] == b"ping" and seen[0].custom_claims == CLAIMS and seen[0].verified

    msg = str(pair(sim_config(sim, sim_root), sim_config(sim, sim_root, callback=lambda p: False))["client_error"])
    assert msg.endswith("rejected by the verification callback")

    def policy(peer: PeerClaims) -> bool:
        raise AttestationError(f"mrsigner {peer.claims['mrsigner'][:8]}... is not on the allow list")

    msg = str(pair(sim_config(sim, sim_root), sim_config(sim, sim_root, callback=policy))["client_error"])
    assert "rejected by the verification callback: mrsigner" in msg and "allow list" in msg

    def broken(peer: PeerClaims) -> bool:
        return 1 / 0 > 0

    msg = str(pair(sim_config(sim, sim_root), sim_config(sim, sim_root, callback=broken))["client_error"])
    assert "verification callback failed: ZeroDivisionError" in msg


# --------------------------------------------------------------------------------------------------
# Freshness


def test_freshness_hello_bytes() -> None:
    nonce = bytes(range(32))
    assert encode_freshness_hello(True, nonce) == b"RTFN\x01\x01\x20" + nonce
    assert encode_freshness_hello(False, None) == b"RTFN\x01\x00\x00"
    assert decode_freshness_hello(b"RTFN\x01\x01\x20") == (True, 32)
    for bad, why in ((b"RTFN\x02\x00\x00", "version 2"), (b"RTFN\x01\x80\x00", "unknown flags"),
                     (b"RTFN\x01\x00\x08", "8 bytes"), (b"\x16\x03\x01\x02\x00\x01\x00", "without the freshness"),
                     (b"RTF", "closed the connection")):
        with pytest.raises(FreshnessError, match=why):
            decode_freshness_hello(bad)


class Recording(RatsTlsConfig):
    """Keeps every certificate and key it presents (what an attacker who once got the key would hold)."""

    presented: list[tuple[bytes, bytes]]

    def certificate_and_key(self, nonce: bytes | None = None) -> tuple[bytes, bytes]:
        got = super().certificate_and_key(nonce)
        self.__dict__.setdefault("presented", []).append(got)
        return got


def test_freshness_fresh_certificates_and_replay(sim: SimAttester, sim_root: str) -> None:
    server = Recording(attester=sim, freshness=True, custom_claims=CLAIMS, mutual=True, trust_sim=True,
                       sim_root_fingerprints=(sim_root,))
    client = sim_config(sim, sim_root, freshness=True, mutual=True)
    out = pair(server, client)
    assert "client_error" not in out and "server_error" not in out, out
    for me, peer in (("client", "client_peer"), ("server", "server_peer")):
        assert out[peer].nonce == out[me].nonce and len(out[me].nonce) == 32
    assert out["client_peer"].custom_claims == CLAIMS  # the nonce is reported apart from the custom claims
    second = pair(server, client)
    assert second["client_peer"].nonce != out["client_peer"].nonce  # a new certificate per connection
    assert len(server.presented) == 2 and server.presented[0] != server.presented[1]

    # the first session's certificate and key, served again: refused although the key is genuine
    cert, key = server.presented[0]
    replay = RatsTlsConfig(certificate=cert, private_key=key, freshness=True, mutual=True, trust_sim=True,
                           sim_root_fingerprints=(sim_root,))
    out = pair(replay, client)
    msg = str(out["client_error"])
    assert "freshness: nonce mismatch" in msg and "replayed certificate" in msg
    assert out["client"].nonce.hex() in msg

    # a certificate made without freshness has no nonce claim at all
    stale = sim_config(sim, sim_root).certificate_and_key()
    msg = rejected_by_client(stale, sim_config(sim, sim_root, freshness=True))
    assert "no nonce claim" in msg


def test_freshness_must_be_on_both_sides(sim: SimAttester, sim_root: str) -> None:
    out = pair(sim_config(sim, sim_root, freshness=True), sim_config(sim, sim_root))
    assert isinstance(out["server_error"], FreshnessError)
    assert "started TLS without the freshness exchange" in str(out["server_error"])
    out = pair(sim_config(sim, sim_root), sim_config(sim, sim_root, freshness=True))
    assert isinstance(out["client_error"], FreshnessError)
    out = pair(sim_config(sim, sim_root, freshness=True, mutual=True), sim_config(sim, sim_root, freshness=True))
    assert "mutual attestation is configured on the peer only" in str(out["client_error"])
    assert "mutual attestation is configured on this side only" in str(out["server_error"])


# --------------------------------------------------------------------------------------------------
# Rejections, each with its reason


@pytest.fixture(scope="module")
def good_sim_cert(sim: SimAttester) -> tuple[bytes, bytes]:
    return make_certificate("sim", lambda rd: sim.collect(rd).data, custom_claims=CLAIMS)


def test_rejected_no_evidence(sim_root: str) -> None:
    msg = rejected_by_client(make_certificate("nullattester", None), RatsTlsConfig(verifier="sim", trust_sim=True,
                                                                                    sim_root_fingerprints=(sim_root,)))
    assert "no evidence" in msg and "verifier sim is enforced" in msg


def test_rejected_evidence_bound_to_another_key(good_sim_cert: tuple[bytes, bytes], sim: SimAttester,
                                                sim_root: str) -> None:
    msg = rejected_by_client(cert_with(dice_value(good_sim_cert[0])), sim_config(sim, sim_root))
    assert "bound to another key" in msg


def test_rejected_wrong_report_data(sim: SimAttester, sim_root: str) -> None:
    made = make_certificate("sim", lambda rd: sim.collect(hashlib.sha256(b"other").digest()).data)
    msg = rejected_by_client(made, sim_config(sim, sim_root))
    assert "wrong report data" in msg


def test_rejected_tampered_cbor(good_sim_cert: tuple[bytes, bytes], sim: SimAttester, sim_root: str) -> None:
    value = dice_value(good_sim_cert[0])
    assert value[3] == 0x82  # tag 60000 (d9 ea 60), then the 2-entry array
    indefinite = value[:3] + b"\x9f" + value[4:] + b"\xff"
    msg = rejected_by_client(cert_with(indefinite), sim_config(sim, sim_root))
    assert "DICE evidence extension: not valid CBOR" in msg and "indefinite length" in msg
    msg = rejected_by_client(cert_with(value[:-7]), sim_config(sim, sim_root))
    assert "DICE evidence extension" in msg


def test_rejected_unknown_tag(sim: SimAttester, sim_root: str) -> None:
    value = cbor2.dumps(cbor2.CBORTag(12345, [b"\x00" * 64, cbor2.dumps({"pubkey-hash": b"x"})]))
    msg = rejected_by_client(cert_with(value), sim_config(sim, sim_root))
    assert "unknown CBOR tag 12345" in msg


def test_rejected_oversized_extension(sim: SimAttester, sim_root: str) -> None:
    value = cbor2.dumps(cbor2.CBORTag(60000, [b"\x00" * 70000, b"\xa0"]))
    msg = rejected_by_client(cert_with(value), sim_config(sim, sim_root))
    assert "exceeds the 65536-byte cap" in msg


def test_rejected_expired_and_not_yet_valid(sim: SimAttester, sim_root: str) -> None:
    now = datetime.datetime.now(datetime.UTC)
    fn = lambda rd: sim.collect(rd).data  # noqa: E731
    expired = make_certificate("sim", fn, now=now - datetime.timedelta(days=400))
    assert "expired" in rejected_by_client(expired, sim_config(sim, sim_root))
    future = make_certificate("sim", fn, now=now + datetime.timedelta(hours=3))
    assert "not yet valid" in rejected_by_client(future, sim_config(sim, sim_root))
    # the same certificate judged as of its own validity window is fine
    later = pair(RatsTlsConfig(certificate=future[0], private_key=future[1]),
                 sim_config(sim, sim_root, as_of=now + datetime.timedelta(hours=4)))
    assert later["client_peer"].tee == "sim"


def test_server_rejects_a_client_in_mutual_mode(sim: SimAttester, sim_root: str) -> None:
    client = RatsTlsConfig(attester="nullattester", mutual=True, trust_sim=True, sim_root_fingerprints=(sim_root,))
    out = pair(sim_config(sim, sim_root, mutual=True), client)
    assert isinstance(out["server_error"], PeerRejected) and "no evidence" in str(out["server_error"])
    assert isinstance(out.get("client_error"), RatsTlsError)


def test_configuration_errors() -> None:
    with pytest.raises(RatlsError, match="crypto 'dsa'"):
        RatsTls(RatsTlsConfig(crypto="dsa"), True)
    with pytest.raises(RatlsError, match="reserved"):
        RatsTls(RatsTlsConfig(freshness=True, custom_claims={"nonce": b"x"}, attester="nullattester"), True)
    with pytest.raises(AttestationError, match="sim"):
        RatsTls(RatsTlsConfig(verifier="sim"), False)


def test_rsa_certificates(sim: SimAttester, sim_root: str) -> None:
    out = pair(sim_config(sim, sim_root, crypto="rsa"), sim_config(sim, sim_root))
    peer = out["client_peer"]
    assert peer.tee == "sim"
    assert parse_certificate(out["client"].peer_certificate).public_key_type == "rsa"


# --------------------------------------------------------------------------------------------------
# asyncio


def test_asyncio_handshake_and_echo(sim: SimAttester, sim_root: str) -> None:
    server_cfg = sim_config(sim, sim_root, mutual=True, freshness=True)
    client_cfg = sim_config(sim, sim_root, mutual=True, freshness=True)

    async def main() -> tuple[Any, Any, bytes]:
        seen: dict[str, Any] = {}

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            h = AsyncRatsTls(server_cfg, True)
            seen["server_peer"] = await h.negotiate(reader, writer)
            await h.transmit(await h.receive(1024))
            await h.close()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            h = AsyncRatsTls(client_cfg, False)
            peer = await h.negotiate(reader, writer)
            await h.transmit(b"x" * 50000)
            got = b""
            while len(got) < 1024:  # the server echoes one read's worth
                chunk = await h.receive(65536)
                if not chunk:
                    break
                got += chunk
            await h.close()
            writer.close()
            # and over a plain non-blocking socket
            sock = socket.create_connection(("127.0.0.1", port))
            h2 = AsyncRatsTls(client_cfg, False)
            peer2 = await h2.negotiate(sock)
            await h2.transmit(b"over a socket")
            echo2 = await h2.receive(100)
            sock.close()
            assert echo2 == b"over a socket" and peer2 is not None and peer2.nonce == h2.nonce
        return peer, seen["server_peer"], got

    peer, server_peer, got = asyncio.run(asyncio.wait_for(main(), TIMEOUT))
    assert got == b"x" * 1024
    assert peer.tee == "sim" and server_peer.tee == "sim" and peer.nonce is not None


def test_asyncio_rejection(sim: SimAttester, sim_root: str) -> None:
    async def main() -> BaseException:
        a, b = socket.socketpair()

        async def serve() -> None:
            h = AsyncRatsTls(sim_config(sim, sim_root), True)
            try:
                await h.negotiate(a)
            except RatsTlsError:
                pass
            a.close()

        task = asyncio.ensure_future(serve())
        try:
            await AsyncRatsTls(RatsTlsConfig(verifier="tdx_ecdsa"), False).negotiate(b)
        except RatsTlsError as e:
            return e
        finally:
            b.close()
            await task
        raise AssertionError("the handshake succeeded")

    err = asyncio.run(asyncio.wait_for(main(), TIMEOUT))
    assert isinstance(err, PeerRejected) and "tdx_ecdsa is enforced" in str(err)


# --------------------------------------------------------------------------------------------------
# ssl-style sockets in stock servers and clients


def test_wrap_socket_with_socketserver_and_http_client(sim: SimAttester, sim_root: str) -> None:
    server_cfg = sim_config(sim, sim_root, mutual=True)
    client_cfg = sim_config(sim, sim_root, mutual=True, custom_claims={"app": b"http client"})

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            peer = self.request.peer_claims
            body = json.dumps({"path": self.path, "tee": peer.tee,
                               "app": peer.custom_claims["app"].decode()}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

        def get_request(self) -> tuple[Any, Any]:
            sock, addr = super().get_request()
            return wrap_socket(sock, server_cfg, server_side=True, do_handshake_on_connect=False), addr

    class Connection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = wrap_socket(socket.create_connection((self.host, self.port), TIMEOUT), client_cfg)

    with Server(("127.0.0.1", 0), Handler) as srv:
        t = threading.Thread(target=srv.serve_forever, daemon=True)
        t.start()
        try:
            conn = Connection("127.0.0.1", srv.server_address[1], timeout=TIMEOUT)
            for path in ("/one", "/two"):  # keep-alive: two requests on one RATS-TLS connection
                conn.request("GET", path)
                resp = conn.getresponse()
                assert resp.status == 200
                assert json.loads(resp.read()) == {"path": path, "tee": "sim", "app": "http client"}
            s: Any = conn.sock
            assert s.version() in ("TLSv1.3", "TLSv1.2") and s.peer_claims.custom_claims == CLAIMS
            assert s.getpeercert()["tee"] == "sim"
            assert parse_certificate(s.getpeercert(binary_form=True)).custom_claims == CLAIMS
            conn.close()
        finally:
            srv.shutdown()


def test_receive_timeout_leaves_the_connection_usable() -> None:
    a, b = socket.socketpair()
    go = threading.Event()

    def server() -> None:
        h = RatsTls(null_config(), True)
        h.negotiate(a)
        go.wait(TIMEOUT)
        h.transmit(b"late")
        h.close()

    t = threading.Thread(target=server, daemon=True)
    t.start()
    h = RatsTls(null_config(), False)
    h.negotiate(b)
    b.settimeout(0.05)
    with pytest.raises(TimeoutError):
        h.receive(10)
    go.set()
    b.settimeout(TIMEOUT)
    assert h.receive(10) == b"late"
    t.join(TIMEOUT)
    a.close()
    b.close()


def test_wrap_socket_makefile_text() -> None:
    a, b = socket.socketpair()
    out: dict[str, Any] = {}

    def server() -> None:
        with wrap_socket(a, null_config(), server_side=True) as s:
            f = s.makefile("rw", encoding="utf-8", newline="\n")
            line = f.readline()
            f.write(line.upper())
            f.flush()
            f.close()
            out["line"] = line

    t = threading.Thread(target=server, daemon=True)
    t.start()
    with wrap_socket(b, null_config()) as c:
        c.sendall(b"hello over rats-tls\n")
        assert c.recv(100) == b"HELLO OVER RATS-TLS\n"
    t.join(TIMEOUT)
    assert out["line"] == "hello over rats-tls\n"


# --------------------------------------------------------------------------------------------------
# The programs


def _program(name: str, *args: str, env: dict[str, str]) -> list[str]:
    return [sys.executable, "-m", f"inclavare.cli.{name}", *args]


@pytest.fixture
def program_env(sim_dir: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env["INCLAVARE_SIM_STATE_DIR"] = sim_dir
    return env


def _start_server(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(_program("rats_tls_server", *args, env=env), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        if "listening on" in line:
            return proc, int(line.rsplit(":", 1)[1])
    proc.kill()
    raise AssertionError(f"the server did not start: {proc.communicate()}")


def test_programs_end_to_end(program_env: dict[str, str]) -> None:
    server, port = _start_server(["-a", "sim", "-m", "--trust-sim", "--freshness", "-p", "0", "-n", "2", "-D"],
                                 program_env)
    try:
        ok = subprocess.run(_program("rats_tls_client", "-a", "sim", "-m", "--trust-sim", "--freshness", "-p",
                                     str(port), env=program_env), env=program_env, capture_output=True, text=True,
                            timeout=TIMEOUT)
        assert ok.returncode == 0, ok.stderr
        lines = ok.stdout.splitlines()
        assert "custom_claims[0] -> name: 'key_0' value_size: 8 value: 'value_0'" in lines
        assert "custom_claims[1] -> name: 'key_1' value_size: 8 value: 'value_1'" in lines
        assert "Server: Hello and welcome to RATS-TLS!" in lines
        peer = json.loads(next(x for x in lines if x.startswith("Peer claims: ")).split(": ", 1)[1])
        assert (peer["verifier"], peer["tee"], peer["verified"]) == ("sim", "sim", True)
        assert peer["custom_claims"] == {k: v.hex() for k, v in CLAIMS.items()} and peer["nonce"]
        bad = subprocess.run(_program("rats_tls_client", "-a", "sim", "-m", "--freshness", "-v", "tdx_ecdsa",
                                      "-p", str(port), env=program_env), env=program_env, capture_output=True,
                             text=True, timeout=TIMEOUT)
        assert bad.returncode == 1
        err = bad.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("rats-tls-client: ") and "tdx_ecdsa is enforced" in err[0]
        out, errs = server.communicate(timeout=TIMEOUT)
        assert server.returncode == 0
        assert "Client: Hello and welcome to RATS-TLS!" in errs and "client verified by sim" in errs
        assert "[DEBUG]" in errs  # -D
        assert "Welcome to RATS-TLS sample server" in out
    finally:
        server.kill()
        server.wait()


def test_program_flag_errors(program_env: dict[str, str]) -> None:
    for args, want in ((["-t", "nulltls"], "only TLS wrapper is openssl"), (["-c", "nullcrypto"], "-c"),
                       (["-p", "http"], "not a port"), (["-v", "bogus"], "unknown"),
                       (["-l", "loud"], "expected one of")):
        p = subprocess.run(_program("rats_tls_client", *args, env=program_env), env=program_env,
                           capture_output=True, text=True, timeout=TIMEOUT)
        assert p.returncode == 1 and want in p.stderr and len(p.stderr.strip().splitlines()) == 1, (args, p.stderr)


# --------------------------------------------------------------------------------------------------
# Interop with an independent TLS stack (null mode)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def null_server() -> Iterator[tuple[int, dict[str, Any]]]:
    listener = socket.create_server(("127.0.0.1", 0))
    seen: dict[str, Any] = {}

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            h = RatsTls(null_config(), True)
            h.negotiate(conn)
            seen["version"] = h.connection.get_protocol_version_name()
            data = h.receive(256)
            h.transmit(data)
            h.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield listener.getsockname()[1], seen
    t.join(TIMEOUT)
    listener.close()


@needs_openssl
@pytest.mark.parametrize("version", ["-tls1_3", "-tls1_2"])
def test_openssl_s_client_against_our_server(null_server: tuple[int, dict[str, Any]], version: str) -> None:
    port, seen = null_server
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", version, "-quiet"],
                       input=b"hello from s_client\n", capture_output=True, timeout=TIMEOUT)
    assert b"hello from s_client\n" in p.stdout, p.stderr
    assert seen["version"] == {"-tls1_3": "TLSv1.3", "-tls1_2": "TLSv1.2"}[version]


@needs_openssl
def test_our_client_against_openssl_s_server(tmp_path: Path) -> None:
    cert, key = make_certificate("nullattester", None)
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(key)
    port = _free_port()
    server = subprocess.Popen(["openssl", "s_server", "-accept", str(port), "-cert", str(tmp_path / "c.pem"),
                               "-key", str(tmp_path / "k.pem"), "-rev", "-naccept", "1"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.05)
        with sock:
            h = RatsTls(null_config(), False)
            peer = h.negotiate(sock)
            assert peer is not None and peer.verifier == "nullverifier"
            assert peer.certificate_der == x509.load_pem_x509_certificate(cert).public_bytes(
                serialization.Encoding.DER)
            h.transmit(b"rats-tls\n")
            got = b""
            while b"\n" not in got:
                chunk = h.receive(100)
                if not chunk:
                    break
                got += chunk
            assert got.strip() == b"slt-star"
            h.close()
    finally:
        server.kill()
        server.wait()


def test_programs_take_a_trust_folder(program_env: dict[str, str], sim_dir: str, tmp_path: Path) -> None:
    """--certs DIR on the RATS-TLS programs: a root CA CRL kept in the folder completes collateral that carries none
    (the sim platform's bundle without its root CA CRL); without the folder that collateral is refused."""
    from inclavare.sim.platform import SimPlatform

    platform = SimPlatform.open(sim_dir)
    bundle = platform.collateral_bundle()
    root_crl = bytes.fromhex(bundle.pop("root_ca_crl"))
    (tmp_path / "bundle.json").write_text(json.dumps(bundle))
    folder = tmp_path / "trust"
    folder.mkdir()
    (folder / "sim_root.pem").write_bytes(platform.root_ca_pem())
    (folder / "sim_root_ca.crl").write_bytes(root_crl)
    (folder / "README.md").write_text("Trust material for the sim platform.\n")
    server, port = _start_server(["-a", "sim", "-p", "0", "-n", "2"], program_env)
    try:
        client = ["-v", "sim", "--trust-sim", "--collateral", str(tmp_path / "bundle.json"), "-p", str(port)]
        refused = subprocess.run(_program("rats_tls_client", *client, env=program_env), env=program_env,
                                 capture_output=True, text=True, timeout=TIMEOUT)
        assert refused.returncode == 1 and "root CA CRL" in refused.stderr, refused.stderr
        ok = subprocess.run(_program("rats_tls_client", *client, "--certs", str(folder), env=program_env),
                            env=program_env, capture_output=True, text=True, timeout=TIMEOUT)
        assert ok.returncode == 0, ok.stderr
        peer = json.loads(next(x for x in ok.stdout.splitlines() if x.startswith("Peer claims: ")).split(": ", 1)[1])
        assert (peer["tee"], peer["verified"], peer["tcb_status"]) == ("sim", True, "UpToDate")
    finally:
        server.kill()
        server.wait()
