"""`inclavare-image`: encrypt and decrypt container images in ocicrypt's format (skopeo, containerd imgcrypt,
podman read and write it), over OCI image layouts.

    inclavare-image encrypt --key jwe:PUBKEY.pem|provider:NAME[:VALUE] [--key ...] [--layer N]... [--ref NAME]...
                            [--keyprovider-config FILE] [--json] SRC DST
    inclavare-image decrypt --key jwe:PRIVKEY.pem|provider:NAME[:VALUE] [--key ...] [--layer N]... [--ref NAME]...
                            [--keyprovider-config FILE] [--json] SRC DST
    inclavare-image inspect [--json] SRC
    inclavare-image seal [--ref NAME]... [--json] SRC DST

SRC and DST are OCI image layout directories (``skopeo copy ... oci:DIR``); DST is a new path, or SRC itself
to change the layout in place. ``--layer`` picks layers by index (0 the bottom one, -1 the top one; repeat it);
the others are left as they are. ``--ref`` picks images by ``org.opencontainers.image.ref.name``.

Keys, as skopeo's ``--encryption-key``/``--decryption-key`` (accepted as aliases of ``--key``) take them:
``jwe:FILE`` (encrypt: an RSA or EC public key, PEM/DER/JWK; decrypt: the private key) and
``provider:NAME[:VALUE]`` for a key provider named in ``--keyprovider-config`` or $OCICRYPT_KEYPROVIDER_CONFIG
(verdictd: the key id when encrypting, an attestation token when decrypting). ``VALUE`` ``@FILE`` reads the
value from FILE (a token does not belong on a command line).

``seal`` needs no key: it wraps each encrypted layer, still encrypted, in a plain tar layer
(``.inclavare/sealed/NNN/``) so that containerd, podman or docker unpack the image without decrypting it and only
the enclave, after attesting to the owner's key broker, does (docs/encrypted-images.md).

Exit status 0 done, 1 refused (a layer that does not verify, no key fits, a provider refusing; nothing is
written), 2 a bad command line or key file.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from inclavare.cli._common import Parser
from inclavare.cli._inputs import KEY_LIMIT, InputError, read_file
from inclavare.errors import InclavareError, UsageError

PROG = "inclavare-image"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="encrypt and decrypt OCI image layouts in ocicrypt's format")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, what in (("encrypt", "encrypt layers for recipients"), ("decrypt", "decrypt encrypted layers")):
        s = sub.add_parser(name, help=what)
        s.add_argument("--key", "--encryption-key" if name == "encrypt" else "--decryption-key", action="append",
                       default=[], metavar="SCHEME:ARG", help="jwe:FILE or provider:NAME[:VALUE|:@FILE] (repeat)")
        s.add_argument("--layer", action="append", type=int, metavar="N", help="only this layer (repeat; -1 = top)")
        s.add_argument("--ref", action="append", metavar="NAME", help="only the image with this ref name (repeat)")
        s.add_argument("--keyprovider-config", metavar="FILE", help="ocicrypt key provider configuration "
                       "(default $OCICRYPT_KEYPROVIDER_CONFIG)")
        s.add_argument("--timeout", type=float, default=30.0, help="seconds per key provider call (default 30)")
        s.add_argument("--json", action="store_true", help="print one JSON object")
        s.add_argument("src", metavar="SRC", help="OCI image layout directory")
        s.add_argument("dst", metavar="DST", help="new directory, or SRC to change it in place")
    s = sub.add_parser("seal", help="carry the encrypted layers as ciphertext inside plain layers, for enclaves")
    s.add_argument("--ref", action="append", metavar="NAME", help="only the image with this ref name (repeat)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.add_argument("src", metavar="SRC", help="OCI image layout directory")
    s.add_argument("dst", metavar="DST", help="new directory, or SRC to change it in place")
    s = sub.add_parser("inspect", help="list the layers and how they are encrypted")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.add_argument("src", metavar="SRC", help="OCI image layout directory")
    return p


def _value(raw: str, where: str) -> bytes:
    if raw.startswith("@"):
        return read_file(raw[1:], where, KEY_LIMIT).strip()
    return raw.encode()


def _keys(a: argparse.Namespace, encrypt: bool) -> Any:
    from inclavare.formats import ocicrypt_jwe as jwe
    from inclavare.formats.ocicrypt import OcicryptError
    from inclavare.services.imagecrypt.layout import DecryptConfig, EncryptConfig
    from inclavare.services.imagecrypt.provider import KeyProviderClient, load_config

    if not a.key:
        raise UsageError(f"{a.command}: give at least one --key (jwe:FILE or provider:NAME[:VALUE])")
    if not 0 < a.timeout <= 3600:
        raise UsageError(f"--timeout {a.timeout}: give seconds in (0, 3600]")
    config: EncryptConfig | DecryptConfig = EncryptConfig() if encrypt else DecryptConfig()
    providers: dict[str, Any] | None = None
    values: dict[str, list[bytes]] = {}
    try:
        for spec in a.key:
            scheme, _, arg = spec.partition(":")
            where = f"--key {spec[:60]}"
            if scheme == "jwe" and arg:
                data = read_file(arg, "--key jwe", KEY_LIMIT)
                if isinstance(config, EncryptConfig):
                    config.jwe_recipients.append(jwe.load_public_key(data, f"--key jwe:{arg}"))
                else:
                    config.jwe_keys.append(jwe.load_private_key(data, f"--key jwe:{arg}"))
            elif scheme == "provider" and arg:
                name, _, value = arg.partition(":")
                if providers is None:
                    providers = load_config(a.keyprovider_config)
                if name not in providers:
                    raise UsageError(f"{where}: no key provider {name!r} in "
                                     f"{a.keyprovider_config or '$OCICRYPT_KEYPROVIDER_CONFIG'}")
                values.setdefault(name, [])
                if value:
                    values[name].append(_value(value, where))
            else:
                raise UsageError(f"{where}: expected jwe:FILE or provider:NAME[:VALUE]"
                                 + (" (pgp, pkcs7 and pkcs11 are not supported)" if scheme in ("pgp", "pkcs7",
                                                                                               "pkcs11") else ""))
    except OcicryptError as e:
        raise InputError(str(e)) from None
    for name, vals in values.items():
        assert providers is not None
        config.providers.append((KeyProviderClient(providers[name], timeout=a.timeout), vals))
    return config


def _print(a: argparse.Namespace, out: dict[str, Any], lines: list[str]) -> None:
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        print("\n".join(lines))


def _run(a: argparse.Namespace) -> int:
    from inclavare.services.imagecrypt.layout import decrypt_layout, describe_layout, encrypt_layout

    if a.command == "inspect":
        rows = describe_layout(a.src)
        lines = [f"{r['manifest'][:19]} layer {r['layer']}: {r['mediaType']} {r['digest']} ({r['size']} bytes)"
                 + (f" {r['cipher']} for {', '.join(r['wrappedFor'])}" if "cipher" in r else "") for r in rows]
        _print(a, {"layers": rows}, lines)
        return 0
    if a.command == "seal":
        from inclavare.services.imagecrypt.seal import seal_layout

        results = seal_layout(a.src, a.dst, refs=a.ref)
    else:
        config = _keys(a, a.command == "encrypt")
        run = encrypt_layout if a.command == "encrypt" else decrypt_layout
        results = run(a.src, a.dst, config, layers=a.layer, refs=a.ref)
    lines = []
    for r in results:
        if r.action == "kept":
            lines.append(f"layer {r.index} of {r.manifest[:19]}: kept ({r.why})")
        elif r.action == "sealed":
            lines.append(f"layer {r.index} of {r.manifest[:19]}: sealed {r.digest} -> {r.new_digest}")
        else:
            lines.append(f"layer {r.index} of {r.manifest[:19]}: {r.action} {r.digest} -> {r.new_digest} "
                         f"({', '.join(r.wrappers)})")
    _print(a, {"command": a.command, "src": a.src, "dst": a.dst, "layers": [r.as_dict() for r in results]}, lines)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``inclavare-image``; one ``inclavare-image: message`` line on failure (exit 2: command line or key
    file, 1: refused)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return _run(build_parser().parse_args(args))
    except (UsageError, InputError) as e:
        sys.stderr.write(f"{PROG}: {e}\n")
        return 2
    except InclavareError as e:
        sys.stdout.flush()
        sys.stderr.write(f"{PROG}: {e}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
