"""The sample confidential container's RATS-TLS server, run by the sim enclave runtime inside the enclave.

inclavared's second hop (docs/inclavared.md) asks a confidential container who it is: it connects with mutual
RATS-TLS, says ``hello from inclavared`` and reads back ``MRENCLAVE || MRSIGNER || message``, the answer rats-tls'
sample server writes from its own REPORT inside an SGX enclave. A sim enclave container serves that answer when
its OCI process env asks for it:

  ENCLAVE_INFO_LISTEN=ADDR     ``unix:///PATH`` (a path in the container's view, e.g. in a bind mount) or
                               ``tcp://HOST:PORT`` (in the container's network namespace; with the host's network
                               it is reachable from the host)
  ENCLAVE_INFO_MUTUAL=1        require the client's evidence (inclavared always presents it); it is checked with
                               the ``sim`` verifier against the local simulated platform's root, pinned on the host
  ENCLAVE_INFO_MESSAGE=TEXT    the greeting after the measurements (default rats-tls' sample's)

Why the runtime serves it: in the sim platform the enclave boundary is the runtime's process holding the
measured image (a native payload is a separate process that cannot EREPORT). The certificate's evidence is the
runtime's own quote of the image it loaded and measured (:meth:`SimRuntime.quote`, over the hash of the TLS key
made in this process), so the MRENCLAVE inclavared verifies is the loaded image's, not a value from a command
line. The answer's 64 bytes are the same image's identity. The sim platform gives NO confidentiality: the host
holds the platform's keys (docs/inclavared.md).

After pivot_root the runtime's own files are out of reach, so :meth:`InfoServer.prepare` runs on the host: it pins
the sim root, and warms every code path (certificate, quote, handshake both ways, verification) on a throwaway
identity over a loopback connection.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from inclavare.errors import InclavareError
from inclavare.formats.enclave_info import MAX_TEXT, encode_identity_answer

if TYPE_CHECKING:
    from inclavare.ratls.server import RatsTlsServer

log = logging.getLogger(__name__)

LISTEN_ENV = "ENCLAVE_INFO_LISTEN"
MUTUAL_ENV = "ENCLAVE_INFO_MUTUAL"
MESSAGE_ENV = "ENCLAVE_INFO_MESSAGE"
HELLO = "Hello and welcome to RATS-TLS!\n"  # the greeting rats-tls' sample server appends
_UNIX_PATH_MAX = 107


class InfoServerError(InclavareError):
    """The enclave's info server cannot be configured or started; the message names the variable or address."""


@dataclass(frozen=True)
class Settings:
    """What the container asked for: ``unix`` path or ``host``/``port``, ``mutual``, ``message``."""

    listen: str
    unix: str = ""
    host: str = ""
    port: int = 0
    mutual: bool = False
    message: str = HELLO


def settings(env: dict[str, str]) -> Settings | None:
    """The container's info-server settings (None when ``ENCLAVE_INFO_LISTEN`` is unset); InfoServerError naming
    the variable for an unusable value."""
    listen = env.get(LISTEN_ENV, "")
    if not listen:
        for name in (MUTUAL_ENV, MESSAGE_ENV):
            if name in env:
                raise InfoServerError(f"{name} is set but {LISTEN_ENV} is not: name the address to serve on")
        return None
    mutual_text = env.get(MUTUAL_ENV, "0")
    if mutual_text not in ("0", "1"):
        raise InfoServerError(f"{MUTUAL_ENV}={mutual_text[:40]!r}: expected 1 (require the client's evidence) or 0")
    message = env.get(MESSAGE_ENV, HELLO)
    if len(message.encode()) > MAX_TEXT or any(ord(c) < 32 and c not in "\t\n\r" for c in message):
        raise InfoServerError(f"{MESSAGE_ENV}: at most {MAX_TEXT} bytes of text without control characters")
    where = f"{LISTEN_ENV}={listen[:120]!r}"
    if listen.startswith("unix://"):
        path = listen[len("unix://"):]
        if not path.startswith("/") or len(path.encode()) > _UNIX_PATH_MAX or "\0" in path:
            raise InfoServerError(f"{where}: expected unix:///PATH, an absolute path of at most "
                                  f"{_UNIX_PATH_MAX} bytes")
        return Settings(listen, unix=path, mutual=mutual_text == "1", message=message)
    rest = listen.removeprefix("tcp://")
    host, sep, port = rest.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or "/" in host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise InfoServerError(f"{where}: expected unix:///PATH or tcp://HOST:PORT")
    return Settings(listen, host=host, port=int(port), mutual=mutual_text == "1", message=message)


class QuoteAttester:
    """A RATS-TLS attester whose evidence is a quote made by ``quote(report_data)``: the sim enclave runtime's
    quote of the image it loaded (a DCAP quote v3 of the simulated platform)."""

    name = "sim"
    evidence_kind = "sim"
    priority = 10

    def __init__(self, quote: Callable[[bytes], bytes]) -> None:
        self._quote = quote

    def unavailable_reason(self) -> str | None:
        return None

    def collect(self, report_data: bytes) -> Any:
        from inclavare.ratls.attesters.base import Evidence

        return Evidence(self.evidence_kind, bytes(self._quote(bytes(report_data))), None,
                        {"source": "sim enclave runtime"})


def _handler(answer: bytes) -> Any:
    def handle(conn: Any, peer: Any) -> None:
        if conn.receive_message() is None:
            return
        log.info("enclave info for %s (%s)", conn.address,
                 f"verified by {peer.verifier}" if peer is not None else "not verified")
        conn.transmit(answer)

    return handle


class InfoServer:
    """The RATS-TLS server of one enclave: :meth:`prepare` on the host, :meth:`start` once the image is measured,
    :meth:`stop` when the enclave is destroyed."""

    def __init__(self, conf: Settings) -> None:
        self.settings = conf
        self._fingerprints: tuple[str, ...] = ()
        self._server: RatsTlsServer | None = None
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def _config(self, attester: Any) -> Any:
        """The server's configuration: with ENCLAVE_INFO_MUTUAL, clients must present sim evidence that chains to
        the pinned root (the ``sim`` verifier, named so that no other verifier is tried inside the enclave)."""
        from inclavare.ratls.tls.config import RatsTlsConfig

        mutual = self.settings.mutual
        return RatsTlsConfig(attester=attester, verifier="sim" if mutual else None, mutual=mutual,
                             trust_sim=mutual, sim_root_fingerprints=self._fingerprints if mutual else ())

    def _warm_client(self, attester: Any) -> Any:
        """The warm-up's client: it presents evidence only when the server verifies it, and checks nothing itself
        (only the server's code paths must be warm)."""
        from inclavare.ratls.tls.config import RatsTlsConfig

        return RatsTlsConfig(attester=attester if self.settings.mutual else "nullattester", verifier="nullverifier",
                             mutual=self.settings.mutual)

    @staticmethod
    def _limits() -> Any:
        from inclavare.ratls.server import ServerLimits

        return ServerLimits(max_connections=32, queue_timeout=5.0, handshake_timeout=30.0, read_timeout=30.0,
                            write_timeout=30.0, max_request=64 * 1024)

    def prepare(self, warm_quote: Callable[[bytes], bytes], sim_state_dir: str | None = None) -> None:
        """On the host, before pivot_root: pin the local sim platform's root (for verifying clients) and run one
        whole exchange over a loopback socket with ``warm_quote`` (a throwaway identity's quotes), so that every
        module the server and its verifier use is imported now."""
        from inclavare.ratls.server import RatsTlsServer
        from inclavare.ratls.tls.blocking import RatsTls
        from inclavare.sim.platform import SimPlatform

        try:
            self._fingerprints = (SimPlatform.open(sim_state_dir).root_ca_fingerprint(),)
        except InclavareError as e:
            raise InfoServerError(f"{LISTEN_ENV}: the simulated platform: {e}") from None
        warm = QuoteAttester(warm_quote)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind("")  # an autobound abstract name: nothing on disk
            listener.listen(1)
            server = RatsTlsServer(self._config(warm), _handler(encode_identity_answer(bytes(32), bytes(32), "warm")),
                                   self._limits(), name="enclave-info warm-up")
            thread = server.start(listener, connections=1)
            client.settimeout(30.0)
            client.connect(listener.getsockname())
            tls = RatsTls(self._warm_client(warm), server_side=False)
            try:
                tls.negotiate(client)
                tls.transmit(b"hello from inclavared")
                answer = tls.receive(1024)
            finally:
                tls.close()
            thread.join(30.0)
            if not answer.endswith(b"warm"):
                raise InfoServerError(f"{LISTEN_ENV}: the warm-up exchange answered {answer[:80]!r}")
        except OSError as e:
            raise InfoServerError(f"{LISTEN_ENV}: the warm-up exchange failed: {e}") from None
        finally:
            client.close()
            listener.close()

    def start(self, quote: Callable[[bytes], bytes], mrenclave: bytes, mrsigner: bytes) -> str:
        """Serve the measured enclave: evidence from ``quote``, the answer from its ``mrenclave``/``mrsigner``.
        Binds in the container's view (after pivot_root, as the container's user). Returns the address served."""
        from inclavare.ratls.server import RatsTlsServer

        conf = self.settings
        answer = encode_identity_answer(mrenclave, mrsigner, conf.message)
        try:
            server = RatsTlsServer(self._config(QuoteAttester(quote)), _handler(answer),
                                   self._limits(), name="enclave-info")
        except InclavareError as e:
            raise InfoServerError(f"{LISTEN_ENV}: the RATS-TLS server: {e}") from None
        sock = self._listen()
        self._server, self._sock = server, sock
        self._thread = server.start(sock)
        log.info("enclave info served on %s", conf.listen)
        return conf.listen

    def _listen(self) -> socket.socket:
        conf = self.settings
        where = f"{LISTEN_ENV}={conf.listen}"
        sock: socket.socket | None = None
        try:
            if conf.unix:
                with contextlib.suppress(FileNotFoundError):
                    if not stat.S_ISSOCK(os.lstat(conf.unix).st_mode):
                        raise InfoServerError(f"{where}: {conf.unix} exists and is not a socket")
                    os.unlink(conf.unix)  # a stale socket of an earlier container
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.bind(conf.unix)
            else:
                family = socket.AF_INET6 if ":" in conf.host else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((conf.host, conf.port))
            sock.listen(64)
            return sock
        except OSError as e:
            if sock is not None:
                sock.close()
            raise InfoServerError(f"{where}: cannot listen: {e.strerror or e}") from None

    def stop(self) -> None:
        """Stop serving (open connections end) and remove the unix socket."""
        server, sock, thread = self._server, self._sock, self._thread
        self._server = self._sock = self._thread = None
        if server is not None:
            server.shutdown()
        if thread is not None:
            thread.join(5.0)
        if sock is not None:
            sock.close()
            if self.settings.unix:
                with contextlib.suppress(OSError):
                    os.unlink(self.settings.unix)
