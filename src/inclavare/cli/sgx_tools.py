"""`sgx-tools`: SIGSTRUCT inspection and verification, MRENCLAVE measurement, and enclave image signing.

    sgx-tools sigstruct show FILE [--json]     FILE: a 1808-byte SIGSTRUCT or an enclave image
    sgx-tools sigstruct verify FILE            exit 0 iff valid (an enclave image gets the full load() check)
    sgx-tools measure FILE                     SGXS stream or enclave image -> MRENCLAVE (hex)
    sgx-tools sign --key PEM --payload FILE --kind wasm|native [--isvprodid N] [--isvsvn N] [--debug]
                   [--heap-size B] [--stack-size B] [--tcs N] --out FILE
    sgx-tools sign --server URL [--ca-cert PEM] [--token T | --token-file F] [--client-cert PEM [--client-key PEM]]
                   --payload FILE ... --out FILE        server-side signing (signature-server)
    sgx-tools gen-token --signature F [--token OUT]                 EINITTOKEN from AESM's launch service
    sgx-tools gen-qe-target-info --quote-type ecdsa [--targetinfo OUT]   the quoting enclave's TARGETINFO
    sgx-tools gen-quote --quote-type ecdsa --report F [--quote OUT]      a DCAP quote over a REPORT
        each: [--aesm-socket PATH] (default $INCLAVARE_AESM_SOCKET or /var/run/aesmd/aesm.socket) or --sim
        (the simulated SGX platform, which protects nothing)

Errors print ``sgx-tools: <message>`` on one line and exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from inclavare.cli._common import Parser, run_program
from inclavare.cli._inputs import EVIDENCE_LIMIT, IMAGE_LIMIT, KEY_LIMIT, read_file
from inclavare.cli._verify import add_verify_flags, build_options, report
from inclavare.errors import InclavareError, UsageError

PROG = "sgx-tools"

def _is_image(data: bytes) -> bool:
    from inclavare.enclave.image import MAGIC

    return data[:len(MAGIC)] == MAGIC


def _sigstruct_bytes(path: str, data: bytes) -> bytes:
    from inclavare.formats.sgx import SIGSTRUCT_SIZE

    if _is_image(data):
        return data[-SIGSTRUCT_SIZE:]
    if len(data) != SIGSTRUCT_SIZE:
        raise UsageError(f"{path}: {len(data)} bytes, neither a SIGSTRUCT ({SIGSTRUCT_SIZE}) nor an enclave image")
    return data


def _describe(path: str) -> dict[str, Any]:
    from inclavare.formats.sgx import SigStruct

    sig = SigStruct.parse(_sigstruct_bytes(path, read_file(path, limit=IMAGE_LIMIT)))
    day, encoding = sig.decoded_date()
    return {
        "mrenclave": sig.enclavehash.hex(),
        "mrsigner": sig.mrsigner.hex() if sig.is_signed else None,
        "isvprodid": sig.isvprodid,
        "isvsvn": sig.isvsvn,
        "attributes": {"flags": f"{sig.attributes.flags:#018x}", "xfrm": f"{sig.attributes.xfrm:#018x}",
                       "names": sig.attributes.names()},
        "attribute_mask": {"flags": f"{sig.attribute_mask.flags:#018x}", "xfrm": f"{sig.attribute_mask.xfrm:#018x}"},
        "miscselect": f"{sig.miscselect:#010x}",
        "miscmask": f"{sig.miscmask:#010x}",
        "date": day.isoformat() if day else None,
        "date_raw": f"{sig.date:#010x}",
        "date_encoding": encoding,
        "vendor": f"{sig.vendor:#06x}",
        "debug_signed": sig.debug_signed,
        "swdefined": f"{sig.swdefined:#010x}",
        "isvfamilyid": sig.isvfamilyid.hex(),
        "isvextprodid": sig.isvextprodid.hex(),
        "cet_attributes": sig.cet_attributes,
        "cet_attributes_mask": sig.cet_attributes_mask,
        "exponent": sig.exponent,
        "signed": sig.is_signed,
    }


def cmd_show(args: argparse.Namespace) -> int:
    info = _describe(args.file)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        if isinstance(value, dict):
            value = " ".join(f"{k}={' '.join(v) if isinstance(v, list) else v}" for k, v in value.items())
        print(f"{key}: {value}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    data = read_file(args.file, limit=IMAGE_LIMIT)
    if _is_image(data):
        from inclavare.enclave.image import load

        img = load(args.file)
        print(f"{args.file}: OK (enclave image, MRENCLAVE {img.mrenclave.hex()}, MRSIGNER {img.mrsigner.hex()})")
        return 0
    from inclavare.sgx.signing import verify

    sig = verify(_sigstruct_bytes(args.file, data))
    print(f"{args.file}: OK (SIGSTRUCT, ENCLAVEHASH {sig.enclavehash.hex()}, MRSIGNER {sig.mrsigner.hex()})")
    return 0


def cmd_measure(args: argparse.Namespace) -> int:
    from inclavare.formats.sgxs import TAG_ECREATE, read_sgxs

    data = read_file(args.file, limit=IMAGE_LIMIT)
    if _is_image(data):
        from inclavare.enclave.image import measure

        print(measure(data).hex())
    elif data[:8] == TAG_ECREATE:
        print(read_sgxs(data).mrenclave.hex())
    else:
        raise UsageError(f"{args.file}: neither an SGXS measurement stream nor an enclave image")
    return 0


def _write_atomic(path: str, data: bytes) -> None:
    from inclavare.atomicfile import write_atomic

    try:
        write_atomic(path, data, mode=0o644)
    except OSError as e:
        raise UsageError(f"{path}: {e.strerror}") from None


def cmd_sign(args: argparse.Namespace) -> int:
    from inclavare.enclave import image

    settings = image.EnclaveSettings(
        isvprodid=args.isvprodid, isvsvn=args.isvsvn, debug=args.debug, tcs_count=args.tcs,
        heap_size=image.DEFAULT_HEAP if args.heap_size is None else args.heap_size,
        stack_size=image.DEFAULT_STACK if args.stack_size is None else args.stack_size,
    )
    remote = [f for f in ("ca_cert", "token", "token_file", "client_cert", "client_key") if getattr(args, f)]
    if args.key and remote:
        raise UsageError(f"--{remote[0].replace('_', '-')} is for server-side signing (--server), not --key")
    unsigned = image.build(read_file(args.payload, "--payload", IMAGE_LIMIT), args.kind, settings)
    if args.server:
        signed = _sign_remote(args, unsigned)
    else:
        signed = image.sign(unsigned, read_file(args.key, "--key", KEY_LIMIT))
    _write_atomic(args.out, signed)
    print(f"{args.out}: MRENCLAVE {unsigned.mrenclave.hex()}")
    return 0


def _sign_remote(args: argparse.Namespace, unsigned: Any) -> bytes:
    """Server-side signing as upstream: the signing material goes to the server, which returns a PKCS#1 v1.5
    SHA-256 signature and its public key; the SIGSTRUCT is assembled and verified here."""
    from inclavare.enclave import image
    from inclavare.services.signature_server import SignatureClient

    token = args.token
    if args.token_file:
        token = read_file(args.token_file, "--token-file", KEY_LIMIT).decode("utf-8", "replace").strip()
        if not token:
            raise UsageError(f"{args.token_file}: the token file is empty")
    with SignatureClient(args.server, ca_cert=args.ca_cert, token=token, client_cert=args.client_cert,
                         client_key=args.client_key) as client:
        signature, public_key = client.sign(unsigned.signing_material())
    return image.assemble(unsigned, signature, public_key)


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


# --------------------------------------------------------------------------------------------------
# gen-token, gen-qe-target-info, gen-quote: AESM on SGX hardware, or the simulated platform with --sim

_EPID_QUOTE_TYPES = ("epidunlinkable", "epidlinkable")


def _check_quote_type(value: str) -> None:
    if value.lower() in _EPID_QUOTE_TYPES:
        raise UsageError(f"--quote-type {value}: EPID attestation has been retired by Intel; use ecdsa")
    if value.lower() != "ecdsa":
        raise UsageError(f"--quote-type {value!r} is not supported (supported: ecdsa)")


def _sim_notice() -> None:
    print(f"{PROG}: --sim: the simulated SGX platform protects nothing (no confidentiality; its quotes verify "
          "only against the sim root CA)", file=sys.stderr)


def _quoting_service(args: argparse.Namespace) -> Any:
    if args.sim:
        _sim_notice()
        from inclavare.sim.quoting import SimQuotingService

        return SimQuotingService.open()
    from inclavare.sgx.aesm import AesmQuotingService

    return AesmQuotingService(args.aesm_socket)


def _read_sized(flag: str, path: str, what: str, size: int) -> bytes:
    data = read_file(path)
    if len(data) != size:
        raise UsageError(f"{flag} {path}: {len(data)} bytes, a {what} is {size}")
    return data


def _default_token_path(sig_path: str) -> str:
    base = os.path.basename(sig_path)
    stem = base[:-len(".sig")] if base.endswith(".sig") and len(base) > len(".sig") else base
    return os.path.join(os.path.dirname(sig_path), stem + ".token")


def cmd_gen_token(args: argparse.Namespace) -> int:
    from inclavare.formats.sgx import SIGSTRUCT_SIZE, SgxFormatError, SigStruct

    raw = _read_sized("--signature", args.signature, "SIGSTRUCT", SIGSTRUCT_SIZE)
    try:
        sig = SigStruct.parse(raw)
    except SgxFormatError as e:
        raise UsageError(f"--signature {args.signature}: {e}") from None
    if args.sim:
        _sim_notice()
        from inclavare.sim.launch import sim_launch_token

        try:
            token = sim_launch_token(sig.enclavehash, sig.modulus, sig.attributes.pack())
        except PermissionError as e:
            raise UsageError(f"--signature {args.signature}: the launch enclave refuses a token: {e}") from None
    else:
        from inclavare.sgx.aesm import AesmClient

        token = AesmClient(args.aesm_socket).launch_token(sig.enclavehash, sig.modulus, sig.attributes.pack())
    out = args.token or _default_token_path(args.signature)
    _write_atomic(out, token)
    print(f"{out}: EINITTOKEN for MRENCLAVE {sig.enclavehash.hex()}")
    return 0


def cmd_gen_qe_target_info(args: argparse.Namespace) -> int:
    from inclavare.formats.sgx import TARGETINFO_SIZE

    _check_quote_type(args.quote_type)
    ti = _quoting_service(args).qe_target_info()
    if len(ti) != TARGETINFO_SIZE:
        raise UsageError(f"the quoting service returned a {len(ti)}-byte TARGETINFO, expected {TARGETINFO_SIZE}")
    out = args.targetinfo or "qe_targetinfo.bin"
    _write_atomic(out, ti)
    print(f"{out}: TARGETINFO of the quoting enclave (MRENCLAVE {ti[:32].hex()})")
    return 0


def cmd_gen_quote(args: argparse.Namespace) -> int:
    from inclavare.formats.sgx import REPORT_SIZE

    _check_quote_type(args.quote_type)
    report = _read_sized("--report", args.report, "REPORT", REPORT_SIZE)
    quote = _quoting_service(args).get_quote(report)
    out = args.quote or "quote.bin"
    _write_atomic(out, quote)
    print(f"{out}: {args.quote_type.lower()} quote, {len(quote)} bytes")
    return 0


def _platform_args(cmd: argparse.ArgumentParser) -> None:
    where = cmd.add_mutually_exclusive_group()
    where.add_argument("--aesm-socket", metavar="PATH", default=None,
                       help="AESM socket (default $INCLAVARE_AESM_SOCKET or /var/run/aesmd/aesm.socket)")
    where.add_argument("--sim", action="store_true",
                       help="use the simulated SGX platform instead of AESM (protects nothing)")


def cmd_verify_quote(args: argparse.Namespace) -> int:
    """verify-quote: the attestation verifier (the same core as `shelter verify`) on a DCAP quote."""
    from inclavare.attestation import evidence as ev

    _check_quote_type(args.quote_type)
    data = read_file(args.quote, "--quote", EVIDENCE_LIMIT)
    if ev.detect(data) != "dcap":
        raise InclavareError(f"--quote {args.quote}: not a DCAP quote")
    ns = argparse.Namespace(certs=args.certs, report_data=None, trust_sim=args.trust_sim, sim_root=args.sim_root,
                            collateral=args.collateral, tcb_info=None, qe_identity=None, pck_crl=None, root_crl=None,
                            vcek=None, cert_chain=None, as_of=args.as_of)
    opts, with_collateral, material = build_options(ns, "dcap")
    result = ev.verify_raw(data, "auto", opts)
    ok = ev.summary(result, with_collateral)
    report(result, ok, material, args.json)
    return 0 if ok else 1


def _add_gen_commands(sub: Any) -> None:
    tk = sub.add_parser("gen-token", help="get a launch token (EINITTOKEN) for a SIGSTRUCT from AESM")
    tk.add_argument("--signature", required=True, help="the SIGSTRUCT file (1808 bytes)")
    tk.add_argument("--token", default=None, help="output file (default: the signature's path, .sig -> .token)")
    _platform_args(tk)
    tk.set_defaults(func=cmd_gen_token)

    ti = sub.add_parser("gen-qe-target-info", help="get the quoting enclave's TARGETINFO from AESM")
    ti.add_argument("--quote-type", required=True, help="ecdsa")
    ti.add_argument("--targetinfo", default=None, help="output file (default qe_targetinfo.bin)")
    _platform_args(ti)
    ti.set_defaults(func=cmd_gen_qe_target_info)

    gq = sub.add_parser("gen-quote", help="get a quote over a REPORT from AESM")
    gq.add_argument("--quote-type", required=True, help="ecdsa")
    gq.add_argument("--report", required=True, help="the REPORT file (432 bytes), made for the QE's TARGETINFO")
    gq.add_argument("--quote", default=None, help="output file (default quote.bin)")
    gq.add_argument("--spid", default=None, help="EPID only (retired by Intel); not used for ecdsa")
    _platform_args(gq)
    gq.set_defaults(func=cmd_gen_quote)

    vq = sub.add_parser("verify-quote", help="verify a DCAP quote (signatures, PCK chain, and TCB with collateral)")
    vq.add_argument("--quote-type", default="ecdsa")
    vq.add_argument("--quote", required=True)
    add_verify_flags(vq)
    vq.set_defaults(func=cmd_verify_quote)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="SGX SIGSTRUCT, measurement and enclave image tools")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    sig = sub.add_parser("sigstruct", help="inspect or verify a SIGSTRUCT")
    sigsub = sig.add_subparsers(dest="action", required=True, parser_class=Parser)
    show = sigsub.add_parser("show", help="print the SIGSTRUCT's fields")
    show.add_argument("file")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=cmd_show)
    ver = sigsub.add_parser("verify", help="check the RSA signature, exponent, Q1 and Q2")
    ver.add_argument("file")
    ver.set_defaults(func=cmd_verify)

    meas = sub.add_parser("measure", help="print the MRENCLAVE of an SGXS stream or an enclave image")
    meas.add_argument("file")
    meas.set_defaults(func=cmd_measure)

    sg = sub.add_parser("sign", help="build and sign an enclave image (client-side --key or server-side --server)")
    how = sg.add_mutually_exclusive_group(required=True)
    how.add_argument("--key", help="RSA-3072 e=3 private key (PEM): sign here")
    how.add_argument("--server", metavar="URL", help="signature server base URL, e.g. https://signer:9080")
    sg.add_argument("--ca-cert", help="with --server: CA certificate (PEM) to verify the server's (default: system)")
    tok = sg.add_mutually_exclusive_group()
    tok.add_argument("--token", help="with --server: bearer token")
    tok.add_argument("--token-file", help="with --server: file holding the bearer token")
    sg.add_argument("--client-cert", help="with --server: client certificate (PEM) for mutual TLS")
    sg.add_argument("--client-key", help="with --server: the client certificate's private key (PEM)")
    sg.add_argument("--payload", required=True, help="the payload file")
    sg.add_argument("--kind", required=True, choices=["wasm", "native"])
    sg.add_argument("--isvprodid", type=_int, default=0)
    sg.add_argument("--isvsvn", type=_int, default=0)
    sg.add_argument("--debug", action="store_true", help="a debug enclave (no production use)")
    sg.add_argument("--heap-size", type=_int, default=None, help="bytes, a multiple of 4096")
    sg.add_argument("--stack-size", type=_int, default=None, help="bytes per thread, a multiple of 4096")
    sg.add_argument("--tcs", type=_int, default=1, help="number of threads (TCS pages)")
    sg.add_argument("--out", required=True, help="the image file to write")
    sg.set_defaults(func=cmd_sign)

    _add_gen_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_program(PROG, build_parser(), lambda args: int(args.func(args)), argv)


if __name__ == "__main__":
    sys.exit(main())
