"""The confidential container's answer in rats-tls's sample protocol (what inclavared relays as ENCLAVEINFO):
``MRENCLAVE (32 bytes) || MRSIGNER (32 bytes) || message`` (UTF-8 text, no control characters but tab and
newlines). One codec for both ends: the sim runtime's info server writes it, inclavared reads it."""

from __future__ import annotations

from dataclasses import dataclass

from inclavare.errors import InclavareError

MEASUREMENT_SIZE = 32
MAX_TEXT = 4096  # the free-text message after the two measurements


class IdentityAnswerError(InclavareError):
    """An identity answer is malformed; the message names where it came from."""


@dataclass(frozen=True)
class IdentityAnswer:
    """What an SGX RATS-TLS server says about itself: MRENCLAVE, MRSIGNER (32 bytes each) and a greeting."""

    mrenclave: bytes
    mrsigner: bytes
    message: str


def encode_identity_answer(mrenclave: bytes, mrsigner: bytes, message: str) -> bytes:
    if len(mrenclave) != MEASUREMENT_SIZE or len(mrsigner) != MEASUREMENT_SIZE:
        raise IdentityAnswerError("identity answer: MRENCLAVE and MRSIGNER are 32 bytes each")
    text = message.encode()
    if len(text) > MAX_TEXT:
        raise IdentityAnswerError(f"identity answer: message longer than {MAX_TEXT} bytes")
    return bytes(mrenclave) + bytes(mrsigner) + text


def decode_identity_answer(data: bytes, where: str) -> IdentityAnswer:
    """The confidential container's answer; IdentityAnswerError naming ``where`` when it is too short, too long
    or its message is not UTF-8 text."""
    size = 2 * MEASUREMENT_SIZE
    if len(data) < size:
        raise IdentityAnswerError(f"the confidential container at {where} answered {len(data)} bytes, not "
                                  f"MRENCLAVE and MRSIGNER ({size} bytes) and a message")
    if len(data) > size + MAX_TEXT:
        raise IdentityAnswerError(f"the confidential container at {where} answered {len(data)} bytes, more than "
                                  f"{size + MAX_TEXT}")
    try:
        text = bytes(data[size:]).decode("utf-8")
    except UnicodeDecodeError:
        raise IdentityAnswerError(f"the confidential container at {where}: its message is not UTF-8 text") from None
    if any(ord(c) < 0x20 and c not in "\t\n\r" for c in text):
        raise IdentityAnswerError(f"the confidential container at {where}: its message holds control characters")
    return IdentityAnswer(bytes(data[:size // 2]), bytes(data[size // 2:size]), text)
