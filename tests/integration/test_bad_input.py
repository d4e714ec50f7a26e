"""Bad input to rune: one clear error line, exit status 1, and nothing left behind.

After each failed `rune create` there must be no state dir under the rune root, no cgroup dir for the
id in any hierarchy, no new mount in our mount namespace, and no process left with the bundle's rootfs
as its root or the id in its command line.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import needs_busybox, needs_root

pytestmark = [pytest.mark.root, needs_root, needs_busybox]

CG = Path("/sys/fs/cgroup")


def mounts_mentioning(*needles: str) -> set[str]:
    out = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if any(n in line for n in needles):
            out.add(line)
    return out


def cgroup_dirs_for(cid: str) -> list[Path]:
    found = [p for p in CG.glob(f"*/{cid}")]
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if path != "/":
            hier = ctrls.split(",")[0] if ctrls else "unified"
            found += list(CG.glob(f"{hier}{path}/{cid}"))
    return found


def processes_of(cid: str, bundle: str) -> list[int]:
    rootfs = os.path.join(bundle, "rootfs")
    pids = []
    me = os.getpid()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == me:
            continue
        try:
            cmdline = (d / "cmdline").read_bytes().split(b"\0")
            root = os.readlink(d / "root")
        except OSError:
            continue
        if cid.encode() in cmdline or root == rootfs or root.startswith(rootfs + "/"):
            pids.append(int(d.name))
    return pids


def check_clean_failure(rune, cid, bundle, p, *needles, before=None):  # type: ignore[no-untyped-def]
    """rc 1, exactly one "rune: " line naming every needle, and no leftovers."""
    assert p.returncode == 1, f"rc={p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("rune: "), lines[0]
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    assert not Path(rune.root, cid).exists()
    assert rune.run("state", cid).returncode == 1
    assert cgroup_dirs_for(cid) == []
    if before is not None:
        assert mounts_mentioning(bundle, rune.root) == before
    assert processes_of(cid, bundle) == []
    return lines[0]


def edit_config(bundle: str, fn) -> None:  # type: ignore[no-untyped-def]
    path = Path(bundle, "config.json")
    cfg = json.loads(path.read_text())
    fn(cfg)
    path.write_text(json.dumps(cfg))


def create_with(rune, cid, make_bundle, fn=None, args=("sleep", "60"), prepare=None):  # type: ignore[no-untyped-def]
    b = make_bundle(list(args))
    if fn is not None:
        edit_config(b, fn)
    if prepare is not None:
        prepare(b)
    before = mounts_mentioning(b, rune.root)
    p = rune.run("create", "--bundle", b, cid)
    return b, p, before


# ------------------------------------------------------------------------------ the bundle itself

def test_missing_config_json(rune, cid, make_bundle):
    b, p, before = create_with(rune, cid, make_bundle, prepare=lambda b: os.unlink(os.path.join(b, "config.json")))
    check_clean_failure(rune, cid, b, p, "config.json", before=before)


def test_unparsable_config_json(rune, cid, make_bundle):
    b, p, before = create_with(rune, cid, make_bundle,
                               prepare=lambda b: Path(b, "config.json").write_text('{"ociVersion": "1.0.2", nope'))
    check_clean_failure(rune, cid, b, p, "config.json", before=before)


def test_unsupported_oci_version(rune, cid, make_bundle):
    b, p, before = create_with(rune, cid, make_bundle, lambda c: c.update(ociVersion="2.0.0"))
    check_clean_failure(rune, cid, b, p, "ociVersion", "2.0.0", before=before)


def test_missing_rootfs(rune, cid, make_bundle):
    b, p, before = create_with(rune, cid, make_bundle, prepare=lambda b: shutil.rmtree(os.path.join(b, "rootfs")))
    check_clean_failure(rune, cid, b, p, "root", before=before)


def test_a_symlinked_rootfs_is_refused_up_front(rune, cid, make_bundle, tmp_path):
    """As runc ("invalid rootfs: not an absolute path, or a symlink"): a root filesystem reached through a
    symlink would run whatever it points at; refused by name before anything is made."""
    elsewhere = tmp_path / "elsewhere"

    def link(b: str) -> None:
        os.rename(os.path.join(b, "rootfs"), elsewhere)
        os.symlink(elsewhere, os.path.join(b, "rootfs"))

    b, p, before = create_with(rune, cid, make_bundle, prepare=link)
    line = check_clean_failure(rune, cid, b, p, "root.path", "is a symlink", str(elsewhere), before=before)
    assert "executable" not in line


def test_a_memory_limit_too_small_to_start_is_named(rune, cid, make_bundle):
    """The OOM killer ends the setup: the error names linux.resources.memory.limit, not only signal 9."""
    from tests.integration.test_containerd import unmounted_v1_hierarchies

    if unmounted_v1_hierarchies() or not (Path("/sys/fs/cgroup/memory").is_dir()
                                          or Path("/sys/fs/cgroup/memory.max").exists()
                                          or Path("/sys/fs/cgroup/cgroup.controllers").exists()):
        pytest.skip("no memory cgroup controller here")
    b, p, before = create_with(rune, cid, make_bundle,
                               lambda c: c["linux"].setdefault("resources", {}).update(memory={"limit": 4096}))
    check_clean_failure(rune, cid, b, p, "OOM killer", "linux.resources.memory.limit (4096 bytes)", before=before)


def test_missing_bundle_dir(rune, cid, tmp_path):
    b = str(tmp_path / "no-such-bundle")
    p = rune.run("create", "--bundle", b, cid)
    check_clean_failure(rune, cid, b, p, "no-such-bundle")


# ------------------------------------------------------------------------------ config fields

def _add_mount(**m):  # type: ignore[no-untyped-def]
    return lambda c: c["mounts"].append(m)


CONFIG_CASES = {
    "relative-mount-destination": (_add_mount(destination="relative/x", type="tmpfs", source="tmpfs"),
                                   ["mounts[", "destination"]),
    "unknown-capability": (lambda c: c["process"]["capabilities"]["bounding"].append("CAP_NOPE"), ["CAP_NOPE"]),
    "unknown-rlimit": (lambda c: c["process"].update(rlimits=[{"type": "RLIMIT_NOPE", "soft": 1, "hard": 1}]),
                       ["RLIMIT_NOPE"]),
    "zero-size-uid-mapping": (lambda c: (c["linux"]["namespaces"].append({"type": "user"}),
                                         c["linux"].update(uidMappings=[{"containerID": 0, "hostID": 1000, "size": 0}],
                                                           gidMappings=[{"containerID": 0, "hostID": 1000,
                                                                         "size": 1}])),
                              ["uidMappings"]),
    "invalid-seccomp-action": (lambda c: c["linux"].update(seccomp={"defaultAction": "SCMP_ACT_NOPE"}),
                               ["SCMP_ACT_NOPE"]),
    "invalid-seccomp-syscall-action": (
        lambda c: c["linux"].update(seccomp={"defaultAction": "SCMP_ACT_ALLOW",
                                             "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_BOGUS"}]}),
        ["SCMP_ACT_BOGUS"]),
    "nonexistent-namespace-path": (
        lambda c: c["linux"]["namespaces"].__setitem__(
            [n["type"] for n in c["linux"]["namespaces"]].index("network"),
            {"type": "network", "path": "/nonexistent/ns/net"}),
        ["/nonexistent/ns/net"]),
    "namespace-path-of-wrong-type": (
        lambda c: c["linux"]["namespaces"].__setitem__(
            [n["type"] for n in c["linux"]["namespaces"]].index("network"),
            {"type": "network", "path": "/proc/self/ns/uts"}),
        ["network"]),
    "namespace-path-not-a-namespace": (
        lambda c: c["linux"]["namespaces"].__setitem__(
            [n["type"] for n in c["linux"]["namespaces"]].index("network"),
            {"type": "network", "path": "/etc/hostname"}),
        ["/etc/hostname"]),
    "unknown-fs-type": (_add_mount(destination="/mnt", type="nopefs", source="none"), ["nopefs"]),
    "bind-source-missing": (_add_mount(destination="/mnt", type="bind", source="/nonexistent/bind/src",
                                       options=["bind"]), ["/nonexistent/bind/src"]),
    "unknown-namespace-type": (lambda c: c["linux"]["namespaces"].append({"type": "bogus"}), ["bogus"]),
    "bad-device-type": (lambda c: c["linux"].update(devices=[{"path": "/dev/x", "type": "q", "major": 1,
                                                              "minor": 3}]), ["devices"]),
    "cwd-relative": (lambda c: c["process"].update(cwd="relative/dir"), ["cwd"]),
    "args-empty": (lambda c: c["process"].update(args=[]), ["args"]),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config_field(rune, cid, make_bundle, case):
    fn, needles = CONFIG_CASES[case]
    b, p, before = create_with(rune, cid, make_bundle, fn)
    check_clean_failure(rune, cid, b, p, *needles, before=before)


def test_executable_not_found(rune, cid, make_bundle):
    b, p, before = create_with(rune, cid, make_bundle, args=("no-such-cmd", "x"))
    line = check_clean_failure(rune, cid, b, p, "no-such-cmd", "not found", before=before)
    assert "exec" in line


def test_executable_absolute_path_not_found(rune, cid, make_bundle):
    b, p, before = create_with(rune, cid, make_bundle, args=("/bin/nope",))
    check_clean_failure(rune, cid, b, p, "/bin/nope", before=before)


def test_cwd_that_cannot_exist(rune, cid, make_bundle):
    # /etc/hostname is a file, so no directory can exist (or be created) below it
    b, p, before = create_with(rune, cid, make_bundle, lambda c: c["process"].update(cwd="/etc/hostname/sub"))
    check_clean_failure(rune, cid, b, p, "/etc/hostname/sub", before=before)


def test_cwd_that_does_not_exist(rune, cid, make_bundle):
    # runc creates a missing cwd before making the rootfs read-only; either that, or a clean error
    b, p, before = create_with(rune, cid, make_bundle, lambda c: c["process"].update(cwd="/no/such/dir"),
                               args=("sh", "-c", "pwd"))
    if p.returncode == 0:
        rune.run("start", cid, check=True)
        return
    check_clean_failure(rune, cid, b, p, "/no/such/dir", before=before)


# ------------------------------------------------------------------------------ command line

@pytest.mark.parametrize("bad_id", ["a/b", "..", "a b", "-lead", ""])
def test_malformed_container_id(rune, make_bundle, bad_id):
    b = make_bundle(["true"])
    p = rune.run("create", "--bundle", b, bad_id)
    assert p.returncode == 1
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rune: "), p.stderr
    if bad_id:
        assert bad_id in lines[0] or "id" in lines[0]
    assert not Path(rune.root).exists() or not any(Path(rune.root).iterdir())
    assert processes_of(bad_id or "\0", b) == []


@pytest.mark.parametrize("bad_id", ["a" * 1000, "a/b", "../x"])
def test_every_command_refuses_a_bad_id_in_one_line_and_delete_force_finds_nothing(rune, bad_id):
    """Ids are checked as runc checks them, plus one file name's length, before anything touches the file
    system: one line naming the id (shortened when long), exit 1, no traceback; `delete -f` of an id no
    container can have has nothing to delete and exits 0, as for any missing container."""
    Path(rune.root).mkdir(parents=True, exist_ok=True)
    for op in (["state", bad_id], ["start", bad_id], ["kill", bad_id, "KILL"], ["delete", bad_id],
               ["pause", bad_id], ["ps", bad_id], ["exec", bad_id, "true"], ["events", "--stats", bad_id]):
        p = rune.run(*op)
        lines = p.stderr.splitlines()
        assert p.returncode == (255 if op[0] == "exec" else 1), (op, p.stderr)
        assert len(lines) == 1 and "container id" in lines[0] and "Traceback" not in p.stderr, (op, p.stderr)
        assert len(lines[0]) < 200
    p = rune.run("delete", "-f", bad_id)
    assert (p.returncode, p.stderr) == (0, "")
    assert not any(Path(rune.root).iterdir())


def test_duplicate_id(rune, cid, make_bundle):
    b1 = make_bundle(["sleep", "60"])
    rune.run("create", "--bundle", b1, cid, check=True)
    first = rune.state(cid)
    first_cgroups = Path(f"/proc/{first['pid']}/cgroup").read_text()
    b2 = make_bundle(["sleep", "60"])
    before = mounts_mentioning(b2, rune.root)
    p = rune.run("create", "--bundle", b2, cid)
    assert p.returncode == 1
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rune: ") and cid in lines[0] and "exists" in lines[0]
    assert rune.state(cid) == first
    assert Path(f"/proc/{first['pid']}/cgroup").read_text() == first_cgroups
    assert sorted(os.listdir(rune.root)) == [cid]
    assert mounts_mentioning(b2, rune.root) == before
    assert processes_of("\0", b2) == []


def test_unknown_signal_for_kill(rune, cid, make_bundle):
    b = make_bundle(["sleep", "60"])
    rune.run("run", "-d", "--bundle", b, cid, check=True)
    for sig in ("SIGNOPE", "NOPE", "99", "-3"):
        p = rune.run("kill", cid, sig)
        assert p.returncode == 1, sig
        lines = p.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("rune: ") and sig in lines[0], p.stderr
    assert rune.state(cid)["status"] == "running"


def test_unknown_command_and_flag(rune):
    # as runc: an unknown command exits 3 (urfave/cli's "No help topic"), a usage error 1
    for args, rc in ((["frobnicate"], 3), (["create", "--no-such-flag", "x"], 1), (["kill"], 1)):
        p = rune.run(*args)
        assert p.returncode == rc, args
        lines = p.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("rune: "), (args, p.stderr)


def test_nonexistent_container_operations(rune, cid):
    for op in (["start", cid], ["kill", cid], ["state", cid], ["pause", cid], ["resume", cid], ["ps", cid],
               ["exec", cid, "true"], ["update", "--pids-limit", "5", cid], ["events", "--stats", cid],
               ["delete", cid]):
        p = rune.run(*op)
        # as runc: exec failures exit 255 with "exec failed: "
        prefix = "rune: exec failed: " if op[0] == "exec" else "rune: "
        assert p.returncode == (255 if op[0] == "exec" else 1), op
        lines = p.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(prefix + "container does not exist: "), (op, p.stderr)


@pytest.mark.parametrize(("argv", "words"), [
    (["shelter", "verify", "/dev/zero"], "EVIDENCE /dev/zero: not a regular file"),
    (["sgx-tools", "measure", "/dev/zero"], "/dev/zero: not a regular file"),
    (["sgx-tools", "verify-quote", "--quote", "/dev/zero"], "--quote /dev/zero: not a regular file"),
])
def test_tools_refuse_endless_inputs(argv, words):
    """A device where a file is expected would be read until memory runs out: refused at once, one line."""
    import shutil
    import subprocess

    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed (scripts/setup.sh)")
    p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and words in lines[0], p.stderr


def test_shelter_refuses_evidence_larger_than_any_quote(tmp_path):
    import shutil
    import subprocess

    if shutil.which("shelter") is None:
        pytest.skip("shelter is not installed (scripts/setup.sh)")
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (2 << 20))
    p = subprocess.run(["shelter", "verify", str(big)], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert p.stderr.strip() == f"shelter: EVIDENCE {big}: {2 << 20} bytes, more than the 1 MiB this input may have"
