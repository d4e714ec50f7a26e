"""inclavared's relay: for each client's ``{"type":"GETENCLAVEINFO"}``, a mutual RATS-TLS connection to the
confidential container (the xfer endpoint), its identity answer read and checked against the evidence our
verifier accepted on that hop, and the ``ENCLAVEINFO`` JSON sent back.

Why the check: the container's 64-byte answer is only what it says about itself. Its certificate's evidence,
verified in the handshake, is what the hardware (or the sim platform) says. inclavared reports the verified
measurement and refuses an answer that contradicts it. A verifier that checks nothing (``nullverifier``) gives
``attested: false``, which shelter refuses to compare.

Every failure (bad request, container unreachable, refused attestation, timeout, malformed answer) is answered
with an ``ERROR`` message naming it and logged on one line; the server goes on with the next client.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

from inclavare.formats.enclave_info import IdentityAnswerError, decode_identity_answer
from inclavare.services.inclavared.protocol import (
    ERROR,
    GETENCLAVEINFO,
    GREETING,
    MAX_TEXT,
    Address,
    EnclaveInfo,
    InclavaredError,
    decode_request,
)
from inclavare.services.inclavared.transport import round_trip

if TYPE_CHECKING:
    from inclavare.ratls.server import ServerConnection
    from inclavare.ratls.tls.config import RatsTlsConfig
    from inclavare.ratls.verifiers import PeerClaims

log = logging.getLogger(__name__)

XFER = "confidential container"
SGX_TEES = ("sgx", "sim")


def enclave_info_from(answer: bytes, peer: PeerClaims | None, where: str) -> EnclaveInfo:
    """The ENCLAVEINFO for a container's ``answer`` on a connection whose verified peer is ``peer``. With SGX
    evidence the answer must be MRENCLAVE || MRSIGNER || message and agree with the evidence; with TDX/SNP
    evidence the answer is only a message and the measurements are the evidence's claims."""
    verified = peer is not None and peer.verified and peer.evidence_type is not None
    claims = dict(peer.claims) if verified and peer is not None else {}
    sgx_claims = "mrenclave" in claims and "mrsigner" in claims
    if verified and not sgx_claims:
        text = answer[:MAX_TEXT].decode("utf-8", "replace")
        return EnclaveInfo(message=text, id=secrets.token_hex(8), attested=True, tee=peer.tee if peer else None,
                           verifier=peer.verifier if peer else None, tcb_status=peer.tcb_status if peer else None,
                           claims=claims)
    try:
        ident = decode_identity_answer(answer, where)
    except IdentityAnswerError as e:
        raise InclavaredError(str(e)) from None
    mrenclave, mrsigner = ident.mrenclave.hex(), ident.mrsigner.hex()
    if sgx_claims:
        for name, said, attested in (("MRENCLAVE", mrenclave, claims["mrenclave"]),
                                     ("MRSIGNER", mrsigner, claims["mrsigner"])):
            if said != str(attested).lower():
                raise InclavaredError(f"the {XFER} at {where} says its {name} is {said}, but its attested "
                                      f"evidence says {attested}")
    return EnclaveInfo(mrenclave=mrenclave, mrsigner=mrsigner, message=ident.message, id=secrets.token_hex(8),
                       attested=verified, tee=peer.tee if verified and peer else None,
                       verifier=peer.verifier if peer else None, tcb_status=peer.tcb_status if peer else None,
                       claims=claims)


def fetch_enclave_info(config: RatsTlsConfig, xfer: Address, timeout: float) -> EnclaveInfo:
    """One round trip to the confidential container: upstream's greeting out, its identity answer back."""
    answer, peer = round_trip(config, xfer, GREETING, timeout, XFER)
    return enclave_info_from(answer, peer, str(xfer))


class Relay:
    """The RatsTlsServer handler of inclavared. ``xfer``: the confidential container's address (None: every
    request is refused, as there is nowhere to relay to); ``config``: the client configuration of the xfer hop
    (mutual); ``timeout``: seconds for that whole round trip."""

    def __init__(self, xfer: Address | None, config: RatsTlsConfig, timeout: float) -> None:
        if not timeout > 0:
            raise InclavaredError(f"xfer timeout {timeout!r}: expected a positive number of seconds")
        self.xfer = xfer
        self.config = config
        self.timeout = timeout

    def answer(self, request: bytes) -> EnclaveInfo:
        """The answer to one client request (an ERROR message rather than an exception)."""
        try:
            kind = decode_request(request)
            if kind != GETENCLAVEINFO:
                raise InclavaredError(f"request type {kind[:40]!r}: only {GETENCLAVEINFO} is served")
            if self.xfer is None:
                raise InclavaredError("no confidential container to ask: inclavared runs without -x/--xfer")
            return fetch_enclave_info(self.config, self.xfer, self.timeout)
        except InclavaredError as e:
            return EnclaveInfo(msgtype=ERROR, message=str(e)[:MAX_TEXT], id=secrets.token_hex(8))

    def __call__(self, conn: ServerConnection, peer: PeerClaims | None) -> None:
        request = conn.receive_message()
        if request is None:
            log.info("inclavared client %s: closed before a whole request came", conn.address)
            return
        info = self.answer(request)
        if info.is_error:
            log.warning("inclavared client %s: %s", conn.address, info.message)
        else:
            log.info("inclavared client %s: ENCLAVEINFO mrenclave %s (%s)", conn.address, info.mrenclave or "-",
                     "attested" if info.attested else "NOT attested")
        conn.transmit(info.encode())
