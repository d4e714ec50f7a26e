"""Signal names and numbers as runc accepts them ("9", "KILL", "SIGKILL", "SIGRTMIN+3").

Its own small module so that `rune kill` does not load the config validator (or `os`).
"""

from __future__ import annotations

from inclavare.errors import ConfigError
from inclavare.formats import fastjson as json


def parse_signal(s: str) -> int:
    """Signal number for "9", "KILL", "SIGKILL", "kill", "SIGRTMIN+3", "RTMAX-1"."""
    import _signal as signal  # the C module: `signal` builds IntEnums, ~10 ms on every `rune kill`

    sigmin, sigmax = int(signal.SIGRTMIN), int(signal.SIGRTMAX)
    if s.isdigit() and s.isascii():
        number = int(s)
        if number <= sigmax:
            return number
        raise ConfigError("signal", f"unknown signal {json.quote(s)} (valid numbers are 0 to {sigmax})")
    name = s.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name.startswith(("SIGRTMIN", "SIGRTMAX")):
        base = sigmin if name[5:8] == "MIN" else sigmax
        rest = name[8:]
        if not rest:
            return base
        digits = rest[1:]
        if rest[0] in "+-" and digits.isdigit() and digits.isascii():
            number = base + int(digits) if rest[0] == "+" else base - int(digits)
            if sigmin <= number <= sigmax:
                return number
    else:
        found = getattr(signal, name, None) if not name.startswith("SIG_") else None
        if isinstance(found, int):
            return found
    raise ConfigError("signal", f"unknown signal {json.quote(s)}")
