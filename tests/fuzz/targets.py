"""Fuzz targets (atheris / libFuzzer) for every parser that reads untrusted evidence.

Each target feeds arbitrary bytes to one entry point; the only exception allowed to escape is the
project's own error for that input (AttestationError for evidence, AgentError for the agent protocol).
Anything else -- IndexError, struct.error, UnicodeDecodeError, a cbor2 exception -- is a bug, and libFuzzer
reports it with the input that caused it.

Run one target: python tests/fuzz/targets.py TARGET [libFuzzer flags] [CORPUS_DIR...]
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

AS_OF = datetime.datetime(2025, 7, 1, tzinfo=datetime.UTC)


def _dcap(data: bytes) -> None:
    from inclavare.attestation.api import AttestationError, Options
    from inclavare.attestation.dcap import verify_quote

    try:
        verify_quote(data, Options(as_of=AS_OF))
    except AttestationError:
        pass


def _snp(data: bytes) -> None:
    from inclavare.attestation.api import AttestationError, Options
    from inclavare.attestation.snp import SnpVerifier

    try:
        SnpVerifier().verify(data, Options(as_of=AS_OF))
    except AttestationError:
        pass


def _ccel(data: bytes) -> None:
    from inclavare.attestation import ccel
    from inclavare.attestation.api import AttestationError

    try:
        log = ccel.parse_event_log(data)
        ccel.replay(log)
        ccel.summarize(log)
    except AttestationError:
        pass
    try:
        ccel.parse_table(data)
    except AttestationError:
        pass


def _collateral(data: bytes) -> None:
    from inclavare.attestation import collateral
    from inclavare.attestation.api import AttestationError

    for key in ("tcbInfo", "enclaveIdentity"):
        try:
            collateral.raw_json_value(data, key)
        except AttestationError:
            pass
    try:
        collateral.from_bundle(data)
    except AttestationError:
        pass


def _ratls(data: bytes) -> None:
    from inclavare.attestation.api import AttestationError
    from inclavare.ratls import cert, dice

    for parse in (dice.parse_evidence_extension, dice.parse_endorsements_extension, dice.parse_claims_buffer,
                  cert.parse_certificate):
        try:
            parse(data)
        except AttestationError:
            pass


def _evidence(data: bytes) -> None:
    from inclavare.attestation.api import AttestationError, Options
    from inclavare.ratls.appraise import verify_evidence

    try:
        verify_evidence(data, "auto", Options(as_of=AS_OF))
    except AttestationError:
        pass


def _envelopes(data: bytes) -> None:
    """The wrappers of formats/envelopes.py, and SNP collateral from a certificate table (as --vcek gives it)."""
    from inclavare.attestation.api import AttestationError
    from inclavare.attestation.snp import SnpCollateral
    from inclavare.formats import envelopes

    for parse in (envelopes.unwrap_tdx_quote_buf, envelopes.unwrap_snp_report_resp, envelopes.parse_cert_table):
        try:
            parse(data)
        except envelopes.EnvelopeError:
            pass
    try:
        SnpCollateral.from_cert_table(data)
    except AttestationError:
        pass


def _agent(data: bytes) -> None:
    from inclavare.enclave import agent

    for kind in ("request", "response"):
        buf = [data]

        def read(n: int, buf: list[bytes] = buf) -> bytes:
            out, buf[0] = buf[0][:n], buf[0][n:]
            return out

        try:
            agent.read_message(read, kind)
        except agent.AgentError:
            pass


TARGETS: dict[str, Callable[[bytes], None]] = {
    "dcap": _dcap, "snp": _snp, "ccel": _ccel, "collateral": _collateral, "ratls": _ratls,
    "evidence": _evidence, "envelopes": _envelopes, "agent": _agent,
}


def main() -> None:
    import atheris

    name = sys.argv[1]
    target = TARGETS[name]
    with atheris.instrument_imports():
        import inclavare.attestation.ccel  # noqa: F401
        import inclavare.attestation.collateral  # noqa: F401
        import inclavare.attestation.dcap  # noqa: F401
        import inclavare.attestation.evidence  # noqa: F401
        import inclavare.attestation.snp  # noqa: F401
        import inclavare.enclave.agent  # noqa: F401
        import inclavare.formats.ccel  # noqa: F401
        import inclavare.formats.dcap  # noqa: F401
        import inclavare.formats.snp  # noqa: F401
        import inclavare.formats.snp_certs  # noqa: F401
        import inclavare.ratls.cert  # noqa: F401
        import inclavare.ratls.dice  # noqa: F401
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
