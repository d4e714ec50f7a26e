"""``shelter remoteattestation`` and ``shelter mrverify`` (the flags and their output; the library is
services/shelter/ and services/inclavared/).

remoteattestation: a RATS-TLS connection to inclavared (``--addr tcp://IP:PORT`` or ``unix:///PATH``; upstream's
``--log-level --attester --verifier --tls --crypto --mutual``), the ``GETENCLAVEINFO`` request, the answer
printed as upstream prints it (``App Enclave mrenclave: ...``) and then what upstream only promised: the
measurements compared with reference values, from flags (``--mrenclave``, ``--mrsigner``, ``--mrtd``,
``--measurement``, ``--reference NAME=HEX``; each may repeat: any listed value is accepted) or from verdictd
(``--verdictd URL --verdictd-token-file FILE [--verdictd-ca PEM]``: the KBS admin endpoint
``GET /kbs/v0/reference-value/NAME``). Exit 0 when every reference matches (or none was given: then the
measurement is printed, not judged), 1 on a mismatch, a refused attestation or an unreachable peer (one line
naming it), 2 on input errors. ``--json``: one JSON object on stdout instead.

mrverify: ``shelter mrverify IMAGE [--sigstruct FILE] [--json]``: the image's MRENCLAVE computed in software and
compared with its SIGSTRUCT's ENCLAVEHASH (signature checked too); exit 0 on a match, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from inclavare.cli._inclavared import add_instance_flags, config_from, parse_seconds
from inclavare.cli._inputs import IMAGE_LIMIT, KEY_LIMIT, read_file
from inclavare.cli._ratstls import setup_logging
from inclavare.errors import InclavareError, UsageError

PROG = "shelter"
REFERENCE_FLAGS = ("mrenclave", "mrsigner", "mrtd", "measurement")


def add_parsers(sub: Any) -> None:
    ra = sub.add_parser("remoteattestation", help="attest the enclave behind inclavared and compare its "
                        "measurements with reference values")
    ra.add_argument("--addr", default="tcp://127.0.0.1:1234",
                    help="inclavared's address: tcp://IP:PORT or unix:///PATH (default tcp://127.0.0.1:1234)")
    add_instance_flags(ra, mutual_help="present this side's evidence to inclavared too")
    for name in REFERENCE_FLAGS:
        ra.add_argument(f"--{name}", action="append", default=[], metavar="HEX",
                        help=f"accepted {name} (repeat to accept several)")
    ra.add_argument("--reference", action="append", default=[], metavar="NAME=HEX",
                    help="an accepted value of any hex claim (rtmr0, host_data, ...)")
    ra.add_argument("--verdictd", metavar="URL", help="fetch the reference values from verdictd's KBS admin "
                    "endpoint (http(s)://HOST:PORT)")
    ra.add_argument("--verdictd-token-file", metavar="FILE", help="verdictd's admin token")
    ra.add_argument("--verdictd-ca", metavar="PEM", help="CA certificate of verdictd's HTTPS listener")
    ra.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                    help="seconds for the whole exchange with inclavared (default 60)")
    ra.add_argument("--json", action="store_true")
    ra.set_defaults(run=cmd_remoteattestation)
    mv = sub.add_parser("mrverify", help="compute an enclave image's MRENCLAVE in software and compare it with its "
                        "SIGSTRUCT")
    mv.add_argument("image")
    mv.add_argument("--sigstruct", metavar="FILE", help="a SIGSTRUCT file to compare with instead of the image's")
    mv.add_argument("--json", action="store_true")
    mv.set_defaults(run=cmd_mrverify)


def _flag_references(a: argparse.Namespace) -> tuple[Any, str | None]:
    """The references given as flags, and verdictd's admin token (read now: flag errors before any connection)."""
    from inclavare.services.shelter import references as r

    try:
        refs = r.from_flags({n: getattr(a, n) for n in REFERENCE_FLAGS}, a.reference)
    except r.ReferenceError as e:
        raise UsageError(str(e)) from None
    if (a.verdictd_token_file or a.verdictd_ca) and not a.verdictd:
        raise UsageError("--verdictd-token-file and --verdictd-ca go with --verdictd")
    if not a.verdictd:
        return refs, None
    if not a.verdictd_token_file:
        raise UsageError("--verdictd needs --verdictd-token-file (the admin token)")
    token = read_file(a.verdictd_token_file, "--verdictd-token-file", KEY_LIMIT).decode("utf-8", "replace").strip()
    if not token or any(c.isspace() for c in token):
        raise UsageError(f"--verdictd-token-file {a.verdictd_token_file}: not a token (one line, no spaces)")
    return refs, token


def _references(a: argparse.Namespace, refs: Any, token: str | None, tee: str | None) -> Any:
    """``refs`` and, with --verdictd, the values verdictd holds for the enclave's TEE."""
    from inclavare.services.shelter import references as r

    if token is not None:
        key = tee or ""
        if key not in r.REQUIRED_BY_TEE:
            raise r.ReferenceError(f"the enclave's TEE {tee!r}: no reference values to fetch from verdictd for it")
        fetched = r.fetch_from_verdictd(a.verdictd, token, r.REQUIRED_BY_TEE[key], r.OPTIONAL_BY_TEE[key],
                                        a.verdictd_ca, timeout=a.timeout)
        for name, values in fetched.values.items():
            for v in values:
                refs.add(name, v, fetched.sources[name])
    return refs


def cmd_remoteattestation(a: argparse.Namespace) -> int:
    from inclavare.services.inclavared.protocol import decode_enclave_info, encode_request, parse_address
    from inclavare.services.inclavared.transport import round_trip
    from inclavare.services.shelter.references import ReferenceError, compare

    setup_logging(PROG, a.log_level, False)
    timeout = parse_seconds(a.timeout, "--timeout")
    try:
        addr = parse_address(a.addr, "--addr")
    except InclavareError as e:
        raise UsageError(str(e)) from None
    flag_refs, token = _flag_references(a)
    config = config_from(a, mutual=a.mutual)
    config.prepare(presents=a.mutual)
    out: dict[str, Any] = {"addr": str(addr), "ok": False}
    try:
        answer, peer = round_trip(config, addr, encode_request(), timeout, "inclavared")
        out["inclavared"] = peer.to_dict() if peer is not None else None
        info = decode_enclave_info(answer)
        out["enclave_info"] = info.to_dict()
        if info.is_error:
            raise ReferenceError(f"inclavared at {addr} refused: {info.message}")
        refs = _references(a, flag_refs, token, info.tee)
    except InclavareError as e:
        if isinstance(e, UsageError):
            raise
        return _fail(a, out, str(e))
    out["references"] = refs.to_dict()
    problems = compare(info, refs) if refs else []
    out["compared"] = bool(refs)
    out["problems"] = problems
    out["ok"] = not problems
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"App Enclave mrenclave: {info.mrenclave}")
        print(f"App Enclave mrsigner: {info.mrsigner}")
        for name in ("mrtd", "measurement"):
            if name in info.claims:
                print(f"App Enclave {name}: {info.claims[name]}")
        print(f"Attested: {'yes' if info.attested else 'NO'} (TEE {info.tee or '-'}, verifier {info.verifier or '-'}"
              f"{', TCB ' + info.tcb_status if info.tcb_status else ''})")
        if info.message:
            print(f"Message: {info.message.rstrip()}")
        if refs:
            for name, values in refs.values.items():
                print(f"Reference {name}: {len(values)} accepted value{'s' if len(values) != 1 else ''} "
                      f"({refs.sources[name]})")
        else:
            print("No reference values given: the measurement is reported, not compared.")
    if problems:
        sys.stdout.flush()
        for p in problems:
            sys.stderr.write(f"{PROG}: {p}\n")
        return 1
    if not a.json:
        print("Remote attestation is successful." if refs else "Remote attestation is successful (not compared).")
    return 0


def _fail(a: argparse.Namespace, out: dict[str, Any], message: str) -> int:
    out["problems"] = [message]
    if a.json:
        print(json.dumps(out, indent=2))
    sys.stdout.flush()
    sys.stderr.write(f"{PROG}: {message}\n")
    return 1


def cmd_mrverify(a: argparse.Namespace) -> int:
    from inclavare.services.shelter.mrverify import mrverify

    image = read_file(a.image, "IMAGE", IMAGE_LIMIT)
    sig = read_file(a.sigstruct, "--sigstruct", KEY_LIMIT) if a.sigstruct else None
    result = mrverify(image, a.image, sig, f"--sigstruct {a.sigstruct}" if a.sigstruct else "")
    if a.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(f"computed MRENCLAVE:    {result.computed}")
        print(f"SIGSTRUCT ENCLAVEHASH: {result.enclavehash}")
        if result.signature_valid:
            print(f"SIGSTRUCT MRSIGNER:    {result.mrsigner}")
    if not result.signature_valid:
        sys.stdout.flush()
        sys.stderr.write(f"{PROG}: the SIGSTRUCT's signature is not valid: {result.signature_error}\n")
        return 1
    if not result.match:
        sys.stdout.flush()
        sys.stderr.write(f"{PROG}: MRENCLAVE mismatch: {a.image} measures {result.computed}, the SIGSTRUCT says "
                         f"{result.enclavehash}\n")
        return 1
    if not a.json:
        print("the computed MRENCLAVE matches the SIGSTRUCT.")
    return 0
