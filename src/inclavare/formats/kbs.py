"""The KBS protocol (Trustee, version 0.4.0) as both sides write it: the report-data binding of the attestation
(RFC 8785 canonical JSON of ``{"tee-pubkey", "nonce", "additional-evidence"}``, SHA-384, zero padding to 64 bytes)
and the message shapes. verdictd's KBS server and the attester-side client in the enclave runtimes share this
codec; the resource answer's JWE is :mod:`inclavare.formats.kbs_jwe`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from inclavare.errors import InclavareError

PROTOCOL_VERSION = "0.4.0"
SESSION_COOKIE = "kbs-session-id"
PREFIX = "/kbs/v0/"
MAX_JSON_DEPTH = 16
HASH_SIZE = 48  # SHA-384, Trustee's runtime-data hash for every TEE but IBM SE
REPORT_DATA_SIZE = 64


class KbsFormatError(InclavareError):
    """A KBS message (or a value bound into one) is malformed; the message says what and where."""


def canonical_json(value: Any, _depth: int = 0) -> bytes:
    """RFC 8785 (JCS) bytes of ``value``: keys sorted by UTF-16 code units, no whitespace, minimal escapes.

    Numbers are limited to integers within ±2**53 (JCS writes those as plain decimals); anything else is
    refused rather than risk a serialisation that differs from the client's."""
    return _jcs(value, 0).encode("utf-8")


def _jcs(v: Any, depth: int) -> str:
    if depth > MAX_JSON_DEPTH:
        raise KbsFormatError(f"runtime-data: nested deeper than {MAX_JSON_DEPTH} levels")
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        if abs(v) > 2**53:
            raise KbsFormatError(f"runtime-data: integer {v} is outside the range JSON numbers hold exactly")
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ",".join(_jcs(x, depth + 1) for x in v) + "]"
    if isinstance(v, dict):
        keys = sorted(v, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + _jcs(v[k], depth + 1) for k in keys) + "}"
    raise KbsFormatError(f"runtime-data: a {type(v).__name__} value has no exact canonical JSON form (only integers, "
               "strings, booleans, null, arrays and objects)")


def runtime_data_hash(nonce: str, tee_pubkey: dict[str, Any], additional_evidence: str) -> bytes:
    """SHA-384 of the canonical ``{"tee-pubkey", "nonce", "additional-evidence"}``: what the primary
    evidence's report data must start with (Trustee 0.4.0; the rest of the 64 bytes is zero)."""
    material = {"tee-pubkey": tee_pubkey, "nonce": nonce, "additional-evidence": additional_evidence}
    return hashlib.sha384(canonical_json(material)).digest()


def expected_report_data(nonce: str, tee_pubkey: dict[str, Any], additional_evidence: str) -> bytes:
    """The 64 bytes of report data an SGX/TDX/SNP attester puts in: the hash, zero-padded (Trustee's
    ``regularize_data``)."""
    return runtime_data_hash(nonce, tee_pubkey, additional_evidence).ljust(REPORT_DATA_SIZE, b"\0")
