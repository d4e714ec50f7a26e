"""`sgx-tools`: SIGSTRUCT inspection and verification, MRENCLAVE measurement, and enclave image signing.

    sgx-tools sigstruct show FILE [--json]     FILE: a 1808-byte SIGSTRUCT or an enclave image
    sgx-tools sigstruct verify FILE            exit 0 iff valid (an enclave image gets the full load() check)
    sgx-tools measure FILE                     SGXS stream or enclave image -> MRENCLAVE (hex)
    sgx-tools sign --key PEM --payload FILE --kind wasm|native [--isvprodid N] [--isvsvn N] [--debug]
                   [--heap-size B] [--stack-size B] [--tcs N] --out FILE

Errors print ``sgx-tools: <message>`` on one line and exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, NoReturn

from inclavare.errors import InclavareError

PROG = "sgx-tools"


class UsageError(InclavareError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise UsageError(f"{path}: {e.strerror}") from None


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

    sig = SigStruct.parse(_sigstruct_bytes(path, _read(path)))
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
    data = _read(args.file)
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

    data = _read(args.file)
    if _is_image(data):
        from inclavare.enclave.image import measure

        print(measure(data).hex())
    elif data[:8] == TAG_ECREATE:
        print(read_sgxs(data).mrenclave.hex())
    else:
        raise UsageError(f"{args.file}: neither an SGXS measurement stream nor an enclave image")
    return 0


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise UsageError(f"{path}: {e.strerror}") from None


def cmd_sign(args: argparse.Namespace) -> int:
    from inclavare.enclave import image

    settings = image.EnclaveSettings(
        isvprodid=args.isvprodid, isvsvn=args.isvsvn, debug=args.debug, tcs_count=args.tcs,
        heap_size=image.DEFAULT_HEAP if args.heap_size is None else args.heap_size,
        stack_size=image.DEFAULT_STACK if args.stack_size is None else args.stack_size,
    )
    unsigned = image.build(_read(args.payload), args.kind, settings)
    _write_atomic(args.out, image.sign(unsigned, _read(args.key)))
    print(f"{args.out}: MRENCLAVE {unsigned.mrenclave.hex()}")
    return 0


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="SGX SIGSTRUCT, measurement and enclave image tools")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sig = sub.add_parser("sigstruct", help="inspect or verify a SIGSTRUCT")
    sigsub = sig.add_subparsers(dest="action", required=True, parser_class=_Parser)
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

    sg = sub.add_parser("sign", help="build and sign an enclave image (client-side signing)")
    sg.add_argument("--key", required=True, help="RSA-3072 e=3 private key (PEM)")
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
    return p


def main(argv: list[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(args_list)
        code: int = args.func(args)
        return code
    except InclavareError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
