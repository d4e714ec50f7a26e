"""ocicrypt's ``provider`` key wrapper, client side (keywrap/keyprovider): a named key provider wraps a layer's
private options when an image is encrypted and unwraps them when it is decrypted; ocicrypt reaches it over gRPC
(``keyprovider.KeyProviderService/WrapKey``, ``/UnWrapKey``) or by running a command (the JSON on stdin, the
answer on stdout).

The providers are named in the JSON file ``$OCICRYPT_KEYPROVIDER_CONFIG`` names, as ocicrypt reads it::

    {"key-providers": {"verdictd": {"grpc": "unix:///run/verdictd/keyprovider.sock"}}}
    {"key-providers": {"verdictd": {"cmd": {"path": "/usr/local/bin/verdictd", "args": ["keyprovider"]}}}}

The request is KeyProviderKeyWrapProtocolInput exactly as ocicrypt marshals it (inclavare.formats.ocicrypt),
with the provider's parameters under its name, as ``--encryption-key provider:NAME:VALUE`` puts them (a bare
``provider:NAME`` gives the value ``Enabled``). The wrapped result goes, base64, into the layer's
``org.opencontainers.image.enc.keys.provider.NAME`` annotation. verdictd's server side is
inclavare.services.verdictd.keyprovider (its value when wrapping is a key id; when unwrapping, an EAR token).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field

from inclavare.formats.ocicrypt import (
    OcicryptError,
    keyprovider_output,
    keyprovider_unwrap_input,
    keyprovider_wrap_input,
    provider_annotation,
)

CONFIG_ENV = "OCICRYPT_KEYPROVIDER_CONFIG"
DEFAULT_TIMEOUT = 30.0
MAX_CONFIG = 1 << 20
MAX_OUTPUT = 4 << 20
MAX_MESSAGE = 4 << 20


@dataclass(frozen=True)
class ProviderAttrs:
    """One entry of ``key-providers``: a command (path and arguments) or a gRPC address."""

    name: str
    cmd: tuple[str, ...] = ()
    grpc: str = ""

    @property
    def annotation(self) -> str:
        return provider_annotation(self.name)


def parse_config(data: bytes, where: str = CONFIG_ENV) -> dict[str, ProviderAttrs]:
    """The ``key-providers`` of an ocicrypt key provider configuration file."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise OcicryptError(f"{where}: not JSON ({str(e).splitlines()[0][:80]})") from None
    providers = doc.get("key-providers") if isinstance(doc, dict) else None
    if not isinstance(providers, dict):
        raise OcicryptError(f'{where}: expected {{"key-providers": {{NAME: {{"grpc": ADDR}} | {{"cmd": ...}}}}}}')
    out: dict[str, ProviderAttrs] = {}
    for name, attrs in providers.items():
        here = f"{where}: key-providers.{str(name)[:40]}"
        provider_annotation(name)  # checks the name
        if not isinstance(attrs, dict):
            raise OcicryptError(f"{here}: expected an object")
        cmd, addr = attrs.get("cmd"), attrs.get("grpc")
        if cmd is not None:
            path = cmd.get("path") if isinstance(cmd, dict) else None
            args = cmd.get("args", []) if isinstance(cmd, dict) else None
            if not isinstance(path, str) or not path or not isinstance(args, list) \
                    or not all(isinstance(a, str) for a in args):
                raise OcicryptError(f'{here}.cmd: expected {{"path": STRING, "args": [STRING...]}}')
            out[name] = ProviderAttrs(name, cmd=(path, *args))
        elif isinstance(addr, str) and addr:
            out[name] = ProviderAttrs(name, grpc=addr)
        else:
            raise OcicryptError(f'{here}: give "grpc" (an address) or "cmd"')
    return out


def load_config(path: str | None = None) -> dict[str, ProviderAttrs]:
    """The providers of ``path`` or of ``$OCICRYPT_KEYPROVIDER_CONFIG``; none when neither is set."""
    where = path or CONFIG_ENV
    path = path or os.environ.get(CONFIG_ENV)
    if not path:
        return {}
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG + 1)
    except OSError as e:
        raise OcicryptError(f"{where} {path}: {e.strerror}") from None
    if len(data) > MAX_CONFIG:
        raise OcicryptError(f"{where} {path}: more than {MAX_CONFIG} bytes")
    return parse_config(data, f"{where} {path}")


def _one_line(text: bytes | str) -> str:
    s = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    lines = [line.strip() for line in s.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


_LOOPBACK = ("localhost", "127.0.0.1", "[::1]", "::1")


def check_grpc_address(address: str, where: str) -> str:
    """The gRPC target for ``address``: a unix socket (``unix:PATH``, ``unix://PATH`` or an absolute path) or a
    loopback ``HOST:PORT``. Other TCP addresses are refused: the channel is not encrypted (ocicrypt's config has
    no TLS either) and an unwrap request carries a bearer token."""
    if address.startswith("/"):
        return "unix:" + address
    if address.startswith(("unix:", "unix-abstract:")):
        return address
    target = address.split("///", 1)[1] if address.startswith("dns:///") else address
    host = target.rsplit(":", 1)[0] if ":" in target else target
    if host not in _LOOPBACK:
        raise OcicryptError(f"{where}: {address[:80]} is neither a unix socket nor a loopback address; the key "
                            f"provider channel has no TLS here, so it stays on this host")
    return address


@dataclass
class KeyProviderClient:
    """Calls one key provider. ``parameters`` are the provider's values (key ids when wrapping, tokens or
    whatever the provider wants when unwrapping), sent as ocicrypt sends them under the provider's name."""

    attrs: ProviderAttrs
    timeout: float = DEFAULT_TIMEOUT
    extra: dict[str, list[bytes]] = field(default_factory=dict)

    def _call(self, op: str, payload: bytes) -> bytes:
        where = f"key provider {self.attrs.name!r}"
        if self.attrs.cmd:
            return self._cmd(payload, where)
        return self._grpc("WrapKey" if op == "keywrap" else "UnWrapKey", payload, where)

    def _cmd(self, payload: bytes, where: str) -> bytes:
        try:
            done = subprocess.run(list(self.attrs.cmd), input=payload, capture_output=True, timeout=self.timeout,
                                  check=False)
        except FileNotFoundError:
            raise OcicryptError(f"{where}: command {self.attrs.cmd[0]} not found") from None
        except subprocess.TimeoutExpired:
            raise OcicryptError(f"{where}: command {self.attrs.cmd[0]} did not answer in {self.timeout:g} s") from None
        except OSError as e:
            raise OcicryptError(f"{where}: command {self.attrs.cmd[0]}: {e.strerror}") from None
        if done.returncode != 0:
            why = _one_line(done.stderr) or f"exit status {done.returncode}"
            raise OcicryptError(f"{where}: refused: {why}")
        if len(done.stdout) > MAX_OUTPUT:
            raise OcicryptError(f"{where}: answer larger than {MAX_OUTPUT} bytes")
        return done.stdout

    def _grpc(self, method: str, payload: bytes, where: str) -> bytes:
        import grpc

        from inclavare.services.verdictd.proto import keyprovider_pb2 as pb
        from inclavare.services.verdictd.proto import keyprovider_pb2_grpc as pb_grpc

        address = check_grpc_address(self.attrs.grpc, where)
        options = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)]
        try:
            with grpc.insecure_channel(address, options=options) as channel:
                stub = pb_grpc.KeyProviderServiceStub(channel)  # type: ignore[no-untyped-call]
                req = pb.keyProviderKeyWrapProtocolInput(KeyProviderKeyWrapProtocolInput=payload)
                out = getattr(stub, method)(req, timeout=self.timeout)
        except grpc.RpcError as e:
            code = e.code().name if hasattr(e, "code") else "UNKNOWN"
            details = _one_line(e.details() or "") if hasattr(e, "details") else ""
            raise OcicryptError(f"{where} ({self.attrs.grpc}): {method} {code}: {details}") from None
        return bytes(out.KeyProviderKeyWrapProtocolOutput)

    def _parameters(self, values: list[bytes]) -> dict[str, list[bytes]]:
        return {**self.extra, self.attrs.name: values or [b"Enabled"]}

    def wrap(self, optsdata: bytes, values: list[bytes]) -> bytes:
        """The provider's annotation for ``optsdata`` (the layer's private options)."""
        payload = keyprovider_wrap_input(self._parameters(values), optsdata, {})
        return keyprovider_output(self._call("keywrap", payload), "keywrap",
                                  f"key provider {self.attrs.name!r} keywrap answer")

    def unwrap(self, annotation: bytes, values: list[bytes]) -> bytes:
        """The private options inside one of the provider's annotations."""
        payload = keyprovider_unwrap_input(self._parameters(values), annotation)
        return keyprovider_output(self._call("keyunwrap", payload), "keyunwrap",
                                  f"key provider {self.attrs.name!r} keyunwrap answer")
