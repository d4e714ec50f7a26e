"""The simulated platform's launch enclave stand-in: EINITTOKENs for `sgx-tools gen-token --sim` and the
fake AESM. The simulated platform has no launch key, so nothing checks a token's MAC; it is made with a random
key unless one is given."""

from __future__ import annotations

import os

# the Intel launch enclave's identity as its tokens carry it (ISVPRODID 0x20), with the sim platform's CPUSVN
LE_ISVPRODID = 0x20
LE_ISVSVN = 1


def sim_launch_token(mrenclave: bytes, modulus: bytes, attributes: bytes, *, mac_key: bytes | None = None,
                     cpusvn: bytes | None = None) -> bytes:
    """A 304-byte EINITTOKEN as a launch enclave makes it: VALID=1, the enclave's ATTRIBUTES, MRENCLAVE and
    MRSIGNER (SHA-256 of ``modulus``), the LE's CPUSVN / ISVPRODID / ISVSVN / masked attributes, a fresh KEYID
    and an AES-CMAC over bytes 0..191. The simulated platform has no launch key and nothing checks the MAC:
    ``mac_key`` defaults to a random key. Raises ValueError for malformed input, PermissionError for
    attributes a launch enclave refuses (EINITTOKEN_KEY, reserved to the LE itself)."""
    from cryptography.hazmat.primitives import cmac
    from cryptography.hazmat.primitives.ciphers import algorithms

    from inclavare.formats.sgx import AttributeFlags, Attributes, EInitToken, mrsigner_of
    from inclavare.sim.report import SIM_CPUSVN

    if len(mrenclave) != 32 or len(modulus) != 384 or len(attributes) != 16:
        raise ValueError(f"launch token request: MRENCLAVE {len(mrenclave)}, MODULUS {len(modulus)}, ATTRIBUTES "
                         f"{len(attributes)} bytes (expected 32, 384, 16)")
    attrs = Attributes.parse(attributes)
    if attrs.has(AttributeFlags.EINITTOKENKEY):
        raise PermissionError("only the launch enclave may have EINITTOKEN_KEY")
    token = EInitToken(
        valid=1, attributes=attrs, mrenclave=bytes(mrenclave), mrsigner=mrsigner_of(bytes(modulus)),
        cpusvnle=SIM_CPUSVN if cpusvn is None else cpusvn, isvprodidle=LE_ISVPRODID, isvsvnle=LE_ISVSVN,
        maskedmiscselectle=0,
        maskedattributesle=Attributes(int(AttributeFlags.INIT | AttributeFlags.EINITTOKENKEY), 0),
        keyid=os.urandom(32),
    )
    c = cmac.CMAC(algorithms.AES128(mac_key or os.urandom(16)))
    c.update(token.mac_material())
    packed = token.pack()
    return packed[:288] + c.finalize()
