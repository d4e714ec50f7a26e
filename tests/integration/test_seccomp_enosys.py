"""Containers whose seccomp profile predates a syscall: it returns ENOSYS, as under runc 1.1.

A static C probe in the container calls syscall(N) for each N given and prints ``N:errno``.  The profile
allows every native syscall numbered up to rseq's except mkdirat; so mkdirat is older and unlisted
(the default action), clone3 and 1000 are newer than everything listed (ENOSYS -- when the profile
names its architectures, as runc requires).  Each case runs under rune and, when installed, runc on
the same bundle, and both must print the same.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from typing import Any

import pytest

from inclavare.errors import SeccompError
from inclavare.linux import seccomp
from tests.conftest import Rune, needs_busybox, needs_root

UNASSIGNED = 1000  # no syscall has this number on the architectures rune runs on

PROBE_C = r"""
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        long nr = strtol(argv[i], NULL, 0);
        errno = 0;
        long rc = syscall(nr, -1L, -1L, -1L, -1L, -1L, -1L);
        printf("%s%ld:%d", i > 1 ? " " : "", nr, rc < 0 ? errno : 0);
    }
    printf("\n");
    return 0;
}
"""


def _libseccomp() -> bool:
    try:
        seccomp.preload()
    except SeccompError:
        return False
    return True


pytestmark = [
    pytest.mark.root,
    needs_root,
    needs_busybox,
    pytest.mark.skipif(not _libseccomp(), reason="libseccomp.so.2 is not installed"),
]


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed (needed to build the static syscall probe)")
    d = tmp_path_factory.mktemp("probe")
    (d / "probe.c").write_text(PROBE_C)
    p = subprocess.run([gcc, "-static", "-O2", "-o", str(d / "probe"), str(d / "probe.c")],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot build a static probe (libc6-dev missing?): {p.stderr.strip()[:200]}")
    return str(d / "probe")


def _native_oci_arch() -> str:
    lib = seccomp._lib()
    for oci, name in seccomp.ARCHITECTURES.items():
        if lib.seccomp_arch_resolve_name(name.encode()) == seccomp.native_arch():
            return oci
    pytest.skip("the native architecture has no OCI name")


def _numbers() -> tuple[int, int, int]:
    newest, older, clone3 = (seccomp.syscall_number(n) for n in ("rseq", "mkdirat", "clone3"))
    if newest is None or older is None or clone3 is None or not older < newest < clone3 < UNASSIGNED:
        pytest.skip("needs rseq, mkdirat and clone3 numbered in that order")
    return newest, older, clone3


def _profile(default: str, with_arch: bool) -> dict[str, Any]:
    newest, older, _ = _numbers()
    names = [n for n in (seccomp.syscall_name(nr) for nr in range(newest + 1)) if n and n != "mkdirat"]
    profile: dict[str, Any] = {"defaultAction": default, "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}]}
    if with_arch:
        profile["architectures"] = [_native_oci_arch()]
    return profile


def _run_probe(runtime: Rune, make_bundle: Any, probe: str, cid: str, numbers: list[int],
               profile: dict[str, Any], nnp: bool = True) -> Any:
    def edit(cfg: dict[str, Any]) -> None:
        cfg["linux"]["seccomp"] = profile
        cfg["process"]["noNewPrivileges"] = nnp

    bundle = make_bundle(["/probe", *map(str, numbers)], edit=edit)
    shutil.copy(probe, os.path.join(bundle, "rootfs", "probe"))
    return runtime.run("run", "--bundle", bundle, cid)


@pytest.mark.parametrize("nnp", [True, False])
def test_newer_syscall_gets_enosys_older_unlisted_gets_the_default_errno(runtime, make_bundle, probe, cid, nnp):  # type: ignore[no-untyped-def]
    _, older, clone3 = _numbers()
    p = _run_probe(runtime, make_bundle, probe, cid, [older, clone3, UNASSIGNED],
                   _profile("SCMP_ACT_ERRNO", with_arch=True), nnp)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [f"{older}:{errno.EPERM}", f"{clone3}:{errno.ENOSYS}", f"{UNASSIGNED}:{errno.ENOSYS}"]


def test_without_architectures_there_is_no_stub(runtime, make_bundle, probe, cid):  # type: ignore[no-untyped-def]
    # runc derives the largest numbers from the listed architectures only
    _, older, clone3 = _numbers()
    p = _run_probe(runtime, make_bundle, probe, cid, [older, clone3, UNASSIGNED],
                   _profile("SCMP_ACT_ERRNO", with_arch=False))
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [f"{older}:{errno.EPERM}", f"{clone3}:{errno.EPERM}", f"{UNASSIGNED}:{errno.EPERM}"]


def test_kill_default_returns_enosys_for_newer_syscalls_instead_of_killing(runtime, make_bundle, probe, cid):  # type: ignore[no-untyped-def]
    _, _, clone3 = _numbers()
    p = _run_probe(runtime, make_bundle, probe, cid, [clone3, UNASSIGNED],
                   _profile("SCMP_ACT_KILL_PROCESS", with_arch=True))
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [f"{clone3}:{errno.ENOSYS}", f"{UNASSIGNED}:{errno.ENOSYS}"]
    # and an older unlisted call still kills (SIGSYS: exit status 128 + 31)
    p = _run_probe(runtime, make_bundle, probe, cid + "k", [_numbers()[1]], _profile("SCMP_ACT_KILL_PROCESS", True))
    assert p.returncode == 128 + 31
    assert p.stdout == ""


def test_profile_with_only_architectures_means_no_seccomp(runtime, make_bundle, probe, cid):  # type: ignore[no-untyped-def]
    # neither defaultAction nor syscalls: runc installs no filter at all, and rune must not fail
    _, older, _ = _numbers()
    p = _run_probe(runtime, make_bundle, probe, cid, [older], {"architectures": [_native_oci_arch()]})
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [f"{older}:{errno.EFAULT}"]  # reached the kernel: a bad pointer, not EPERM
