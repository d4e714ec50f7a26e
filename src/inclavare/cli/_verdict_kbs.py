"""`verdict`'s actions on verdictd's KBS admin endpoints (HTTP(S), the admin bearer token): resources, the
resource and attestation policies, and reference values. :mod:`inclavare.cli.verdict` owns the parser and the
output; this module adds its flags and runs its actions through
:class:`inclavare.services.verdictd.kbs_admin_client.KbsAdminClient`.

Local input (paths, names, values, files) is checked before anything is sent, with verdictd's own rules, so a
mistake is exit 2 and never reaches the server.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from typing import Any

from inclavare.cli._inputs import InputError, read_file
from inclavare.errors import UsageError

KBS_ENV = "VERDICT_KBS"
RESOURCE_LIMIT = 1 << 20  # verdictd's KBS body limit
POLICY_LIMIT = 256 << 10
MAX_INT_DIGITS = 20  # a decimal value this short is an int (an SVN, a product id); 2**64-1 has 20 digits

ACTIONS = ("set_resource", "delete_resource", "list_resources", "set_resource_policy", "set_attestation_policy",
           "set_reference_value", "get_reference_value", "list_reference_values", "delete_reference_value")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The KBS flags: where, the reference value options, and the actions."""
    kbs = p.add_argument_group("KBS admin (verdictd's KBS admin endpoints; the authentication flags apply)")
    kbs.add_argument("--kbs", metavar="URL", help=f"verdictd's KBS admin listener, https://HOST:PORT (http:// only "
                     f"to a loopback host); default ${KBS_ENV}")
    kbs.add_argument("--provenance", metavar="TEXT", help="with --set-reference-value: where the values come from")
    kbs.add_argument("--expires", metavar="RFC3339", help="with --set-reference-value: when the values stop "
                     "counting, e.g. 2027-01-01T00:00:00Z")
    act = p.add_argument_group("KBS actions (exactly one action in all)")
    act.add_argument("--set-resource", nargs=2, metavar=("REPO/TYPE/TAG", "FILE"), help="store FILE's bytes as the "
                     "resource (- reads stdin)")
    act.add_argument("--delete-resource", metavar="REPO/TYPE/TAG")
    act.add_argument("--list-resources", action="store_true", help="the stored resource paths (never values)")
    act.add_argument("--set-resource-policy", metavar="POLICY_PATH", help="Rego with data.policy.allow, for every "
                     "resource request")
    act.add_argument("--set-attestation-policy", nargs=2, metavar=("TEE", "POLICY_PATH"),
                     help="Rego appraising evidence of TEE: sgx, tdx, snp or sim")
    act.add_argument("--set-reference-value", nargs=2, metavar=("NAME", "VALUE[,VALUE...]"),
                     help="replace the values accepted under NAME: hex (0x optional) or decimal ints, or a JSON list")
    act.add_argument("--get-reference-value", metavar="NAME")
    act.add_argument("--list-reference-values", action="store_true",
                     help="every entry with its provenance and expiry, expired ones too")
    act.add_argument("--delete-reference-value", metavar="NAME")


def _resource_path(text: str, flag: str) -> str:
    from inclavare.services.verdictd.kbs import KbsError, check_resource_path

    try:
        return check_resource_path(text.split("/"))
    except KbsError as e:
        raise UsageError(f"{flag} {text[:200]}: {e.detail}") from None


def _refname(name: str, flag: str) -> str:
    from inclavare.services.verdictd.refvalues import RefValueError, check_refname

    try:
        return check_refname(name)
    except RefValueError as e:
        raise UsageError(f"{flag}: {e}") from None


def parse_values(name: str, text: str) -> list[str | int]:
    """``VALUE[,VALUE...]`` as verdictd stores it: a decimal number of at most 20 digits is an int, anything else
    a hex string (``0x`` forces hex); text starting with ``[`` is a JSON list taken as is. Checked with verdictd's
    rules (normalised: lower-case hex, duplicates dropped)."""
    from inclavare.services.verdictd.refvalues import RefValueError, normalise_values

    raw: Any
    if text.lstrip().startswith("["):
        try:
            raw = json.loads(text)
        except ValueError as e:
            raise UsageError(f"--set-reference-value {name}: not a JSON list ({str(e).splitlines()[0][:120]})") \
                from None
    else:
        raw = []
        for part in text.split(","):
            part = part.strip()
            if not part:
                raise UsageError(f"--set-reference-value {name}: an empty value in {text[:120]!r}")
            raw.append(int(part) if part.isdigit() and part.isascii() and len(part) <= MAX_INT_DIGITS else part)
    try:
        return normalise_values(name, raw)
    except RefValueError as e:
        raise UsageError(f"--set-reference-value: {e}") from None


def _expires(text: str) -> str:
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(f"--expires {text[:80]!r}: not an RFC 3339 time (e.g. 2027-01-01T00:00:00Z)") from None
    if when.tzinfo is None:
        raise UsageError(f"--expires {text[:80]!r}: give a time zone (Z or +HH:MM)")
    return when.isoformat()


def _read(path: str, flag: str, limit: int) -> bytes:
    """FILE's bytes, at most ``limit``; ``-`` reads stdin."""
    if path != "-":
        return read_file(path, flag, limit)
    data = sys.stdin.buffer.read(limit + 1)
    if len(data) > limit:
        raise InputError(f"{flag} -: stdin has more than the {limit >> 10} KiB this input may have")
    return data


def _policy(path: str, flag: str) -> bytes:
    data = _read(path, flag, POLICY_LIMIT)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{flag} {path}: not UTF-8 text") from None
    return data


def run(args: argparse.Namespace, action: str, token: bytes | None, cacert: bytes | None,
        out: dict[str, Any]) -> None:
    """Run KBS ``action``; fills ``out`` (JSON fields, and ``_lines`` for the human output)."""
    from inclavare.services.verdictd.errors import VerdictdError
    from inclavare.services.verdictd.kbs_admin_client import KbsAdminClient

    value = getattr(args, action)
    url = args.kbs or os.environ.get(KBS_ENV)
    if not url:
        raise UsageError(f"--{action.replace('_', '-')}: give --kbs URL (or ${KBS_ENV})")
    if token is None:
        raise UsageError("the KBS admin endpoints need the admin token: --token, --token-file or $VERDICT_TOKEN")
    if args.cert is not None:
        raise UsageError("--cert/--key: the KBS admin endpoints take the admin token, not a client certificate")

    # local input first: nothing is sent if any of it is wrong
    body: bytes | None = None
    if action == "set_resource":
        path = _resource_path(value[0], "--set-resource")
        body = _read(value[1], "--set-resource", RESOURCE_LIMIT)
    elif action == "delete_resource":
        path = _resource_path(value, "--delete-resource")
    elif action == "set_resource_policy":
        body = _policy(value, "--set-resource-policy")
    elif action == "set_attestation_policy":
        from inclavare.services.verdictd.policy import ATTESTATION_POLICIES

        if value[0] not in ATTESTATION_POLICIES:
            raise UsageError(f"--set-attestation-policy {value[0]!r}: verdictd appraises with the policy named after "
                             f"the TEE: {', '.join(ATTESTATION_POLICIES)}")
        body = _policy(value[1], "--set-attestation-policy")
    elif action == "set_reference_value":
        name = _refname(value[0], "--set-reference-value")
        values = parse_values(name, value[1])
        expires = _expires(args.expires) if args.expires is not None else None
    elif action in ("get_reference_value", "delete_reference_value"):
        name = _refname(value, "--" + action.replace("_", "-"))

    try:
        c = KbsAdminClient(url, token=token.decode("ascii"), cacert=cacert, server_name=args.server_name,
                           timeout=args.timeout)
    except VerdictdError as e:
        raise UsageError(str(e)) from None
    if action == "set_resource":
        assert body is not None
        c.set_resource(path, body)
        out.update(resource=path, size=len(body))
    elif action == "delete_resource":
        c.delete_resource(path)
        out["resource"] = path
    elif action == "list_resources":
        out["resources"] = c.list_resources()
        out["_lines"] = list(out["resources"])
    elif action == "set_resource_policy":
        assert body is not None
        c.set_resource_policy(body)
    elif action == "set_attestation_policy":
        assert body is not None
        c.set_attestation_policy(value[0], body)
        out["policy_id"] = value[0]
    elif action == "set_reference_value":
        c.set_reference_value(name, values, args.provenance or "", expires)
        out.update(name=name, values=values, provenance=args.provenance or "", expires=expires)
    elif action == "get_reference_value":
        out.update(name=name, values=c.get_reference_value(name))
        out["_lines"] = [str(v) for v in out["values"]]
    elif action == "list_reference_values":
        entries = c.list_reference_values()
        out["reference_values"] = entries
        out["_lines"] = [_entry_line(n, e) for n, e in sorted(entries.items())]
    elif action == "delete_reference_value":
        c.delete_reference_value(name)
        out["name"] = name


def _entry_line(name: str, entry: dict[str, Any]) -> str:
    values = ",".join(str(v) for v in entry.get("values", []))
    notes = [f"provenance: {entry['provenance']}"] if entry.get("provenance") else []
    if entry.get("expires"):
        notes.append(f"expires {entry['expires']}")
    if entry.get("expired"):
        notes.append("EXPIRED")
    return f"{name} {values}" + (f" ({'; '.join(notes)})" if notes else "")
