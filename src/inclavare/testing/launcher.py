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
    return write_launcher(path, "inclavare.cli.rune", src=src, python=python)


def write_shim_launcher(path: str, env: dict[str, str] | None = None, src: str = SRC,
                        python: str = sys.executable) -> str:
    """A ``containerd-shim-rune-v2`` launcher at ``path`` (put its directory first on containerd's PATH);
    ``env``: variables it sets for the shim (e.g. ``RUNE_SHIM_ROOT`` for a private state root)."""
    return write_launcher(path, "inclavare.cli.shim", env=env, src=src, python=python)


def write_launcher(path: str, module: str, env: dict[str, str] | None = None, src: str = SRC,
                   python: str = sys.executable) -> str:
    """Write a launcher of ``module``'s ``entry()`` to ``path`` (mode 0755); returns ``path``."""
    site = sysconfig.get_paths()["purelib"]
    setenv = ""
    if env:
        setenv = "import os\n" + "".join(f"os.environ[{k!r}] = {v!r}\n" for k, v in sorted(env.items()))
    text = (f"#!{python} -IS\nimport sys\nsys.path[:0] = [{src!r}]\nsys.path.append({site!r})\n{setenv}"
            f"from {module} import entry\nentry()\n")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)
    return path
