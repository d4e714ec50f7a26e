"""Signed documents in Intel PCS shapes: ``{"tcbInfo"|"enclaveIdentity": {...}, "signature": "<hex r||s>"}``,
split into the exact signed bytes, the parsed value and the signature; and their ``nextUpdate`` times."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from inclavare.attestation.api import CollateralError
from inclavare.attestation.collateral.encoding import hex_bytes
from inclavare.attestation.collateral.jsonbytes import DECODER, JSON_WS, json_error, members
from inclavare.attestation.tcbinfo import iso_date
from inclavare.formats.jsonshape import Shape

__all__ = ["QE_IDENTITY_KEY", "SIGNATURE_SIZE", "TCB_INFO_KEY", "SignedDocument", "crl_next_update", "next_update",
           "parse_signed_document", "signed_value"]

_SHAPE = Shape(lambda where, problem: CollateralError(f"{where}: {problem}"))

TCB_INFO_KEY = "tcbInfo"
QE_IDENTITY_KEY = "enclaveIdentity"
SIGNATURE_SIZE = 64


@dataclass(frozen=True)
class SignedDocument:
    """One PCS document split into what the verifier needs: the exact signed bytes, the parsed value (for
    reading fields such as ``nextUpdate``) and the 64-byte r||s signature."""

    raw: bytes
    value: dict[str, Any]
    signature: bytes


def parse_signed_document(document: bytes, key: str, *, where: str = "JSON document") -> SignedDocument:
    """Split ``{"<key>": {...}, "signature": "<128 hex digits>"}`` (the shape Intel PCS serves TCB info and
    enclave identities in). Exactly these two members, the value an object; anything else raises."""
    found = members(document, where)
    if key not in found:
        if key == QE_IDENTITY_KEY and "qeIdentity" in found:
            raise CollateralError(f"{where}: QE identity v1 ('qeIdentity') is not supported; "
                                  "fetch enclave identity v2 (PCS API v3 or later)")
        other = TCB_INFO_KEY if key == QE_IDENTITY_KEY else QE_IDENTITY_KEY
        hint = f" (it holds {other!r} instead)" if other in found else ""
        raise CollateralError(f"{where}: no {key!r} member{hint}")
    if "signature" not in found:
        raise CollateralError(f"{where}: no 'signature' member")
    extra = sorted(set(found) - {key, "signature"})
    if extra:
        raise CollateralError(f"{where}: unexpected member(s) {', '.join(map(repr, extra))}")
    value = _SHAPE.object(found[key].value, where, f"{key!r} is not a JSON object")
    sig = hex_bytes(found["signature"].value, f"{where}: signature", SIGNATURE_SIZE)
    return SignedDocument(found[key].raw, value, sig)


def signed_value(raw: bytes, key: str, where: str) -> dict[str, Any]:
    """Check that ``raw`` (a bundle's tcb_info / qe_identity text) is exactly one JSON object."""
    stripped = raw.strip(JSON_WS.encode())
    if stripped != raw or not raw.startswith(b"{"):
        raise CollateralError(f"{where}: expected the {key!r} JSON object itself, with nothing around it")
    try:
        value = DECODER.decode(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise CollateralError(f"{where}: not UTF-8 text") from None
    except RecursionError:
        raise CollateralError(f"{where}: JSON nested too deeply") from None
    except ValueError as e:
        raise json_error(where, e) from None
    obj = _SHAPE.object(value, where, "not a JSON object")
    if key in obj and "signature" in obj:
        raise CollateralError(f"{where}: holds a whole PCS document; expected only its {key!r} value")
    return obj


def next_update(value: dict[str, Any], *, where: str) -> datetime.datetime:
    """``nextUpdate`` of a TCB info / enclave identity value, as an aware UTC datetime."""
    text = value.get("nextUpdate")
    if not isinstance(text, str):
        _SHAPE.fail(where, "no 'nextUpdate' string")
    return iso_date(text, f"{where}: nextUpdate", "time")


def crl_next_update(der: bytes) -> datetime.datetime | None:
    from cryptography import x509

    return x509.load_der_x509_crl(der).next_update_utc
