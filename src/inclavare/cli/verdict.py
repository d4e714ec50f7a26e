"""`verdict`: the command line of verdictd's admin API (clientapi), with upstream verdict's flags.

    verdict [-c ADDR] [--token T | --token-file F] [--cacert PEM [--cert PEM --key PEM] [--server-name N]]
            [--json] ACTION

ACTION is exactly one of upstream's ``--set-opa-policy NAME PATH``, ``--export-opa-policy NAME [-p DIR]``,
``--set-opa-reference NAME PATH``, ``--export-opa-reference NAME [-p DIR]``, ``--test-opa-remote POLICY_NAME
REFERENCE_NAME INPUT``, ``--test-opa-local POLICY_PATH REFERENCE_PATH INPUT``, ``--test-opa-local-policy
POLICY_PATH REFERENCE_NAME INPUT``, ``--test-opa-local-reference POLICY_NAME REFERENCE_PATH INPUT``,
``--set-image-policy PATH``, ``--export-image-policy [-p DIR]``, ``--set-image-sigstore PATH``,
``--export-image-sigstore [-p DIR]``, or ours: ``--create-key``, ``--get-key UUID``, ``--delete-key UUID``; or
one on verdictd's KBS admin endpoints (``--kbs URL``, :mod:`._verdict_kbs`): ``--set-resource REPO/TYPE/TAG FILE``,
``--delete-resource``, ``--list-resources``, ``--set-resource-policy``, ``--set-attestation-policy TEE FILE``,
``--set-reference-value NAME VALUES [--provenance T] [--expires T]``, ``--get-reference-value``,
``--list-reference-values``, ``--delete-reference-value``.

Exports are written, as upstream does, to ``DIR/NAME`` (``DIR/image_policy.json``, ``DIR/image_sigstore.yaml``
for the image files); ``-p -`` writes the content to stdout instead. The admin token comes from ``--token``,
``--token-file`` or ``$VERDICT_TOKEN``. ``--json`` prints one JSON object per run. Exit status: 0 done (a TestOpa
run is done whatever its decision says), 1 the server refused or failed, 2 a bad command line or local file.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from typing import Any

from inclavare.cli import _verdict_kbs
from inclavare.cli._common import Parser
from inclavare.cli._inputs import KEY_LIMIT, InputError, read_file
from inclavare.errors import InclavareError, UsageError

PROG = "verdict"
TOKEN_ENV = "VERDICT_TOKEN"
POLICY_LIMIT = 256 << 10
REFERENCE_LIMIT = 1 << 20
INPUT_LIMIT = 64 << 10

_ACTIONS = ("set_opa_policy", "export_opa_policy", "set_opa_reference", "export_opa_reference", "test_opa_remote",
            "test_opa_local", "test_opa_local_policy", "test_opa_local_reference", "set_image_policy",
            "export_image_policy", "set_image_sigstore", "export_image_sigstore", "create_key", "get_key",
            "delete_key", *_verdict_kbs.ACTIONS)


def build_parser() -> argparse.ArgumentParser:
    from inclavare.services.verdictd.clientapi_client import DEFAULT_ADDRESS

    p = Parser(prog=PROG, description="administer verdictd through its clientapi (gRPC)")
    p.add_argument("-c", "--client-api", default=DEFAULT_ADDRESS, metavar="ADDR",
                   help=f"verdictd's clientapi: HOST:PORT, [IPv6]:PORT or a unix socket path "
                        f"(default {DEFAULT_ADDRESS})")
    p.add_argument("-p", "--path", default="./", metavar="DIR", help="where exports are written (default ./; - for "
                   "stdout)")
    auth = p.add_argument_group("authentication")
    auth.add_argument("--token", help=f"admin bearer token (or --token-file, or ${TOKEN_ENV})")
    auth.add_argument("--token-file", metavar="FILE", help="file holding the admin bearer token")
    auth.add_argument("--cacert", metavar="PEM", help="CA certificate(s) to verify verdictd's TLS certificate "
                      "(turns TLS on)")
    auth.add_argument("--cert", metavar="PEM", help="client certificate for mutual TLS")
    auth.add_argument("--key", metavar="PEM", help="the client certificate's private key")
    auth.add_argument("--server-name", metavar="NAME", help="name verdictd's certificate must carry, when not the "
                      "address's host")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per call (default 30)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    act = p.add_argument_group("actions (exactly one)")
    act.add_argument("--set-opa-policy", nargs=2, metavar=("POLICY_NAME", "POLICY_PATH"))
    act.add_argument("--export-opa-policy", metavar="POLICY_NAME")
    act.add_argument("--set-opa-reference", nargs=2, metavar=("REFERENCE_NAME", "REFERENCE_PATH"))
    act.add_argument("--export-opa-reference", metavar="REFERENCE_NAME")
    act.add_argument("--test-opa-remote", nargs=3, metavar=("POLICY_NAME", "REFERENCE_NAME", "INPUT_PATH"),
                     help="stored policy, stored reference")
    act.add_argument("--test-opa-local", nargs=3, metavar=("POLICY_PATH", "REFERENCE_PATH", "INPUT_PATH"),
                     help="local policy, local reference")
    act.add_argument("--test-opa-local-policy", nargs=3, metavar=("POLICY_PATH", "REFERENCE_NAME", "INPUT_PATH"),
                     help="local policy, stored reference")
    act.add_argument("--test-opa-local-reference", nargs=3, metavar=("POLICY_NAME", "REFERENCE_PATH", "INPUT_PATH"),
                     help="stored policy, local reference")
    act.add_argument("--set-image-policy", metavar="POLICY_PATH", help="containers policy.json for image signatures")
    act.add_argument("--export-image-policy", action="store_true")
    act.add_argument("--set-image-sigstore", metavar="SIGSTORE_PATH", help="sigstore (lookaside) configuration YAML")
    act.add_argument("--export-image-sigstore", action="store_true")
    act.add_argument("--create-key", action="store_true", help="a new AES-256 key; prints its UUID")
    act.add_argument("--get-key", metavar="UUID", help="print the key's base64")
    act.add_argument("--delete-key", metavar="UUID")
    _verdict_kbs.add_arguments(p)
    return p


def _token(args: argparse.Namespace) -> bytes | None:
    from inclavare.services.verdictd.errors import VerdictdError

    try:
        return _token_of(args)
    except VerdictdError as e:
        raise UsageError(str(e)) from None


def _token_of(args: argparse.Namespace) -> bytes | None:
    from inclavare.services.verdictd.clientapi import check_token

    given = [x for x in (args.token is not None, args.token_file is not None) if x]
    if len(given) > 1:
        raise UsageError("give --token or --token-file, not both")
    if args.token is not None:
        return check_token(args.token.encode(), "--token")
    if args.token_file is not None:
        return check_token(read_file(args.token_file, "--token-file", KEY_LIMIT).strip(), f"--token-file "
                           f"{args.token_file}")
    env = os.environ.get(TOKEN_ENV)
    return check_token(env.strip().encode(), f"${TOKEN_ENV}") if env else None


def _json_file(path: str, what: str, limit: int) -> bytes:
    data = read_file(path, what, limit)
    try:
        json.loads(data)
    except ValueError as e:
        raise InputError(f"{what} {path}: not JSON ({str(e).splitlines()[0][:160]})") from None
    return data


def _dest(args: argparse.Namespace, filename: str) -> str | None:
    """Where an export goes (None: stdout), checked before anything is asked of verdictd."""
    if args.path == "-":
        return None
    if not filename or "/" in filename or filename in (".", ".."):
        raise UsageError(f"export name {filename!r}: cannot be a file name under --path; use -p - for stdout")
    return os.path.join(args.path, filename)


def _export(dest: str | None, content: bytes) -> dict[str, Any]:
    if dest is None:
        return {"content": content}
    try:
        with open(dest, "wb") as f:
            f.write(content)
    except OSError as e:
        raise InputError(f"--path {dest}: {e.strerror}") from None
    return {"path": dest}


def _run(args: argparse.Namespace) -> int:
    from inclavare.services.verdictd.clientapi_client import AdminClient

    chosen = [a for a in _ACTIONS if getattr(args, a) not in (None, False)]
    if len(chosen) != 1:
        raise UsageError("give exactly one action (see --help)" if not chosen else
                         f"give exactly one action, not {len(chosen)} ({', '.join(chosen)})")
    action = chosen[0]
    value = getattr(args, action)
    if not 0 < args.timeout <= 3600:
        raise UsageError(f"--timeout {args.timeout}: give seconds in (0, 3600]")
    token = _token(args)
    cacert = read_file(args.cacert, "--cacert", KEY_LIMIT) if args.cacert else None
    if (args.cert is None) != (args.key is None):
        raise UsageError("--cert and --key go together")
    cert = read_file(args.cert, "--cert", KEY_LIMIT) if args.cert else None
    key = read_file(args.key, "--key", KEY_LIMIT) if args.key else None
    if cert is not None and cacert is None:
        raise UsageError("--cert needs --cacert (the CA that signed verdictd's certificate)")
    if action != "set_reference_value" and (args.provenance is not None or args.expires is not None):
        raise UsageError("--provenance and --expires go with --set-reference-value")

    # local inputs are read (and refused) before anything is sent
    out: dict[str, Any] = {"action": action.replace("_", "-")}
    if action in _verdict_kbs.ACTIONS:
        _verdict_kbs.run(args, action, token, cacert, out)
        _print(args, out)
        return 0
    with AdminClient(args.client_api, token=token, cacert=cacert, cert=cert, key=key, server_name=args.server_name,
                     timeout=args.timeout) as c:
        if action == "set_opa_policy":
            c.set_opa_policy(value[0], read_file(value[1], "--set-opa-policy", POLICY_LIMIT))
            out["name"] = value[0]
        elif action == "set_opa_reference":
            c.set_opa_reference(value[0], _json_file(value[1], "--set-opa-reference", REFERENCE_LIMIT))
            out["name"] = value[0]
        elif action == "export_opa_policy":
            dest = _dest(args, value)
            out.update(name=value, **_export(dest, c.export_opa_policy(value)))
        elif action == "export_opa_reference":
            dest = _dest(args, value)
            out.update(name=value, **_export(dest, c.export_opa_reference(value)))
        elif action.startswith("test_opa"):
            local_policy = action in ("test_opa_local", "test_opa_local_policy")
            local_ref = action in ("test_opa_local", "test_opa_local_reference")
            flag = "--" + action.replace("_", "-")
            doc = _json_file(value[2], f"{flag} input", INPUT_LIMIT)
            policy = read_file(value[0], f"{flag} policy", POLICY_LIMIT) if local_policy else None
            ref = _json_file(value[1], f"{flag} reference", REFERENCE_LIMIT) if local_ref else None
            out["decision"] = c.test_opa(input_json=doc, policy_name="" if local_policy else value[0],
                                         policy_content=policy, reference_name="" if local_ref else value[1],
                                         reference_content=ref)
        elif action == "set_image_policy":
            c.set_image_policy(_json_file(value, "--set-image-policy", POLICY_LIMIT))
        elif action == "set_image_sigstore":
            c.set_image_sigstore(read_file(value, "--set-image-sigstore", INPUT_LIMIT))
        elif action == "export_image_policy":
            out.update(_export(_dest(args, "image_policy.json"), c.export_image_policy()))
        elif action == "export_image_sigstore":
            out.update(_export(_dest(args, "image_sigstore.yaml"), c.export_image_sigstore()))
        elif action == "create_key":
            out["uuid"] = c.create_key()
        elif action == "get_key":
            out.update(uuid=value, key=base64.b64encode(c.get_key(value)).decode())
        elif action == "delete_key":
            c.delete_key(value)
            out["uuid"] = value
    _print(args, out)
    return 0


def _print(args: argparse.Namespace, out: dict[str, Any]) -> None:
    content = out.pop("content", None)
    lines = out.pop("_lines", None)
    if args.json:
        if content is not None:
            out["content"] = content.decode("utf-8", "replace")
        sys.stdout.write(json.dumps({"ok": True, **out}, sort_keys=True) + "\n")
        return
    if content is not None:
        sys.stdout.buffer.write(content)
    elif lines is not None:
        sys.stdout.write("".join(f"{line}\n" for line in lines))
    elif "decision" in out:
        sys.stdout.write(json.dumps(out["decision"], sort_keys=True) + "\n")
    elif "key" in out:
        sys.stdout.write(out["key"] + "\n")
    elif "uuid" in out and out["action"] == "create-key":
        sys.stdout.write(out["uuid"] + "\n")
    elif "path" in out:
        sys.stdout.write(f"{out['action']}: written to {out['path']}\n")
    else:
        sys.stdout.write(f"{out['action']}: OK\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """Run ``verdict``; one ``verdict: message`` line on failure (exit 2: command line or local file, 1: verdictd
    refused or could not be reached)."""
    parser = build_parser()
    as_json = "--json" in (sys.argv[1:] if argv is None else argv)
    try:
        return _run(parser.parse_args(list(sys.argv[1:] if argv is None else argv)))
    except (UsageError, InputError) as e:
        return _fail(str(e), 2, as_json)
    except InclavareError as e:
        return _fail(str(e), 1, as_json)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1


def _fail(message: str, status: int, as_json: bool) -> int:
    if as_json:
        sys.stdout.write(json.dumps({"ok": False, "error": message}) + "\n")
        sys.stdout.flush()
    sys.stderr.write(f"{PROG}: {message}\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
