"""The client side of the EAA protocol (eaa_protocol.py) over RATS-TLS, as the EAA KBC of the attestation agent
speaks it: one request per write, the answer read until a read comes back shorter than a full TLS record. For
tests, and for the in-enclave client to come."""

from __future__ import annotations

import base64
import json
import socket
from typing import Any

from inclavare.errors import InclavareError
from inclavare.services.verdictd.eaa import MAX_PLAINTEXT, parse_address
from inclavare.services.verdictd.eaa_protocol import dumps
from inclavare.services.verdictd.errors import VerdictdError

MAX_RESPONSE = 64 * 1024 * 1024


class EaaClient:
    """One connection to an EAA server. ``config``: the client's RatsTlsConfig (mutual, with an attester);
    ``address``: ``ip:port``, ``[ipv6]:port`` or a unix socket path."""

    def __init__(self, config: Any, address: str, *, timeout: float = 30.0, max_response: int = MAX_RESPONSE) -> None:
        self._config = config
        self._address = address
        self._timeout = timeout
        self._max_response = max_response
        self._sock: socket.socket | None = None
        self._tls: Any = None

    def connect(self) -> EaaClient:
        """Connect and negotiate RATS-TLS (the server is verified; with mutual, this side attests)."""
        from inclavare.ratls.tls import RatsTls

        family, addr = parse_address(self._address)
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(self._timeout)
        try:
            sock.connect(addr)
            tls = RatsTls(self._config, server_side=False)
            tls.negotiate(sock)
        except InclavareError as e:
            sock.close()
            raise VerdictdError(f"EAA {self._address}: {e}") from None
        except OSError as e:
            sock.close()
            raise VerdictdError(f"EAA {self._address}: {e.strerror or e}") from None
        self._sock, self._tls = sock, tls
        return self

    def send_raw(self, data: bytes) -> bytes:
        """Send ``data`` as one request and return the answer's bytes (b"" when the server closed instead)."""
        if self._tls is None:
            raise VerdictdError("EAA client: not connected")
        try:
            self._tls.transmit(data)
            out = bytearray()
            while True:
                chunk = self._tls.receive(MAX_PLAINTEXT)
                out += chunk
                if len(out) > self._max_response:
                    raise VerdictdError(f"EAA {self._address}: answer larger than {self._max_response} bytes")
                if len(chunk) < MAX_PLAINTEXT:
                    return bytes(out)
        except VerdictdError:
            raise
        except (InclavareError, OSError) as e:
            raise VerdictdError(f"EAA {self._address}: {e}") from None

    def request(self, obj: dict[str, Any]) -> bytes:
        """Send one request object; the answer's bytes."""
        return self.send_raw(dumps(obj))

    def call(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Send one request object; the answer as a JSON object."""
        raw = self.request(obj)
        try:
            answer = json.loads(raw)
        except ValueError:
            raise VerdictdError(f"EAA {self._address}: the answer to {obj.get('command')!r} is not JSON") from None
        if not isinstance(answer, dict):
            raise VerdictdError(f"EAA {self._address}: the answer to {obj.get('command')!r} is not an object")
        return answer

    def version(self) -> str:
        return str(self._ok(self.call({"command": "version"}), "version")["version"])

    def get_kek(self, kids: list[str]) -> dict[str, bytes]:
        data = self._ok(self.call({"command": "Get KEK", "kids": kids}), "Get KEK")["data"]
        return {k: base64.b64decode(v) for k, v in data.items()}

    def decrypt(self, kid: str, encrypted: bytes, iv: bytes) -> bytes:
        text = base64.b64encode(encrypted).decode()
        blob = {"kid": kid, "encrypted_data": text, "algorithm": "AES", "key_length": 256,
                "iv": base64.b64encode(iv).decode()}
        data = self._ok(self.call({"command": "Decrypt", "blobs": [blob]}), "Decrypt").get("data")
        if not isinstance(data, dict) or not isinstance(data.get(text), str):
            raise VerdictdError("EAA Decrypt: the answer has no plaintext for the blob")
        return base64.b64decode(data[text])

    def get_resource(self, name: str) -> bytes:
        """A resource (``Get Resource Info``, then ``Get <name>``)."""
        self._ok(self.call({"command": "Get Resource Info", "name": name}), "Get Resource Info")
        raw = self.request({"command": f"Get {name}", "optional": {}})
        try:
            data = base64.b64decode(raw, validate=True)
        except ValueError:
            raise VerdictdError(f"EAA Get {name}: the answer is not base64") from None
        try:
            err = json.loads(data)
        except ValueError:
            return data
        if isinstance(err, dict) and err.get("status") == "Fail":
            raise VerdictdError(f"EAA Get {name}: {err.get('error')}")
        return data

    def _ok(self, answer: dict[str, Any], what: str) -> dict[str, Any]:
        if answer.get("status") != "OK":
            raise VerdictdError(f"EAA {what}: {answer.get('error') or 'failed'}")
        return answer

    def close(self) -> None:
        if self._tls is not None:
            self._tls.close()
            self._tls = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> EaaClient:
        return self.connect() if self._tls is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()
