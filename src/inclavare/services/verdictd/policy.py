"""verdictd's policy engine: the owner's Rego policies evaluated through regopy (rego-cpp).

Attestation policies (one per TEE, defaults in ``policies/{sgx,tdx,snp,sim,sample}.rego``) are ``package policy``
modules producing, under ``data.policy``:

- ``allow``: true only if the evidence is acceptable (anything but the boolean true denies);
- ``tier``: the EAR trust tier, one of ``affirming``, ``warning``, ``contraindicated``, ``none``;
- ``reasons``: a set of strings, every reason the evidence was refused or not affirmed.

Their input is ``{"tee", "tcb_status", <every flat claim of the verifier>}`` (the explicit ``tee`` and
``tcb_status`` win over claims of the same names) and their data is ``{"reference": <reference values>}``
(name -> list of accepted values, :meth:`ReferenceValues.as_policy_data`). A policy that allows without naming a
tier gets ``warning`` (it vouched for nothing more); an allow with tier ``contraindicated``/``none`` is
contradictory and denies; a denial never carries ``affirming``/``warning``. Evidence from the simulated
platform (``tee == "sim"``) and Trustee's unsigned ``sample`` evidence are capped at ``warning`` whatever the
policy says: they protect nothing.

Resource policies follow Trustee's KBS: ``data.policy.allow`` over input = the EAR token's claims and data =
``{"plugin": "resource", "resource-path": "<repo>/<type>/<tag>", "query": {...}}`` (``policies/resource.rego``).

:meth:`PolicyEngine.test` is upstream verdictd's TestOpa: a policy text, a reference JSON and an input JSON in,
the decision JSON out.

Bounds (rego-cpp has no evaluation timeout, so what reaches it is capped): a policy text at most 256 KiB, an
input document 64 KiB and 512 JSON values, reference data 1 MiB and 4096 values, JSON nesting 16 levels.
Compiled policies are cached (keyed by policy text and data), so an appraisal costs one query on a prepared
bundle. Errors are :class:`VerdictdError`, one line naming what and where (for Rego, the line and column
regopy reports).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import regopy

from inclavare.attestation.api import Result
from inclavare.formats import strictjson
from inclavare.services.verdictd.errors import VerdictdError

__all__ = [
    "ATTESTATION_POLICIES",
    "MAX_DEPTH",
    "MAX_INPUT",
    "MAX_INPUT_VALUES",
    "MAX_POLICY",
    "MAX_REFERENCE",
    "MAX_REFERENCE_VALUES",
    "TIERS",
    "Decision",
    "PolicyEngine",
    "default_policy",
]

TIERS = ("affirming", "warning", "contraindicated", "none")
ATTESTATION_POLICIES = ("sgx", "tdx", "snp", "sim", "sample")
# TEEs whose evidence protects nothing (the simulated platform; Trustee's unsigned sample): never above warning
UNPROTECTED_TEES = ("sim", "sample")
MAX_POLICY = 256 * 1024  # bytes of Rego source (UTF-8)
MAX_INPUT = 64 * 1024  # bytes of the input document, as compact JSON
MAX_INPUT_VALUES = 512  # JSON values (scalars, arrays, objects) in the input document
MAX_REFERENCE = 1024 * 1024  # bytes of the data document, as compact JSON
MAX_REFERENCE_VALUES = 4096  # JSON values in the data document
MAX_DEPTH = 16  # nesting of objects/arrays in input and data
MAX_INT = 1 << 64
MAX_REASONS = 64
MAX_REASON = 512  # characters kept of one reason
CACHE_ENTRIES = 64

_MODULE = "policy.rego"
# allow is bound on its own too: _decision checks it against the package document's allow
_POLICY_QUERY = "allow = data.policy.allow; x = data.policy"
_PACKAGE_RE = re.compile(r"^[ \t]*package[ \t]+policy[ \t]*(#.*)?$", re.MULTILINE)
_ERROR_RE = re.compile(r"\(error \d+:[^|\n]*\|(\d+)\|\d+")
_ERRMSG_RE = re.compile(r"\(errormsg \d+:([^\n]*?)\)?$", re.MULTILINE)


@dataclass(frozen=True)
class Decision:
    """The outcome of appraising evidence: allowed or not, the EAR trust tier, and why."""

    allow: bool
    tier: str
    reasons: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"allow": self.allow, "tier": self.tier, "reasons": list(self.reasons)}


@cache
def default_policy(tee: str) -> str:
    """The default policy text for ``tee`` (``sgx``, ``tdx``, ``snp``, ``sim``, ``sample``) or ``resource``."""
    if tee not in (*ATTESTATION_POLICIES, "resource"):
        raise VerdictdError(f"default policy: no default for {tee!r} (known: {', '.join(ATTESTATION_POLICIES)}, "
                            f"resource)")
    return (resources.files("inclavare.services.verdictd") / "policies" / f"{tee}.rego").read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# Bounded JSON


def _check_json(value: Any, what: str, limit: int, max_values: int) -> str:
    """``value`` as compact JSON text, after checking it is plain JSON (str keys; str, int, finite float, bool,
    None, list, dict) of at most ``max_values`` values, nested at most MAX_DEPTH deep, ints within +-2**64, and
    at most ``limit`` bytes. (rego-cpp's parsers are superlinear in the number of values: 1024 values in an
    input take it ~10-30 ms, 4096 in data ~0.4 s, 16384 ~8 s.)"""
    stack: list[tuple[Any, int, str]] = [(value, 0, "")]
    seen = 0
    while stack:
        v, depth, path = stack.pop()
        seen += 1
        if seen > max_values:
            raise VerdictdError(f"{what}: more than {max_values} JSON values")
        if isinstance(v, dict):
            if depth >= MAX_DEPTH:
                raise VerdictdError(f"{what}{path}: nested deeper than {MAX_DEPTH} levels")
            for k, item in v.items():
                if not isinstance(k, str):
                    raise VerdictdError(f"{what}{path}: key {k!r} is not a string")
                stack.append((item, depth + 1, f"{path}[{k[:40]!r}]"))
        elif isinstance(v, list):
            if depth >= MAX_DEPTH:
                raise VerdictdError(f"{what}{path}: nested deeper than {MAX_DEPTH} levels")
            stack.extend((item, depth + 1, f"{path}[{i}]") for i, item in enumerate(v))
        elif isinstance(v, bool) or v is None or isinstance(v, str):
            pass
        elif isinstance(v, int):
            if not -MAX_INT < v < MAX_INT:
                raise VerdictdError(f"{what}{path}: integer outside +-2**64")
        elif isinstance(v, float):
            if not math.isfinite(v):
                raise VerdictdError(f"{what}{path}: {v} is not a finite number")
        else:
            raise VerdictdError(f"{what}{path}: a {type(v).__name__} is not a JSON value")
    text = json.dumps(value, separators=(",", ":"), sort_keys=True)
    if len(text.encode()) > limit:
        raise VerdictdError(f"{what}: {len(text.encode())} bytes of JSON, more than {limit}")
    return text


def _parse_json(text: str | bytes, what: str, limit: int, max_values: int) -> Any:
    """JSON text (at most ``limit`` bytes) parsed, then bounded as :func:`_check_json` does."""
    raw = text.encode() if isinstance(text, str) else bytes(text)
    if len(raw) > limit:
        raise VerdictdError(f"{what}: {len(raw)} bytes, more than {limit}")
    try:
        value = json.loads(raw)
    except RecursionError:
        raise VerdictdError(f"{what}: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise VerdictdError(f"{what}: not JSON ({str(e).splitlines()[0][:200]})") from None
    _check_json(value, what, limit, max_values)
    return value


def _check_policy_text(policy_text: str) -> None:
    if not isinstance(policy_text, str):
        raise VerdictdError(f"policy: a {type(policy_text).__name__}, not a string")
    size = len(policy_text.encode("utf-8", "replace"))
    if size > MAX_POLICY:
        raise VerdictdError(f"policy: {size} bytes, more than {MAX_POLICY}")
    if "\x00" in policy_text:
        raise VerdictdError("policy: contains a NUL character")


def _rego_error(policy_text: str, err: Exception) -> str:
    """regopy's error AST (``(error N:file|offset|len (errormsg N:text) ...)``) as ``line L col C: text``."""
    message = str(err)
    where = _ERROR_RE.search(message)
    what = _ERRMSG_RE.search(message)
    text = what.group(1).strip() if what else (message.strip().splitlines() or ["unknown error"])[0][:200]
    if where is None:
        return text
    offset = int(where.group(1))
    before = policy_text.encode()[:offset].decode("utf-8", "replace")
    line = before.count("\n") + 1
    col = len(before) - (before.rfind("\n") + 1) + 1
    return f"line {line} col {col}: {text}"


# --------------------------------------------------------------------------------------------------
# Decisions


def _reasons(value: Any) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    out = [(v if isinstance(v, str) else json.dumps(v, sort_keys=True))[:MAX_REASON] for v in items]
    if len(out) > MAX_REASONS:
        out = [*out[:MAX_REASONS], f"... and {len(out) - MAX_REASONS} more"]
    return out


def _decision(tee: str, bindings: dict[str, Any] | None) -> Decision:
    """The bindings of _POLICY_QUERY as a :class:`Decision`, failing closed on anything unexpected."""
    if bindings is None:
        return Decision(False, "none", ["policy evaluation failed (a rego runtime error, e.g. conflicting values "
                                        "for one rule)"])
    result = bindings.get("x")
    if not isinstance(result, dict):
        return Decision(False, "none", ["policy produced no result (is it 'package policy' with an allow rule?)"])
    if bindings.get("allow") != result.get("allow"):
        return Decision(False, "none", ["policy output is inconsistent"])
    reasons = _reasons(result.get("reasons"))
    allow = result.get("allow") is True
    tier = result.get("tier")
    if tier is None:
        tier = "warning" if allow else "none"
    elif tier not in TIERS:
        return Decision(False, "none", [*reasons, f"policy tier {str(tier)[:40]!r} is not an EAR trust tier"])
    if allow and tier not in ("affirming", "warning"):
        return Decision(False, "none", [*reasons, f"policy allowed with tier {tier}: refused"])
    if not allow and tier in ("affirming", "warning"):
        tier = "none"
    if tee in UNPROTECTED_TEES and tier == "affirming":
        tier = "warning"
        reasons.append(f"{'simulated' if tee == 'sim' else 'sample'} platform: capped at warning")
    return Decision(allow, tier, reasons)


# --------------------------------------------------------------------------------------------------
# Engine


@dataclass
class _Compiled:
    bundle: Any
    interpreter: Any


def _interpreter(*, checks: bool = True) -> Any:
    """A rego-cpp interpreter. ``checks=False`` turns off its well-formedness checks (rego-cpp re-checks the
    AST's shape after every internal pass, a self-test of the compiler): the interpreters that only evaluate
    an already-built bundle over the JSON text we wrote ourselves skip them, which makes reading the input
    about a third cheaper; the interpreter that compiles an owner's policy keeps them."""
    interp = regopy.Interpreter()
    interp.log_level = regopy.LogLevel.NONE  # rego-cpp otherwise prints errors on stdout
    interp.well_formed_checks_enabled = checks
    return interp


class PolicyEngine:
    """Evaluates Rego policies. Compiled (policy, data) pairs are kept in a small LRU cache; evaluation is
    serialised by a lock (a rego-cpp interpreter is not safe to share between threads)."""

    def __init__(self, cache_entries: int = CACHE_ENTRIES) -> None:
        self._lock = threading.Lock()
        self._cache: OrderedDict[bytes, _Compiled] = OrderedDict()
        self._cache_entries = max(1, cache_entries)

    # -- compiling

    def _compile(self, policy_text: str, data_json: str, query: str) -> _Compiled:
        """The bundle for (policy, data, query); caller holds the lock."""
        key = hashlib.sha256(b"\0".join((policy_text.encode(), data_json.encode(), query.encode()))).digest()
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        interp = _interpreter()
        try:
            interp.add_module(_MODULE, policy_text)
        except Exception as e:
            raise VerdictdError(f"policy: {_rego_error(policy_text, e)}") from None
        try:
            interp.add_data_json(data_json)
        except Exception as e:
            raise VerdictdError(f"policy data: refused by rego ({str(e).splitlines()[0][:200]})") from None
        try:
            bundle = interp.build(query, [])
        except Exception as e:
            raise VerdictdError(f"policy: {_rego_error(policy_text, e)}") from None
        if not bundle.ok():
            raise VerdictdError("policy: rego could not compile it")
        compiled = _Compiled(bundle, _interpreter(checks=False))
        self._cache[key] = compiled
        while len(self._cache) > self._cache_entries:
            self._cache.popitem(last=False)
        return compiled

    def _evaluate(self, policy_text: str, data_json: str, input_json: str, query: str) -> dict[str, Any] | None:
        """The bindings of ``query`` for the input ``input_json`` ({} when undefined), or None when evaluation
        failed (a rego runtime error, or output that is not strict JSON).

        The input goes in as JSON text parsed by rego (regopy's typed Input path stores strings unescaped and
        rego-cpp then prints them raw: a claim holding ``"`` could forge the output). The output is parsed
        again here refusing duplicate keys, so a string that still escaped its quotes cannot smuggle in a
        second ``allow``."""
        with self._lock:
            compiled = self._compile(policy_text, data_json, query)
            try:
                compiled.interpreter.set_input_term(input_json)
                out = compiled.interpreter.query_bundle(compiled.bundle)
                if not out.ok():
                    return None
                raw = str(out)
            except Exception:
                return None
        if raw == "undefined":
            return {}
        try:
            parsed = strictjson.loads(raw)
        except ValueError:
            return None
        if isinstance(parsed, list):  # one result per solution; the policy queries have one
            if len(parsed) != 1:
                return None
            parsed = parsed[0]
        bindings = parsed.get("bindings", {}) if isinstance(parsed, dict) else None
        return bindings if isinstance(bindings, dict) else None

    def check(self, policy_text: str) -> None:
        """Refuse (VerdictdError naming the line) a policy that does not parse or compile or is not
        ``package policy``; used before storing an owner's policy."""
        _check_policy_text(policy_text)
        if not _PACKAGE_RE.search(policy_text):
            raise VerdictdError("policy: not 'package policy' (verdictd reads data.policy)")
        with self._lock:
            self._compile(policy_text, "{}", _POLICY_QUERY)

    # -- attestation

    def appraise(self, policy_text: str, tee: str, claims: dict[str, Any], tcb_status: str | None,
                 reference: dict[str, Any]) -> Decision:
        """Appraise verified evidence of ``tee`` (its flat ``claims`` and ``tcb_status``) with ``policy_text``
        against ``reference`` (name -> accepted values). The caller must have verified the evidence (see
        :meth:`appraise_result`). A policy that fails at run time denies; a malformed policy, claims or
        reference raise VerdictdError."""
        _check_policy_text(policy_text)
        if not isinstance(tee, str) or not 0 < len(tee) <= 32:
            raise VerdictdError(f"appraise: tee {tee!r} is not a short string")
        if tcb_status is not None and not isinstance(tcb_status, str):
            raise VerdictdError(f"appraise: tcb_status is a {type(tcb_status).__name__}, not a string")
        if not isinstance(claims, dict):
            raise VerdictdError(f"appraise: claims are a {type(claims).__name__}, not an object")
        if not isinstance(reference, dict):
            raise VerdictdError(f"appraise: reference values are a {type(reference).__name__}, not an object")
        doc = dict(claims)
        doc["tee"] = tee
        doc["tcb_status"] = tcb_status
        input_json = _check_json(doc, "appraise: claims", MAX_INPUT, MAX_INPUT_VALUES)
        data_json = _check_json({"reference": reference}, "appraise: reference values", MAX_REFERENCE,
                                MAX_REFERENCE_VALUES)
        return _decision(tee, self._evaluate(policy_text, data_json, input_json, _POLICY_QUERY))

    def appraise_result(self, policy_text: str, result: Result, reference: dict[str, Any]) -> Decision:
        """Appraise a verifier's :class:`Result`: unverified evidence is refused (contraindicated) and invalid
        collateral (expired, revoked...) too (tier none) before the policy is consulted."""
        if not result.verified:
            why = result.errors[0] if result.errors else "not verified"
            return Decision(False, "contraindicated", [f"evidence not verified: {why}"[:MAX_REASON]])
        if result.collateral_valid is False:
            why = result.errors[0] if result.errors else "not valid"
            return Decision(False, "none", [f"collateral not valid: {why}"[:MAX_REASON]])
        return self.appraise(policy_text, result.tee, result.claims, result.tcb_status, reference)

    # -- resources

    def allow_resource(self, policy_text: str, input: dict[str, Any], resource_path: str = "",
                       plugin: str = "resource", query: dict[str, str] | None = None) -> bool:
        """Trustee's KBS decision: ``data.policy.allow`` is exactly true for the EAR claims ``input`` and the
        request (``data = {"plugin", "resource-path": "<repo>/<type>/<tag>", "query"}``). Anything else (false,
        undefined, a runtime error) is False."""
        _check_policy_text(policy_text)
        if not isinstance(input, dict):
            raise VerdictdError(f"resource policy: input is a {type(input).__name__}, not an object")
        if not isinstance(resource_path, str) or len(resource_path) > 1024:
            raise VerdictdError("resource policy: resource path must be a string of at most 1024 characters")
        input_json = _check_json(input, "resource policy: input", MAX_INPUT, MAX_INPUT_VALUES)
        data = {"plugin": plugin, "resource-path": resource_path, "query": dict(query or {})}
        data_json = _check_json(data, "resource policy: request data", MAX_INPUT, MAX_INPUT_VALUES)
        bindings = self._evaluate(policy_text, data_json, input_json, "allow = data.policy.allow")
        return bindings is not None and bindings.get("allow") is True

    # -- TestOpa

    def test(self, policy_text: str, reference_json: str | bytes, input_json: str | bytes) -> dict[str, Any]:
        """Upstream verdictd's TestOpa: evaluate ``policy_text`` with the reference JSON as data and the
        input JSON as input. The reference object is visible both as ``data.reference`` (verdictd's policies)
        and at the top of ``data`` (upstream's, e.g. ``data.mrEnclave``; a key named ``reference`` or
        ``policy`` is only under ``data.reference``). Returns ``{"allow", "tier", "reasons", "parseInfo"}``
        (``parseInfo``: each input key -> [input value, reference value or null], as upstream). Bad Rego or
        JSON raise VerdictdError naming the line or position."""
        _check_policy_text(policy_text)
        # half the usual bounds: the reference is loaded twice (at the top of data and under data.reference)
        reference = _parse_json(reference_json, "TestOpa reference", MAX_REFERENCE // 2, MAX_REFERENCE_VALUES // 2)
        doc = _parse_json(input_json, "TestOpa input", MAX_INPUT, MAX_INPUT_VALUES)
        if not isinstance(reference, dict):
            raise VerdictdError("TestOpa reference: not a JSON object")
        if not isinstance(doc, dict):
            raise VerdictdError("TestOpa input: not a JSON object")
        data = {k: v for k, v in reference.items() if k not in ("reference", "policy")}
        data["reference"] = reference
        data_json = _check_json(data, "TestOpa reference", MAX_REFERENCE, MAX_REFERENCE_VALUES)
        input_text = _check_json(doc, "TestOpa input", MAX_INPUT, MAX_INPUT_VALUES)
        tee = doc.get("tee")
        tee = tee if isinstance(tee, str) else ""
        out = _decision(tee, self._evaluate(policy_text, data_json, input_text, _POLICY_QUERY)).to_json()
        out["parseInfo"] = {k: [v, reference.get(k)] for k, v in doc.items()}
        return out
