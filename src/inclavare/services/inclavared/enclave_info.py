"""The confidential container's side of inclavared's second hop: a RATS-TLS server handler that answers any
message with the enclave's own MRENCLAVE || MRSIGNER || greeting, as rats-tls' sample server does inside an SGX
enclave from its REPORT.

The identity it answers with is the one its attester puts in the evidence: :func:`identity_of` reads it from a
signed enclave image (its SIGSTRUCT, after the image's full check) or takes it from hex values, and
:func:`sim_attester` makes the ``sim`` attester report that identity. On the sim platform this gives NO
confidentiality (docs/inclavared.md): it is the same code path a real enclave would use, nothing more.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from inclavare.formats.enclave_info import encode_identity_answer
from inclavare.services.inclavared.protocol import InclavaredError

if TYPE_CHECKING:
    from inclavare.ratls.server import Handler, ServerConnection
    from inclavare.ratls.verifiers import PeerClaims
    from inclavare.sim.report import EnclaveIdentity

log = logging.getLogger(__name__)

HELLO = "Hello and welcome to RATS-TLS!\n"  # the greeting rats-tls' sample server appends


def identity_of(image: str | None = None, mrenclave: str | None = None, mrsigner: str | None = None
                ) -> EnclaveIdentity:
    """The enclave identity to attest: from a signed enclave ``image`` (fully checked), or from 64-hex-digit
    ``mrenclave``/``mrsigner`` (each defaulting to the sim attester's fixed values)."""
    from inclavare.ratls.attesters.sim import sim_attester_identity
    from inclavare.sim.report import EnclaveIdentity

    if image is not None:
        if mrenclave or mrsigner:
            raise InclavaredError("an enclave image and --mrenclave/--mrsigner do not go together")
        from inclavare.enclave.image import load

        img = load(image)
        return EnclaveIdentity.from_sigstruct(img.sigstruct, img.mrenclave)
    base = sim_attester_identity()

    def value(text: str | None, default: bytes, name: str) -> bytes:
        if text is None:
            return default
        try:
            raw = bytes.fromhex(text.removeprefix("0x"))
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise InclavaredError(f"--{name} {text[:80]!r}: expected 64 hex digits")
        return raw

    return EnclaveIdentity(mrenclave=value(mrenclave, base.mrenclave, "mrenclave"),
                           mrsigner=value(mrsigner, base.mrsigner, "mrsigner"), attributes=base.attributes)


def sim_attester(identity: EnclaveIdentity, state_dir: str | None = None) -> object:
    """The ``sim`` attester reporting ``identity``."""
    from inclavare.ratls.attesters.sim import SimAttester

    return SimAttester(state_dir, identity=identity)


def enclave_info_handler(identity: EnclaveIdentity, message: str = HELLO) -> Handler:
    """A RatsTlsServer handler: read one message (any: upstream inclavared says ``hello from inclavared``) and
    answer with ``identity``'s MRENCLAVE, MRSIGNER and ``message``."""
    answer = encode_identity_answer(identity.mrenclave, identity.mrsigner, message)

    def handle(conn: ServerConnection, peer: PeerClaims | None) -> None:
        data = conn.receive_message()
        if data is None:
            return
        log.info("enclave info for %s (%s)", conn.address,
                 f"verified by {peer.verifier}" if peer is not None else "not verified")
        conn.transmit(answer)

    return handle
