"""A ``rune`` launcher for a source checkout: an executable file that runs that checkout's rune.

Engines exec their runtime by path (containerd's ``BinaryName``, ``--runc-binary``, podman ``--runtime``), so a
checkout's rune needs a file of its own. The launcher starts the interpreter the way the installed rune does
(``-I -S``: no user site, no .pth processing), puts the checkout's ``src`` first on ``sys.path`` and the
interpreter's site-packages last (enclave runtimes need them).
"""

from __future__ import annotations

import os
import sys
import sysconfig

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_rune_launcher(path: str, src: str = SRC, python: str = sys.executable) -> str:
    """Write the launcher to ``path`` (mode 0755); returns ``path``."""
    site = sysconfig.get_paths()["purelib"]
    text = (f"#!{python} -IS\nimport sys\nsys.path[:0] = [{src!r}]\nsys.path.append({site!r})\n"
            "from inclavare.cli.rune import entry\nentry()\n")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)
    return path
