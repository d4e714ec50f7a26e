"""What Python's ``ssl`` module lacks for RATS-TLS, done on its OpenSSL objects through ctypes — and only here.

RATS-TLS must judge the peer's self-signed certificate *during* the handshake (a rejected peer gets an alert,
as with rats-tls' OpenSSL wrapper) and must not cache sessions (every connection is attested afresh). The ``ssl``
module has no verify callback and no session-cache setting; pyOpenSSL has both but moves every 16 KiB record
through Python, which costs a third to a half of the throughput (docs/ratls.md, "TLS library"). So blocking
connections use the ``ssl`` module's C record layer, and this module reaches its ``SSL_CTX*`` and ``SSL*``:

* by reading CPython's object layout: the ``_ssl._SSLContext`` object holds its ``SSL_CTX*`` as the first field
  after the object header; the ``_ssl._SSLSocket`` object holds (socket weakref, ``SSL*``, context). These
  layouts are CPython 3.11's (``Modules/_ssl.c``); the gate below admits nothing else;
* and by calling the few OpenSSL 3 functions needed from the very ``libssl`` the ``_ssl`` module is linked with.

Every pointer read is checked before use (the context's options read back through ``SSL_CTX_get_options``
equal ``ctx.options``; the connection's ``SSL*`` belongs to that ``SSL_CTX``; its context field is the context
object itself), and :data:`AVAILABLE` is decided once, at import, by a self-check on a throwaway context and
connection. Where the gate or the self-check fails, :func:`available` is False and the caller (ratls/tls/)
uses pyOpenSSL for everything: slower, never wrong.
"""

from __future__ import annotations

import ctypes
import logging
import ssl
import sys
from typing import Any, Protocol

__all__ = ["AVAILABLE", "available", "install_verify_callback", "session_cache_off"]

log = logging.getLogger(__name__)

_SSL_CTRL_SET_SESS_CACHE_MODE = 44
_SSL_CTRL_GET_SESS_CACHE_MODE = 45
_SSL_SESS_CACHE_OFF = 0
SSL_VERIFY_PEER = 0x01
SSL_VERIFY_FAIL_IF_NO_PEER_CERT = 0x02
_VERIFY_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "SSL_CTX_ctrl": (ctypes.c_long, [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]),
    "SSL_CTX_get_options": (ctypes.c_uint64, [ctypes.c_void_p]),
    "SSL_get_SSL_CTX": (ctypes.c_void_p, [ctypes.c_void_p]),
    "SSL_set_verify": (None, [ctypes.c_void_p, ctypes.c_int, _VERIFY_CALLBACK]),
    "X509_STORE_CTX_get_current_cert": (ctypes.c_void_p, [ctypes.c_void_p]),
    "X509_STORE_CTX_get_error_depth": (ctypes.c_int, [ctypes.c_void_p]),
    "i2d_X509": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p)]),
}


class Judge(Protocol):
    """The side of a connection that decides on the peer's certificate (ratls/tls/core.py: ``_Core``)."""

    reject_reason: str | None

    def judge_der(self, der: bytes) -> bool: ...


def _gate() -> str | None:
    """Why the layout trick must not be used here, or None."""
    if sys.implementation.name != "cpython" or sys.version_info[:2] != (3, 11):
        return f"{sys.implementation.name} {sys.version_info[0]}.{sys.version_info[1]} (the layout is CPython 3.11's)"
    if ssl.OPENSSL_VERSION_INFO[0] != 3:
        return f"{ssl.OPENSSL_VERSION} (OpenSSL 3 is required)"
    return None


def _open() -> Any:
    import _ssl

    lib = ctypes.CDLL(getattr(_ssl, "__file__", None))  # its own libssl/libcrypto come first in its scope
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


def _pointer_at(obj: object, index: int) -> int:
    """The index-th pointer-sized field after the object header of a C-level object (CPython)."""
    size = ctypes.sizeof(ctypes.c_void_p)
    return int(ctypes.c_void_p.from_address(id(obj) + object.__basicsize__ + index * size).value or 0)


def _ctx_pointer(lib: Any, ctx: ssl.SSLContext) -> int | None:
    """The SSL_CTX of an ``ssl`` context, checked against the context's options; None when it cannot be had."""
    ptr = _pointer_at(ctx, 0)
    if not ptr or lib.SSL_CTX_get_options(ptr) != int(ctx.options):
        return None
    return ptr


def _ssl_pointer(lib: Any, obj: Any, ctx: ssl.SSLContext) -> int | None:
    """The SSL of the ``ssl`` module's connection object, checked: its context field is ``ctx`` and the SSL
    belongs to ``ctx``'s SSL_CTX; None when it cannot be had."""
    ctx_ptr = _ctx_pointer(lib, ctx)
    if ctx_ptr is None or _pointer_at(obj, 2) != id(ctx):
        return None
    ptr = _pointer_at(obj, 1)
    if not ptr or lib.SSL_get_SSL_CTX(ptr) != ctx_ptr:
        return None
    return ptr


def _cache_off(lib: Any, ctx: ssl.SSLContext) -> bool:
    ptr = _ctx_pointer(lib, ctx)
    if ptr is None:
        return False
    lib.SSL_CTX_ctrl(ptr, _SSL_CTRL_SET_SESS_CACHE_MODE, _SSL_SESS_CACHE_OFF, None)
    return bool(lib.SSL_CTX_ctrl(ptr, _SSL_CTRL_GET_SESS_CACHE_MODE, 0, None) == _SSL_SESS_CACHE_OFF)


def _self_check(lib: Any) -> str | None:
    """Exercise every pointer read on a throwaway context and connection; why it failed, or None."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ptr = _ctx_pointer(lib, ctx)
    if ptr is None:
        return "the SSL_CTX pointer does not read back the context's options"
    ctx.options |= ssl.OP_NO_TICKET  # a live pointer follows the change
    if _ctx_pointer(lib, ctx) != ptr:
        return "the SSL_CTX pointer does not follow a change of options"
    if not _cache_off(lib, ctx):
        return "the session cache mode cannot be set"
    import socket

    a, b = socket.socketpair()
    try:
        obj = ctx._wrap_socket(a, False, None)  # type: ignore[attr-defined]
        if _ssl_pointer(lib, obj, ctx) is None:
            return "the SSL pointer of a connection does not belong to its context"
    finally:
        a.close()
        b.close()
    return None


def _decide() -> tuple[Any, bool]:
    why = _gate()
    lib = None
    if why is None:
        try:
            lib = _open()
            why = _self_check(lib)
        except (OSError, AttributeError, ValueError, TypeError) as e:
            why = f"{type(e).__name__}: {e}"
    if why is not None:
        log.debug("rats-tls: the ssl module's OpenSSL objects are not used (%s); connections use pyOpenSSL", why)
        return None, False
    return lib, True


_LIB, AVAILABLE = _decide()


def available() -> bool:
    """Whether blocking connections may use the ``ssl`` module (decided at import, see the module docstring)."""
    return AVAILABLE


def session_cache_off(ctx: ssl.SSLContext) -> bool:
    """Turn the session cache of an ``ssl`` context off; False if it cannot be done (then use pyOpenSSL)."""
    return AVAILABLE and _cache_off(_LIB, ctx)


def install_verify_callback(obj: Any, ctx: ssl.SSLContext, judge: Judge | None, *, require_peer: bool) -> Any:
    """Before the handshake of the ``ssl`` connection object ``obj`` (made by ``ctx._wrap_socket``): with a
    ``judge``, an OpenSSL verify callback that hands the peer's own certificate (DER) to ``judge.judge_der``
    and fails the handshake when it says no (``require_peer``: a peer without a certificate fails too).
    Returns a handle the caller must keep alive as long as the connection, or None when the connection's SSL
    object cannot be reached (then nothing was done)."""
    if not AVAILABLE:
        return None
    ssl_ptr = _ssl_pointer(_LIB, obj, ctx)
    if ssl_ptr is None:
        return None
    if judge is None:
        return ()
    lib = _LIB

    def verify(ok: int, store: int | None) -> int:
        try:
            if lib.X509_STORE_CTX_get_error_depth(store) > 0:
                return 1  # the decision is made on the peer's own certificate
            x509 = lib.X509_STORE_CTX_get_current_cert(store)
            size = lib.i2d_X509(x509, None) if x509 else 0
            if size <= 0:
                judge.reject_reason = "the peer's certificate could not be read"
                return 0
            buf = ctypes.create_string_buffer(size)
            cursor = ctypes.c_char_p(ctypes.addressof(buf))
            if lib.i2d_X509(x509, ctypes.byref(cursor)) != size:
                judge.reject_reason = "the peer's certificate could not be read"
                return 0
            return 1 if judge.judge_der(buf.raw) else 0
        except BaseException as e:  # fail closed
            judge.reject_reason = f"internal error while verifying: {type(e).__name__}: {e}"
            return 0

    callback = _VERIFY_CALLBACK(verify)
    mode = SSL_VERIFY_PEER | (SSL_VERIFY_FAIL_IF_NO_PEER_CERT if require_peer else 0)
    lib.SSL_set_verify(ssl_ptr, mode, callback)
    return callback
