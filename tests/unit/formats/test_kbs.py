"""formats.kbs: the KBS 0.4.0 report-data binding byte for byte (RFC 8785 canonical JSON, SHA-384, padding)."""

from __future__ import annotations

import hashlib

import pytest

from inclavare.formats.kbs import KbsFormatError, canonical_json, expected_report_data, runtime_data_hash

# --------------------------------------------------------------------------------------------------
# Canonical JSON and the binding


def test_canonical_json_matches_trustee_vector() -> None:
    """attestation-service/src/lib.rs parse_runtimedata_json_binding: SHA-384 of the canonical form."""
    value = {"b": 1, "a": "test", "c": {"d": "e"}}
    assert canonical_json(value) == b'{"a":"test","b":1,"c":{"d":"e"}}'
    assert hashlib.sha384(canonical_json(value)).hexdigest() == (
        "e71ce8e70d814ba6639c3612ebee0ff1f76f650f8dbb5e47157e0f3f525cd22c4597480a186427c813ca941da78870c3")


def test_canonical_json_rfc8785_details() -> None:
    # keys sort by UTF-16 code units: U+1F600 (surrogates D83D..) sorts before U+FFFD
    assert canonical_json({"\ufffd": 1, "\U0001f600": 2, "a\n": [True, None, "\u00e9\"\\"]}) == (
        '{"a\\n":[true,null,"\u00e9\\"\\\\"],"\U0001f600":2,"\ufffd":1}'.encode())
    assert canonical_json({"c": "\x01"}) == b'{"c":"\\u0001"}'
    with pytest.raises(KbsFormatError, match="no exact canonical JSON form"):
        canonical_json({"f": 1.5})
    with pytest.raises(KbsFormatError, match="outside the range"):
        canonical_json([2**60])


def test_report_data_is_sha384_of_the_three_fields_padded() -> None:
    key = {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": "xx", "y": "yy"}
    material = (b'{"additional-evidence":"","nonce":"bm9uY2U=","tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256",'
                b'"kty":"EC","x":"xx","y":"yy"}}')
    digest = hashlib.sha384(material).digest()
    assert runtime_data_hash("bm9uY2U=", key, "") == digest
    assert expected_report_data("bm9uY2U=", key, "") == digest + bytes(16)
    assert runtime_data_hash("bm9uY2U=", key, "{}") != digest
