"""The listen addresses the services take on their command lines, parsed once: ``HOST:PORT``, ``[IPV6]:PORT`` or a
unix socket path (``unix:PATH``, or anything with a ``/``), and whether a host is this machine's loopback (where
the services allow plain text). Errors are ValueErrors saying what is wrong; each service words its own message
around them."""

from __future__ import annotations

import ipaddress

UNIX_PATH_MAX = 107  # bytes of sun_path, without its terminating NUL


def is_unix(address: str) -> bool:
    return address.startswith("unix:") or "/" in address


def unix_path(address: str) -> str:
    """The socket path of a unix address; ValueError if it cannot be a socket path."""
    path = address[5:] if address.startswith("unix:") else address
    if not path or len(path.encode()) > UNIX_PATH_MAX:
        raise ValueError(f"a unix socket path of 1..{UNIX_PATH_MAX} bytes")
    return path


def host_port(address: str, default_host: str | None = None) -> tuple[str, int, bool]:
    """(host, port, bracketed) of ``HOST:PORT`` or ``[IPV6]:PORT``; with ``default_host``, also ``:PORT`` and a bare
    ``PORT`` (every address). ValueError naming what is wrong."""
    text = address.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep and default_host is not None:
        host, port_text = "", text
    if not sep and default_host is None:
        raise ValueError("expected HOST:PORT or [IPv6]:PORT")
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    if not host:
        if default_host is None:
            raise ValueError("expected HOST:PORT or [IPv6]:PORT")
        host = default_host
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{port_text!r} is not a TCP port (0..65535)")
    return host, int(port_text), bracketed


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
