"""KBS 0.4.0 ``init-data``: the guest's launch-time configuration (Trustee's initdata TOML) bound into the TEE's
launch-time field, checked against the verified evidence.

As Trustee 0.4.0 (kbs/src/attestation/coco/builtin.rs, attestation-service/src/lib.rs and the verifiers): the
Attestation body may carry ``"init-data": {"format": "toml", "body": "<TOML text>"}``; the TOML has ``version``
(a string), ``algorithm`` (``sha256``/``sha384``/``sha512``) and ``data`` (a table of strings); its digest is that
algorithm over the body's UTF-8 bytes, exactly as sent. The digest, zero-padded or truncated to the field's size,
must equal the TEE's field: SGX (and our sim platform) ``CONFIGID`` (64 bytes), TDX ``MRCONFIGID`` (48), SNP
``HOST_DATA`` (32). Trustee's unsigned sample evidence has no such field: the digest is only recorded, as Trustee's
sample verifier does. The policy then sees ``init_data`` (the digest, hex) and ``init_data_claims`` (the ``data``
table) beside the TEE's claims.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from typing import Any

from inclavare.services.verdictd.kbs_evidence import Verified, _bad, _unauth

__all__ = ["INIT_DATA_FIELDS", "InitData", "bind_init_data", "parse_init_data"]

# verifier's tee -> (claim holding the launch-time field, its size in bytes)
INIT_DATA_FIELDS = {"sgx": ("configid", 64), "sim": ("configid", 64), "tdx": ("mrconfigid", 48),
                    "snp": ("host_data", 32)}
ALGORITHMS = ("sha256", "sha384", "sha512")
MAX_BODY = 48 << 10  # the policy input holds at most 64 KiB in all
MAX_DATA_ENTRIES = 64


@dataclass(frozen=True)
class InitData:
    digest: bytes
    algorithm: str
    data: dict[str, str]


def parse_init_data(value: Any) -> InitData | None:
    """The Attestation body's ``init-data`` (None when absent or null); KbsError 400 when malformed."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"format", "body"}:
        raise _bad("init-data must be an object with exactly format and body")
    if value["format"] != "toml":
        raise _bad(f"init-data: format {str(value['format'])[:40]!r} is not supported (toml)")
    body = value["body"]
    if not isinstance(body, str) or not body or len(body.encode("utf-8", "surrogatepass")) > MAX_BODY:
        raise _bad(f"init-data: body must be a non-empty TOML string of at most {MAX_BODY} bytes")
    try:
        doc = tomllib.loads(body)
        raw = body.encode("utf-8")
    except tomllib.TOMLDecodeError as e:
        raise _bad(f"init-data: body is not TOML ({str(e).splitlines()[0][:120]})") from None
    except UnicodeEncodeError:
        raise _bad("init-data: body is not valid UTF-8 text") from None
    unknown = [k for k in doc if k not in ("version", "algorithm", "data")]
    if unknown:
        raise _bad(f"init-data: unknown key {unknown[0][:40]!r} (version, algorithm, data)")
    if not isinstance(doc.get("version"), str):
        raise _bad("init-data: version must be a string")
    algorithm = doc.get("algorithm")
    if algorithm not in ALGORITHMS:
        raise _bad(f"init-data: algorithm {str(algorithm)[:40]!r} is not one of {', '.join(ALGORITHMS)}")
    data = doc.get("data")
    if not isinstance(data, dict) or len(data) > MAX_DATA_ENTRIES or \
            not all(isinstance(v, str) for v in data.values()):
        raise _bad(f"init-data: data must be a table of at most {MAX_DATA_ENTRIES} strings")
    return InitData(digest=hashlib.new(algorithm, raw).digest(), algorithm=algorithm, data=dict(data))


def bind_init_data(verified: Verified, init: InitData) -> Verified:
    """``verified`` with the init-data claims added, after checking the digest against the TEE's launch-time
    field; KbsError 401 when it differs (or the TEE has none)."""
    claims = dict(verified.claims)
    if verified.tee != "sample":
        where = INIT_DATA_FIELDS.get(verified.tee)
        if where is None:
            raise _unauth("RcarAttestFailed", f"init-data: {verified.tee} evidence has no field to bind it")
        name, size = where
        want = init.digest[:size].ljust(size, b"\0").hex()
        got = claims.get(name)
        if not isinstance(got, str) or got.lower() != want:
            raise _unauth("RcarAttestFailed", f"init-data: {verified.tee} {name} {str(got)[:2 * size]} is not the "
                                              f"{init.algorithm} digest of the init-data ({want})")
    claims["init_data"] = init.digest.hex()
    claims["init_data_claims"] = dict(init.data)
    return Verified(tee=verified.tee, claims=claims, tcb_status=verified.tcb_status)
