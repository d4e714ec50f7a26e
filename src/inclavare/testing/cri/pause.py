"""The pod sandbox image for CRI tests: a static ``/pause`` built from ``pause.c`` with gcc, as an OCI image.

containerd's CRI plugin starts every pod with its ``sandbox_image``; the tests never pull, so they build this
one and import it (namespace ``k8s.io``) with the busybox image. The image holds only ``/pause`` (its
entrypoint), plus empty ``/dev``, ``/proc`` and ``/sys`` mount points.

CLI: python -m inclavare.testing.cri.pause [-n NAME] OUT_DIR   -> OUT_DIR/pause-oci.tar
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from inclavare.testing._tool import run_tool

PAUSE_IMAGE = "localhost/inclavare-pause:test"
SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pause.c")
CFLAGS = ("-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror")


class PauseBuildError(RuntimeError):
    """No C compiler, or it refused pause.c (gcc and libc6-dev are installed by scripts/setup.sh)."""


def compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("gcc")


def build_pause(out: str) -> str:
    """Compile pause.c into the static executable ``out``; returns ``out``."""
    cc = compiler()
    if cc is None:
        raise PauseBuildError("no C compiler to build the pause program: install gcc and libc6-dev, or set CC")
    tmp = out + ".tmp"
    p = subprocess.run([cc, *CFLAGS, "-o", tmp, SOURCE], capture_output=True, text=True)
    if p.returncode != 0:
        raise PauseBuildError(f"{cc} could not build {SOURCE} (static libc: libc6-dev): {p.stderr.strip()}")
    os.replace(tmp, out)
    return out


def build_pause_image_tar(out_tar: str, name: str = PAUSE_IMAGE) -> str:
    """Write an OCI image layout tar of the pause image called ``name``; returns its path."""
    from inclavare.testing.image import build_layout_tar

    with tempfile.TemporaryDirectory(prefix="rune-pause-") as tmp:
        rootfs = os.path.join(tmp, "rootfs")
        for d in ("dev", "proc", "sys"):
            os.makedirs(os.path.join(rootfs, d), mode=0o755)
        os.chmod(build_pause(os.path.join(rootfs, "pause")), 0o755)
        return build_layout_tar(out_tar, rootfs, name, entrypoint=("/pause",),
                                created_by="inclavare.testing.cri.pause (gcc -static pause.c)")


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m inclavare.testing.cri.pause", description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--name", default=PAUSE_IMAGE)
    ap.add_argument("out_dir")
    a = ap.parse_args(argv)

    def build() -> int:
        print(build_pause_image_tar(os.path.join(a.out_dir, "pause-oci.tar"), a.name))
        return 0

    return run_tool("pause", PauseBuildError, build)


if __name__ == "__main__":
    sys.exit(main())
