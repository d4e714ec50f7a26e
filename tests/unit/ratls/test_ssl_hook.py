"""ratls/ssl_hook.py: the ctypes access to the ssl module's OpenSSL objects is used only when its gate and its
self-check pass; a wrong layout guess makes it step aside (pyOpenSSL then carries connections)."""

from __future__ import annotations

import ssl

import pytest

from inclavare.ratls import ssl_hook

needs_hook = pytest.mark.skipif(not ssl_hook.available(), reason="not CPython 3.11 with OpenSSL 3: the hook is off")


@needs_hook
def test_the_self_check_passes_on_this_python() -> None:
    lib, ok = ssl_hook._decide()
    assert ok and lib is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    assert ssl_hook.session_cache_off(ctx)


@needs_hook
@pytest.mark.parametrize("shift", [1, -1, 3])
def test_a_wrong_layout_guess_turns_the_hook_off(monkeypatch: pytest.MonkeyPatch, shift: int) -> None:
    real = ssl_hook._pointer_at
    monkeypatch.setattr(ssl_hook, "_pointer_at", lambda obj, index: real(obj, max(0, index + shift)))
    lib, ok = ssl_hook._decide()
    assert (lib, ok) == (None, False)


def test_the_gate_admits_only_the_checked_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ssl_hook.sys, "version_info", (3, 12, 0, "final", 0))
    assert "CPython 3.11" in (ssl_hook._gate() or "")
    assert ssl_hook._decide() == (None, False)


def test_nothing_is_done_when_the_hook_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ssl_hook, "AVAILABLE", False)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    assert not ssl_hook.available() and not ssl_hook.session_cache_off(ctx)
    assert ssl_hook.install_verify_callback(object(), ctx, None, require_peer=True) is None
