"""shelter's reference values: the measurements an owner accepts, from the command line or from verdictd, and
their comparison with what inclavared reports. Upstream shelter only promised this comparison.

A reference is a claim name our verifiers use (``mrenclave``, ``mrsigner`` for SGX and sim; ``mrtd``,
``rtmr0``..``rtmr3`` for TDX; ``measurement``, ``host_data`` for SNP; any other hex claim) and the list of hex
values accepted for it. The comparison fails closed: a measurement that was not attested, a reference the
evidence has no claim for, or a value not in the list is a mismatch, each named in one line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from inclavare.errors import InclavareError

if TYPE_CHECKING:
    from inclavare.services.inclavared.protocol import EnclaveInfo

MAX_ANSWER = 1 << 20  # verdictd's answer for one name
_HEX = re.compile(r"[0-9a-f]+")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# What each TEE's evidence must be compared on when the references come from verdictd: the launch measurement.
REQUIRED_BY_TEE = {"sgx": ("mrenclave",), "sim": ("mrenclave",), "tdx": ("mrtd",), "snp": ("measurement",)}
OPTIONAL_BY_TEE = {"sgx": ("mrsigner",), "sim": ("mrsigner",), "tdx": ("rtmr0", "rtmr1", "rtmr2", "rtmr3"),
                   "snp": ("host_data",)}


class ReferenceError(InclavareError):
    """A reference value is malformed, or verdictd could not give one; the message says which and where."""


def normalise_hex(value: str, where: str) -> str:
    text = value.strip().lower().removeprefix("0x")
    if not text or len(text) % 2 or len(text) > 1024 or not _HEX.fullmatch(text):
        raise ReferenceError(f"{where}: {value[:80]!r} is not a hex string (an even number of hex digits)")
    return text


@dataclass
class References:
    """name -> accepted hex values, and where each name's values came from (for the report)."""

    values: dict[str, list[str]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, value: str, source: str) -> None:
        if not _NAME.fullmatch(name):
            raise ReferenceError(f"{source}: {name[:80]!r} is not a reference value name")
        hexed = normalise_hex(value, f"{source} {name}")
        accepted = self.values.setdefault(name, [])
        if hexed not in accepted:
            accepted.append(hexed)
        self.sources.setdefault(name, source)

    def __bool__(self) -> bool:
        return bool(self.values)

    def to_dict(self) -> dict[str, Any]:
        return {name: {"accepted": list(v), "source": self.sources.get(name, "")} for name, v in self.values.items()}


def from_flags(named: dict[str, list[str]], generic: list[str]) -> References:
    """References from ``--mrenclave X`` style flags (``named``: name -> values) and ``--reference NAME=HEX``."""
    refs = References()
    for name, values in named.items():
        for v in values:
            refs.add(name, v, f"--{name.replace('_', '-')}")
    for item in generic:
        name, sep, value = item.partition("=")
        if not sep:
            raise ReferenceError(f"--reference {item[:80]!r}: expected NAME=HEX")
        refs.add(name.strip(), value, "--reference")
    return refs


def measured(info: EnclaveInfo) -> dict[str, str]:
    """The enclave's measurements by claim name (hex, lower case): the attested claims, and the ENCLAVEINFO's
    mrenclave/mrsigner."""
    out = {k: v.lower() for k, v in info.claims.items() if isinstance(v, str) and _HEX.fullmatch(v.lower())}
    if info.mrenclave:
        out["mrenclave"] = info.mrenclave
    if info.mrsigner:
        out["mrsigner"] = info.mrsigner
    return out


def compare(info: EnclaveInfo, refs: References) -> list[str]:
    """The mismatches, one line each; empty when every reference is met."""
    if not info.attested:
        return ["the enclave's measurement was not attested (inclavared did not verify evidence on its hop to the "
                "confidential container): refusing to compare it"]
    have = measured(info)
    problems = []
    for name, accepted in refs.values.items():
        value = have.get(name)
        source = refs.sources.get(name, "")
        if value is None:
            problems.append(f"{name.upper()}: the enclave's evidence ({info.tee or 'unknown TEE'}) has no {name} "
                            f"claim to compare with {source}")
        elif value not in accepted:
            shown = ", ".join(accepted[:4]) + (f" and {len(accepted) - 4} more" if len(accepted) > 4 else "")
            problems.append(f"{name.upper()} mismatch: the enclave's is {value}, {source} accepts {shown}")
    return problems


def fetch_from_verdictd(url: str, token: str, names: tuple[str, ...], optional: tuple[str, ...] = (),
                        ca_file: str | None = None, timeout: float = 30.0) -> References:
    """Reference values from verdictd's KBS admin endpoint ``GET /kbs/v0/reference-value/NAME`` (bearer
    ``token``). Every name in ``names`` must be there (404: ReferenceError: fail closed; an expired value is
    not served either); names in ``optional`` are used when present."""
    import http.client
    import ssl
    import urllib.parse

    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ReferenceError(f"--verdictd {url!r}: expected http(s)://HOST:PORT (the KBS admin listener)")
    try:
        port = parsed.port
    except ValueError:
        raise ReferenceError(f"--verdictd {url!r}: not a port") from None
    base = parsed.path.rstrip("/")
    refs = References()
    source = f"verdictd {parsed.scheme}://{parsed.netloc}"
    for name in names + optional:
        conn: http.client.HTTPConnection
        if parsed.scheme == "https":
            ctx = ssl.create_default_context(cafile=ca_file)
            conn = http.client.HTTPSConnection(parsed.hostname, port, timeout=timeout, context=ctx)
        else:
            conn = http.client.HTTPConnection(parsed.hostname, port, timeout=timeout)
        path = f"{base}/kbs/v0/reference-value/{urllib.parse.quote(name)}"
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
            resp = conn.getresponse()
            body = resp.read(MAX_ANSWER + 1)
        except (OSError, http.client.HTTPException) as e:
            raise ReferenceError(f"{source}: reference value {name!r}: {getattr(e, 'strerror', None) or e}") from None
        finally:
            conn.close()
        if resp.status == 404 and name in optional:
            continue
        if resp.status != 200:
            detail = body[:200].decode("utf-8", "replace").strip()
            raise ReferenceError(f"{source}: reference value {name!r}: HTTP {resp.status} {detail}")
        if len(body) > MAX_ANSWER:
            raise ReferenceError(f"{source}: reference value {name!r}: answer larger than {MAX_ANSWER} bytes")
        try:
            values = json.loads(body)
        except ValueError:
            raise ReferenceError(f"{source}: reference value {name!r}: not JSON") from None
        if not isinstance(values, list) or not values:
            raise ReferenceError(f"{source}: reference value {name!r}: expected a non-empty list of values")
        for v in values:
            if not isinstance(v, str):
                raise ReferenceError(f"{source}: reference value {name!r}: {v!r} is not a hex string")
            refs.add(name, v, source)
    return refs
