"""verdictd's EAA server: upstream Inclavare verdictd's key-broker protocol (eaa_protocol.py) over RATS-TLS.

Every client attests: the RATS-TLS configuration must be mutual, the client's evidence is verified in the TLS
verify callback (inclavare.ratls) and then appraised by an :class:`Appraiser` (the owner's policy); a client the
verifier or the appraiser refuses gets a TLS alert and a closed connection, as with upstream's rats-tls
callback, and never an answer. Only after that are requests read: one JSON request per read, each answered,
until the client closes, ``echo`` ends it, or a limit is hit.

Hardening (the lessons of the rats-tls-server, issue 19): connections are served concurrently, one thread
each, at most ``max_connections`` at once (beyond that a new connection waits ``queue_timeout`` for a slot, then
is closed, logged); each phase has a deadline that a watchdog enforces by shutting the socket down, however
slowly a client drips bytes (handshake, reading one request, writing one answer); a request is at most
``max_request`` bytes.

Deliberate differences from upstream: a server whose configuration is not mutual is refused unless
``allow_unattested`` is set, and even then unattested clients get only ``version`` and ``echo`` (upstream
hands keys to anyone when started without ``-m``); a peer judged by the ``nullverifier`` counts as unattested.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from inclavare.errors import InclavareError
from inclavare.services import netaddr
from inclavare.services.verdictd.eaa_protocol import (
    MAX_REQUEST,
    Audit,
    EaaSession,
    KeyStore,
    Reply,
    ResourceStore,
    fail,
)
from inclavare.services.verdictd.errors import VerdictdError

if TYPE_CHECKING:
    from inclavare.ratls.tls import RatsTls

__all__ = ["Appraiser", "EaaServer", "KeyStore", "Limits", "ResourceStore", "listen", "parse_address"]

log = logging.getLogger(__name__)

MAX_PLAINTEXT = 16 * 1024  # one TLS record's data: a full record means the request goes on in the next one


class Appraiser(Protocol):
    """The owner's judgement of a verified client: ``tee`` (sgx, tdx, snp, sim), the verifier's flat claims,
    the TCB status. Returns True to accept, or an object with ``allow`` (bool) and ``reasons`` (the policy
    module's Decision); anything else, or an exception, refuses the client."""

    def appraise(self, tee: str, claims: Mapping[str, Any], tcb_status: str | None) -> Any: ...


@dataclass(frozen=True)
class Limits:
    """Bounds of the server: concurrent connections (and how long a connection above that number waits for a
    slot before it is closed), seconds per phase, bytes per request, requests per connection."""

    max_connections: int = 128
    queue_timeout: float = 5.0
    handshake_timeout: float = 10.0
    read_timeout: float = 30.0
    write_timeout: float = 30.0
    max_request: int = MAX_REQUEST
    max_requests: int = 10_000

    def check(self) -> None:
        for name in ("max_connections", "max_request", "max_requests"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise VerdictdError(f"EAA limits: {name}: expected a positive integer")
        if not self.queue_timeout >= 0:
            raise VerdictdError("EAA limits: queue_timeout: expected a number of seconds (0: no waiting)")
        for name in ("handshake_timeout", "read_timeout", "write_timeout"):
            if not getattr(self, name) > 0:
                raise VerdictdError(f"EAA limits: {name}: expected a positive number of seconds")


def parse_address(text: str) -> tuple[int, Any]:
    """(address family, address) of upstream's ``-l``: ``ip:port``, ``[ipv6]:port``, or a unix socket path
    (anything with a ``/``, or ``unix:PATH``)."""
    if netaddr.is_unix(text):
        try:
            return socket.AF_UNIX, netaddr.unix_path(text)
        except ValueError as e:
            raise VerdictdError(f"listen address {text!r}: {e}") from None
    if not text.rpartition(":")[0]:
        raise VerdictdError(f"listen address {text!r}: expected IP:PORT, [IPv6]:PORT or a unix socket path")
    try:
        host, port, bracketed = netaddr.host_port(text)
    except ValueError as e:
        raise VerdictdError(f"listen address {text!r}: {e}") from None
    family = socket.AF_INET6 if bracketed else socket.AF_INET
    if not bracketed and ":" in host:
        raise VerdictdError(f"listen address {text!r}: write an IPv6 address in brackets, [ADDR]:PORT")
    try:
        socket.inet_pton(family, host)
    except OSError:
        raise VerdictdError(f"listen address {text!r}: {host!r} is not an IP address") from None
    return family, (host, port)


def listen(address: str, backlog: int = 128) -> socket.socket:
    """A listening socket for ``address`` (see :func:`parse_address`). A unix socket is made mode 0600; a stale
    socket file is replaced, any other file is refused."""
    family, addr = parse_address(address)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_UNIX:
            try:
                if stat.S_ISSOCK(os.lstat(addr).st_mode):
                    os.unlink(addr)
            except FileNotFoundError:
                pass
            old = os.umask(0o177)
            try:
                sock.bind(addr)
            finally:
                os.umask(old)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
        sock.listen(backlog)
    except OSError as e:
        sock.close()
        raise VerdictdError(f"listen on {address}: {e.strerror or e}") from None
    return sock


class _Watchdog:
    """Deadlines for connections: a socket past its deadline is shut down, which ends any read or write blocked
    on it. Only the connection's own thread closes its socket (after :meth:`disarm`), so the descriptor is never
    touched after it was closed."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._deadlines: dict[socket.socket, float] = {}
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="eaa-watchdog", daemon=True)
        self._thread.start()

    def arm(self, sock: socket.socket, seconds: float) -> None:
        with self._cond:
            self._deadlines[sock] = time.monotonic() + seconds
            self._cond.notify()

    def disarm(self, sock: socket.socket) -> None:
        with self._cond:
            self._deadlines.pop(sock, None)

    def expire_all(self) -> None:
        with self._cond:
            for sock in self._deadlines:
                self._deadlines[sock] = 0.0
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                for sock, deadline in list(self._deadlines.items()):
                    if deadline <= now:
                        del self._deadlines[sock]
                        try:
                            sock.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                wait = min(self._deadlines.values(), default=now + 60.0) - now
                self._cond.wait(max(wait, 0.01))


class EaaServer:
    """The EAA protocol on a listening socket: ``serve(sock)`` (blocking, until :meth:`shutdown`) or
    ``start(sock)`` (a thread). ``config``: the server's RatsTlsConfig (mutual; its own ``callback``, if any,
    runs before the appraisal). ``keys`` / ``resources``: what is served; ``audit(event, detail)``: told of
    every key or resource released and every client refused."""

    def __init__(self, config: Any, keys: KeyStore, appraiser: Appraiser | None,
                 resources: ResourceStore | None = None, *, limits: Limits = Limits(),
                 allow_unattested: bool = False, audit: Audit | None = None) -> None:
        from inclavare.ratls.tls import RatsTlsConfig

        if not isinstance(config, RatsTlsConfig):
            raise VerdictdError(f"EAA: config: expected a RatsTlsConfig, got {type(config).__name__}")
        limits.check()
        if not config.mutual and not allow_unattested:
            raise VerdictdError("EAA: the RATS-TLS configuration is not mutual, so clients would not attest; "
                                "turn mutual attestation on (-m) or allow unattested clients explicitly")
        if appraiser is None and not allow_unattested:
            raise VerdictdError("EAA: no appraiser: attested clients need a policy to be judged by")
        self._user_callback = config.callback
        self._config = dataclasses.replace(config, callback=self._judge)
        self._keys = keys
        self._resources = resources
        self._appraiser = appraiser
        self._allow_unattested = allow_unattested
        self._audit = audit
        self.limits = limits
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        self._stop = threading.Event()
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._watchdog: _Watchdog | None = None
        try:
            self._config.prepare(presents=True)
        except InclavareError as e:
            raise VerdictdError(f"EAA: RATS-TLS configuration: {e}") from None

    # -- the appraisal, in the TLS verify callback

    def _judge(self, peer: Any) -> bool:
        from inclavare.attestation.api import AttestationError

        if self._user_callback is not None and not self._user_callback(peer):
            raise AttestationError("refused by the configured verification callback")
        if not peer.verified:
            if self._allow_unattested:
                return True
            raise AttestationError(f"the client's evidence was not verified (verifier {peer.verifier})")
        if self._appraiser is None:  # pragma: no cover - refused in __init__ unless unattested clients are allowed
            raise AttestationError("no appraiser is configured")
        try:
            result = self._appraiser.appraise(peer.tee or "", dict(peer.claims), peer.tcb_status)
        except Exception as e:
            self._record("eaa.refused", {"tee": peer.tee, "reason": f"appraisal failed: {e}"})
            raise AttestationError(f"the appraisal failed: {type(e).__name__}: {e}") from None
        allowed, reasons = _decision(result)
        if not allowed:
            why = "; ".join(reasons) or "the policy does not allow it"
            self._record("eaa.refused", {"tee": peer.tee, "reason": why})
            raise AttestationError(f"refused by the appraisal policy: {why}")
        return True

    # -- serving

    def start(self, sock: socket.socket) -> threading.Thread:
        """Serve ``sock`` on a background thread."""
        t = threading.Thread(target=self.serve, args=(sock,), name="eaa-accept", daemon=True)
        t.start()
        return t

    def serve(self, sock: socket.socket) -> None:
        """Accept and serve connections on the listening ``sock`` until :meth:`shutdown`."""
        self._watchdog = watchdog = _Watchdog()
        sock.settimeout(0.25)  # wake up now and then to see a shutdown
        try:
            while not self._stop.is_set():
                try:
                    conn, addr = sock.accept()
                except TimeoutError:
                    continue
                except OSError as e:
                    if self._stop.is_set():
                        break
                    log.error("EAA accept: %s", e.strerror or e)
                    time.sleep(0.05)  # e.g. out of descriptors: do not spin
                    continue
                if not self._wait_for_slot():
                    log.warning("EAA: %d connections already for %.1f s: closing the one from %s",
                                self.limits.max_connections, self.limits.queue_timeout, _peer_name(addr))
                    conn.close()
                    continue
                t = threading.Thread(target=self._connection, args=(conn, addr, watchdog),
                                     name="eaa-connection", daemon=True)
                with self._lock:
                    self._threads.add(t)
                try:
                    t.start()
                except RuntimeError as e:  # no more threads: this connection is not served, the server goes on
                    log.error("EAA: cannot serve %s: %s", _peer_name(addr), e)
                    with self._lock:
                        self._threads.discard(t)
                    conn.close()
                    self._slots.release()
        finally:
            watchdog.expire_all()
            for t in self._snapshot():
                t.join()
            watchdog.stop()

    def _wait_for_slot(self) -> bool:
        """A connection slot, waiting up to ``queue_timeout`` for one to free (a burst above the cap is served a
        little later, not refused; connections held by slow clients free theirs at their deadline)."""
        deadline = time.monotonic() + self.limits.queue_timeout
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if self._slots.acquire(timeout=max(min(left, 0.25), 0.0)):
                return True
            if left <= 0:
                return False
        return False

    def shutdown(self) -> None:
        """Stop accepting, end the open connections; ``serve`` returns once they are gone."""
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.expire_all()

    def _snapshot(self) -> list[threading.Thread]:
        with self._lock:
            return list(self._threads)

    def _connection(self, conn: socket.socket, addr: Any, watchdog: _Watchdog) -> None:
        from inclavare.ratls.tls import RatsTls

        name = _peer_name(addr)
        handle: RatsTls | None = None
        try:
            handle = RatsTls(self._config, server_side=True)
            watchdog.arm(conn, self.limits.handshake_timeout)
            conn.settimeout(self.limits.handshake_timeout)
            try:
                peer = handle.negotiate(conn)
            except InclavareError as e:
                log.warning("EAA client %s refused: %s", name, e)
                return
            attested = peer is not None and peer.verified
            who = _describe(peer, name)
            log.info("EAA client %s connected (%s)", name, who.get("tee") or "not attested")
            session = EaaSession(self._keys, self._resources, attested=attested, peer=who, audit=self._audit,
                                 max_request=self.limits.max_request)
            for _ in range(self.limits.max_requests):
                watchdog.arm(conn, self.limits.read_timeout)
                conn.settimeout(self.limits.read_timeout)
                try:
                    request = self._read_request(handle)
                except _TooLarge:
                    reply = Reply(fail(f"request too large: more than {self.limits.max_request} bytes"), close=True)
                else:
                    if request is None:
                        return
                    reply = session.handle(request)
                watchdog.arm(conn, self.limits.write_timeout)
                conn.settimeout(self.limits.write_timeout)
                handle.transmit(reply.body)
                if reply.close:
                    return
            log.warning("EAA client %s: %d requests on one connection: closing it", name, self.limits.max_requests)
        except InclavareError as e:  # the RATS-TLS errors are OSErrors too: timeouts, resets
            log.info("EAA client %s: %s", name, e)
        except OSError as e:
            log.info("EAA client %s: %s", name, e.strerror or e)
        except Exception:  # a bug must not take the server down; the connection ends
            log.exception("EAA client %s: internal error", name)
        finally:
            if handle is not None:
                handle.close()
            watchdog.disarm(conn)
            conn.close()
            with self._lock:
                self._threads.discard(threading.current_thread())
            self._slots.release()

    def _read_request(self, handle: RatsTls) -> bytes | None:
        """One request: one read, continued while reads come back as full TLS records (a request longer than a
        record); None when the connection ended before a whole request came."""
        buf = bytearray()
        while True:
            chunk = handle.receive(MAX_PLAINTEXT)
            if not chunk:  # closed (or shut down by the watchdog) before a whole request came: nothing to answer
                return None
            buf += chunk
            if len(buf) > self.limits.max_request:
                raise _TooLarge
            if len(chunk) < MAX_PLAINTEXT:
                return bytes(buf)

    def _record(self, event: str, detail: dict[str, Any]) -> None:
        if self._audit is not None:
            try:
                self._audit(event, detail)
            except Exception as e:  # a refusal stands whether or not it could be recorded
                log.error("EAA audit %s: %s: %s", event, type(e).__name__, e)


class _TooLarge(Exception):
    pass


def _decision(result: Any) -> tuple[bool, list[str]]:
    """(allowed, reasons) from an appraiser's answer; fails closed on anything but True or a Decision."""
    if result is True:
        return True, []
    if result is False or result is None:
        return False, []
    allow = getattr(result, "allow", None)
    reasons = getattr(result, "reasons", None) or []
    return allow is True, [str(r) for r in reasons] if isinstance(reasons, list | tuple) else []


def _describe(peer: Any, name: str) -> dict[str, Any]:
    """What audit records name a client by."""
    out: dict[str, Any] = {"address": name}
    if peer is not None:
        out["tee"] = peer.tee
        out["verifier"] = peer.verifier
        for claim in ("mrenclave", "mrsigner", "mrtd", "measurement"):
            if claim in peer.claims:
                out[claim] = peer.claims[claim]
    return out


def _peer_name(addr: Any) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"[{addr[0]}]:{addr[1]}" if ":" in str(addr[0]) else f"{addr[0]}:{addr[1]}"
    return str(addr) or "unix socket"
