"""``shelter mrverify``: MRENCLAVE of an enclave image computed in software (the sgx-tools measurement core) and
compared with the ENCLAVEHASH of its SIGSTRUCT, whose RSA signature is checked too. Upstream built its
skeleton enclave from source for this; here the image is given (docs/enclave-image.md), and a separate
SIGSTRUCT (upstream's ``encl.ss``) may stand in for the image's own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inclavare.errors import InclavareError


class MrverifyError(InclavareError):
    """The image or SIGSTRUCT cannot be read or measured; the message names the file."""


@dataclass(frozen=True)
class MrverifyResult:
    computed: str
    enclavehash: str
    mrsigner: str
    signature_valid: bool
    signature_error: str | None

    @property
    def match(self) -> bool:
        return self.computed == self.enclavehash and self.signature_valid

    def to_dict(self) -> dict[str, Any]:
        return {"mrenclave_computed": self.computed, "sigstruct_enclavehash": self.enclavehash,
                "mrsigner": self.mrsigner, "signature_valid": self.signature_valid,
                "signature_error": self.signature_error, "match": self.match}


def mrverify(image: bytes, image_name: str, sigstruct: bytes | None = None, sigstruct_name: str = "") -> MrverifyResult:
    from inclavare.enclave.image import EnclaveImageError, measure
    from inclavare.formats.sgx import SIGSTRUCT_SIZE, SgxFormatError, SigStruct
    from inclavare.sgx.signing import SigstructVerifyError, verify

    try:
        computed = measure(image)
    except EnclaveImageError as e:
        raise MrverifyError(f"{image_name}: {e}") from None
    where = sigstruct_name or f"{image_name} (its SIGSTRUCT)"
    raw = sigstruct if sigstruct is not None else image[-SIGSTRUCT_SIZE:]
    if len(raw) != SIGSTRUCT_SIZE:
        raise MrverifyError(f"{where}: {len(raw)} bytes, a SIGSTRUCT is {SIGSTRUCT_SIZE}")
    try:
        sig = SigStruct.parse(raw)
    except SgxFormatError as e:
        raise MrverifyError(f"{where}: {e}") from None
    error = None
    if not any(sig.modulus) and not any(sig.signature):
        error = "not signed (empty signature)"
    else:
        try:
            verify(sig)
        except SigstructVerifyError as e:
            error = str(e)
    return MrverifyResult(computed.hex(), sig.enclavehash.hex(), sig.mrsigner.hex() if error is None else "",
                          error is None, error)
