"""Cache keys: the documented canonical encoding, level chaining, and refusal of inputs with no canonical form."""

from __future__ import annotations

import hashlib

import pytest

from inclavare.services.bundlecache import L0, L1, L2, BundleCacheError, derive_key
from inclavare.services.bundlecache.keys import canonical_inputs

IMG = "sha256:" + "ab" * 32


def test_known_answer_matches_documented_encoding() -> None:
    # Written out by hand from the module docstring, not by the code under test.
    text = '{"domain":"inclavare-bundle-cache","inputs":{"image_digest":"' + IMG + '"},"level":"L0","version":1}'
    assert canonical_inputs(L0, {"image_digest": IMG}) == text.encode()
    assert derive_key(L0, {"image_digest": IMG}) == hashlib.sha256(text.encode()).hexdigest()


def test_order_independent_and_non_ascii_escaped() -> None:
    k0 = derive_key(L0, {"image_digest": IMG})
    a = derive_key(L1, {"l0": k0, "carrier": {"kind": "wasm", "heap": 1 << 20, "name": "é"}})
    b = derive_key(L1, {"carrier": {"name": "é", "heap": 1 << 20, "kind": "wasm"}, "l0": k0})
    assert a == b
    assert b"\\u00e9" in canonical_inputs(L1, {"l0": k0, "carrier": {"name": "é"}})


def test_levels_chain_and_differ() -> None:
    k0 = derive_key(L0, {"image_digest": IMG})
    k1 = derive_key(L1, {"l0": k0, "carrier": "wasm"})
    k1b = derive_key(L1, {"l0": k0, "carrier": "sim"})
    k2 = derive_key(L2, {"l1": k1, "signing_key": "sha256:" + "cd" * 32})
    k2b = derive_key(L2, {"l1": k1, "signing_key": "sha256:" + "ce" * 32})
    assert len({k0, k1, k1b, k2, k2b}) == 5
    # The same inputs at two levels never share a key.
    both = {"image_digest": IMG, "l0": k0, "l1": k1, "carrier": "x", "signing_key": "y"}
    assert len({derive_key(lv, both) for lv in (L0, L1, L2)}) == 3


@pytest.mark.parametrize(("level", "inputs", "msg"), [
    ("L3", {"image_digest": IMG}, "cache level 'L3'"),
    (L0, {}, "'image_digest' is missing"),
    (L0, {"image_digest": "sha256:abc"}, "'image_digest' must match"),
    (L1, {"carrier": "wasm"}, "'l0' is missing"),
    (L1, {"l0": "XYZ", "carrier": "wasm"}, "'l0' must match"),
    (L2, {"l1": "0" * 64}, "'signing_key' is missing"),
    (L0, {"image_digest": IMG, "ratio": 0.5}, "float has no canonical encoding"),
    (L0, {"image_digest": IMG, "raw": b"x"}, "bytes has no canonical encoding"),
    (L0, {"image_digest": IMG, "m": {1: "x"}}, "key 1 is not a string"),
    (L0, {"image_digest": IMG, "big": "x" * (65 << 10)}, "more than"),
])
def test_bad_inputs_refused(level: str, inputs: dict[str, object], msg: str) -> None:
    with pytest.raises(BundleCacheError, match=msg):
        derive_key(level, inputs)
