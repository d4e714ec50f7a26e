"""Enclave containers driven through real C PALs (compiled by the tests): call order, arguments, stdio,
exit values, signal forwarding, exec through the agent, attest, and bad input leaving nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import needs_busybox, needs_root

pytestmark = [needs_root, needs_busybox,
              pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed to build the test PALs")]


@pytest.fixture(autouse=True)
def private_sim_platform(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`rune attest` opens the simulated platform for type sim: keep it out of /var/lib."""
    monkeypatch.setenv("INCLAVARE_SIM_STATE_DIR", str(tmp_path / "sim-platform"))


@pytest.fixture(scope="session")
def pal_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pals")


@pytest.fixture
def pal(pal_dir: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    """pal(name) -> a private copy of that test PAL (the dynamic loader shares one instance per file)."""
    from tests.fixtures.pal.build import build_pal

    def get(name: str) -> str:
        src = build_pal(name, pal_dir)
        dst = tmp_path / f"{name}-{os.urandom(4).hex()}.so"
        shutil.copy(src, dst)
        return str(dst)

    return get


def read_log(bundle: str) -> list[tuple[str, dict]]:
    from tests.fixtures.pal.build import read_log as rl

    return rl(Path(bundle) / "rootfs" / "pal.log")


def funcs(bundle: str) -> list[str]:
    return [f for f, _ in read_log(bundle)]


def enclave_bundle(make_bundle, args, pal_path: str, *, pal_args: str = "", env=(), annotations=None,
                   level: str | None = None):  # type: ignore[no-untyped-def]
    def edit(cfg: dict) -> None:
        e = cfg["process"]["env"]
        e += ["ENCLAVE_TYPE=sim", f"ENCLAVE_RUNTIME_PATH={pal_path}",
              "ENCLAVE_RUNTIME_ARGS=" + ",".join(w for w in ("log=/pal.log", pal_args) if w), *env]
        if level:
            e.append(f"ENCLAVE_RUNTIME_LOGLEVEL={level}")
        if annotations:
            cfg["annotations"] = annotations

    return make_bundle(args, edit=edit, writable_rootfs=True)


def errors(stderr: str) -> list[str]:
    """rune's stderr without its warnings (type sim warns that nothing is protected)."""
    return [x for x in stderr.strip().splitlines() if not x.startswith("rune: warning: ")]


def wait_for(pred, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition never became true")
        time.sleep(0.02)


def assert_nothing_left(rune, cid: str) -> None:  # type: ignore[no-untyped-def]
    assert not Path(rune.root, cid).exists()
    for ctrl in ("memory", "pids", "unified"):
        base = Path("/sys/fs/cgroup") / ctrl
        if base.is_dir():
            assert not list(base.rglob(cid)), f"cgroup of {cid} left in {ctrl}"
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "init-runelet" not in out or cid not in out


# ---------------------------------------------------------------------------------------------- v2


def test_v2_run_calls_in_order_with_args_stdio_and_exit_value(rune, cid, make_bundle, pal):
    b = enclave_bundle(make_bundle, ["sh", "-c", 'echo "out $0"; echo err >&2; env; exit 3', "a b"],
                       pal("pal_v2"), pal_args="extra", env=["KEEP=1"], level="debug")
    p = rune.run("run", "--bundle", b, cid)
    assert p.returncode == 3, p.stderr
    assert p.stdout.startswith("out a b\n")
    assert "err" in p.stderr
    assert "KEEP=1" in p.stdout and "ENCLAVE_" not in p.stdout  # rune's settings leave the payload's env
    log = read_log(b)
    assert [f for f, _ in log] == ["pal_get_version", "pal_init", "pal_create_process", "pal_exec", "pal_destroy"]
    init = log[1][1]
    assert init["args"] == "log=/pal.log extra"  # commas became spaces
    assert init["log_level"] == "debug"
    cp = log[2][1]
    assert cp["path"] == "/bin/sh"  # resolved with the container's PATH, as upstream
    assert cp["argv"] == ["sh", "-c", 'echo "out $0"; echo err >&2; env; exit 3', "a b"]
    assert "KEEP=1" in cp["env"] and not any(e.startswith("ENCLAVE_") for e in cp["env"])
    assert (cp["stdin"], cp["stdout"], cp["stderr"]) == ("0", "1", "2")
    assert log[3][1]["pid"] == cp["pid"] != "-1"
    assert_nothing_left(rune, cid)


def test_create_inits_the_pal_and_start_runs_the_payload(rune, cid, make_bundle, pal):
    b = enclave_bundle(make_bundle, ["sh", "-c", "echo started > /started"], pal("pal_v2"))
    rune.run("create", "--bundle", b, cid, check=True)
    assert funcs(b) == ["pal_get_version", "pal_init"]  # before create returned
    state = json.loads((Path(rune.root) / cid / "state.json").read_text())
    assert state["enclave"]["type"] == "sim" and state["enclave"]["path"].endswith(".so")
    comm = Path(f"/proc/{rune.state(cid)['pid']}/comm").read_text().strip()
    assert comm == "init-runelet"
    rune.run("start", cid, check=True)
    wait_for(lambda: rune.state(cid)["status"] == "stopped")
    assert funcs(b)[2:] == ["pal_create_process", "pal_exec", "pal_destroy"]
    assert (Path(b) / "rootfs/started").read_text() == "started\n"
    rune.run("delete", cid, check=True)
    assert_nothing_left(rune, cid)


def test_signals_go_to_pal_kill_and_exit_value_is_the_containers(rune, cid, make_bundle, pal):
    b = enclave_bundle(make_bundle, ["sleep", "60"], pal("pal_v2"))
    rune.run("run", "-d", "--bundle", b, cid, check=True)
    wait_for(lambda: "pal_exec" in funcs(b))
    rune.run("kill", cid, "WINCH", check=True)  # forwarded too; sleep ignores it
    wait_for(lambda: "pal_kill" in funcs(b))
    rune.run("kill", cid, "TERM", check=True)
    wait_for(lambda: rune.state(cid)["status"] == "stopped")
    kills = [fields for f, fields in read_log(b) if f == "pal_kill"]
    assert [(k["pid"], k["sig"]) for k in kills] == [("-1", "28"), ("-1", "15")]
    assert read_log(b)[-1][0] == "pal_destroy"


def test_foreground_exit_status_after_signal(rune, cid, make_bundle, pal, rune_bin):
    b = enclave_bundle(make_bundle, ["sleep", "60"], pal("pal_v2"))
    proc = subprocess.Popen(rune.cmd("run", "--bundle", b, cid), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: "pal_exec" in funcs(b))
    rune.run("kill", cid, "TERM", check=True)
    assert proc.wait(20) == 143


# ---------------------------------------------------------------------------------------------- v1, v3


def test_v1_pal_exec_runs_the_payload(rune, cid, make_bundle, pal):
    b = enclave_bundle(make_bundle, ["sh", "-c", "echo v1; exit 4"], pal("pal_v1"))
    p = rune.run("run", "--bundle", b, cid)
    assert p.returncode == 4 and p.stdout == "v1\n", p.stderr
    log = read_log(b)
    assert [f for f, _ in log] == ["pal_init", "pal_exec", "pal_destroy"]
    assert log[1][1]["path"] == "/bin/sh" and log[1][1]["argv"] == ["sh", "-c", "echo v1; exit 4"]


def test_v3_init_and_local_report_through_attest(rune, cid, make_bundle, pal, tmp_path):
    b = enclave_bundle(make_bundle, ["sleep", "60"], pal("pal_v3"))
    rune.run("run", "-d", "--bundle", b, cid, check=True)
    init = [fields for f, fields in read_log(b) if f == "pal_init"][0]
    assert (init["fd"], init["addr"]) == ("-1", "0")  # no enclave pool
    report = tmp_path / "report.bin"
    p = rune.run("attest", "--reportFile", str(report), cid)
    assert p.returncode == 0, p.stderr
    data = report.read_bytes()
    assert len(data) == 432
    out = json.loads(p.stdout)
    assert out["report"] == data.hex()
    calls = [fields for f, fields in read_log(b) if f == "pal_get_local_report"]
    assert len(calls) == 1 and calls[0]["targetinfo_len"] == "512"
    rune.run("kill", cid, "KILL", check=True)


def test_attest_on_a_plain_container_is_refused(rune, cid, make_bundle):
    b = make_bundle(["sleep", "60"])
    rune.run("run", "-d", "--bundle", b, cid, check=True)
    p = rune.run("attest", cid)
    assert p.returncode == 1 and "has no enclave" in p.stderr


def test_attest_without_report_support_says_so(rune, cid, make_bundle, pal):
    b = enclave_bundle(make_bundle, ["sleep", "60"], pal("pal_v2"))
    rune.run("run", "-d", "--bundle", b, cid, check=True)
    p = rune.run("attest", cid)
    assert p.returncode == 1
    assert len(errors(p.stderr)) == 1 and "pal_get_local_report" in p.stderr


# ---------------------------------------------------------------------------------------------- exec


def test_exec_runs_in_the_same_enclave_instance(rune, cid, make_bundle, pal):
    b = enclave_bundle(make_bundle, ["sleep", "60"], pal("pal_v2"))
    rune.run("run", "-d", "--bundle", b, cid, check=True)
    wait_for(lambda: "pal_exec" in funcs(b))
    p = rune.run("exec", "--env", "X=has space", "--env", "ENCLAVE_TYPE=bogus", cid,
                 "sh", "-c", 'echo "[$1]" "$X"; env | grep -c ENCLAVE_; exit 5', "sh", "two  words")
    assert p.returncode == 5, p.stderr
    assert p.stdout == "[two  words] has space\n0\n"
    creates = [fields for f, fields in read_log(b) if f == "pal_create_process"]
    assert len(creates) == 2  # the payload's, then exec's: the same PAL instance
    assert creates[1]["argv"] == ["sh", "-c", 'echo "[$1]" "$X"; env | grep -c ENCLAVE_; exit 5', "sh", "two  words"]
    # exec's stdio are the fds the agent received, not the init's
    assert (creates[1]["stdin"], creates[1]["stdout"]) != ("0", "1")
    rune.run("kill", cid, "KILL", check=True)


def test_exec_forwards_signals_to_its_process(rune, cid, make_bundle, pal):
    b = enclave_bundle(make_bundle, ["sleep", "60"], pal("pal_v2"))
    rune.run("run", "-d", "--bundle", b, cid, check=True)
    wait_for(lambda: "pal_exec" in funcs(b))
    proc = subprocess.Popen(rune.cmd("exec", cid, "sleep", "50"), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: len([f for f in funcs(b) if f == "pal_exec"]) == 2)
    proc.send_signal(15)
    assert proc.wait(20) == 143
    creates = [fields for f, fields in read_log(b) if f == "pal_create_process"]
    kills = [fields for f, fields in read_log(b) if f == "pal_kill"]
    assert kills and kills[0]["pid"] == creates[1]["pid"] and kills[0]["sig"] == "15"
    assert rune.state(cid)["status"] == "running"  # only the exec'd process was signalled
    rune.run("kill", cid, "KILL", check=True)


# ---------------------------------------------------------------------------------------------- bad input


def test_failing_pal_init_fails_create_and_leaves_nothing(rune, cid, make_bundle, pal):
    b = enclave_bundle(make_bundle, ["true"], pal("pal_v2"), pal_args="fail=init")
    p = rune.run("create", "--bundle", b, cid)
    assert p.returncode == 1
    assert errors(p.stderr) == ["rune: enclave runtime: pal_init() failed with -5"]
    assert_nothing_left(rune, cid)


@pytest.mark.parametrize(("variant", "level", "needle"), [
    ("missing", None, "no such file"),
    ("not_shared", None, "cannot load"),
    ("pal_no_exec", None, "pal_exec"),
    ("pal_v2_no_create", None, "pal_create_process"),
    ("pal_v4", None, "version 4"),
    ("pal_v2", "loud", "invalid log level 'loud'"),
])
def test_bad_pal_is_one_line_and_leaves_nothing(rune, cid, make_bundle, pal, tmp_path, variant, level, needle):
    path = str(tmp_path / "nope.so") if variant == "missing" else pal(variant)
    b = enclave_bundle(make_bundle, ["true"], path, level=level)
    p = rune.run("run", "--bundle", b, cid)
    assert p.returncode == 1
    lines = errors(p.stderr)
    assert len(lines) == 1 and lines[0].startswith("rune: ") and needle in lines[0], p.stderr
    assert_nothing_left(rune, cid)


def test_intel_sgx_without_hardware(rune, cid, make_bundle, pal):
    from inclavare.enclave.config import sgx_device

    if sgx_device() is not None:
        pytest.skip("this machine has an SGX device")

    def edit(cfg: dict) -> None:
        cfg["process"]["env"] += ["ENCLAVE_TYPE=intelSgx", "ENCLAVE_RUNTIME_PATH=" + pal("pal_v2")]

    b = make_bundle(["true"], edit=edit)
    p = rune.run("run", "--bundle", b, cid)
    assert p.returncode == 1 and "intelSgx needs an SGX device" in p.stderr
    assert_nothing_left(rune, cid)


def test_sim_is_logged_once_per_container(rune, cid, make_bundle, pal, tmp_path):
    b = enclave_bundle(make_bundle, ["true"], pal("pal_v2"))
    log = tmp_path / "rune.log"
    rune.run("--log", str(log), "--log-format", "json", "create", "--bundle", b, cid, check=True)
    rune.run("--log", str(log), "--log-format", "json", "start", cid, check=True)
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    warnings = [x for x in lines if x["level"] == "warning" and "nothing in this container is protected" in x["msg"]]
    assert len(warnings) == 1


def test_annotations_configure_the_enclave(rune, cid, make_bundle, pal):
    path = pal("pal_v2")

    def edit(cfg: dict) -> None:
        cfg["annotations"] = {"enclave.type": "sim", "enclave.runtime.path": path,
                              "enclave.runtime.args": "log=/pal.log"}

    b = make_bundle(["sh", "-c", "echo annotated"], edit=edit, writable_rootfs=True)
    p = rune.run("run", "--bundle", b, cid)
    assert p.returncode == 0 and p.stdout == "annotated\n", p.stderr
    assert funcs(b) == ["pal_get_version", "pal_init", "pal_create_process", "pal_exec", "pal_destroy"]


def test_exec_with_a_state_dir_deeper_than_sun_path(rune_bin, cid, make_bundle, pal, tmp_path):
    from tests.conftest import Rune

    root = tmp_path
    while len(str(root)) < 150:
        root = root / "a-deep-state-directory"
    deep = Rune(rune_bin, str(root))
    b = enclave_bundle(make_bundle, ["sleep", "60"], pal("pal_v2"))
    try:
        deep.run("run", "-d", "--bundle", b, cid, check=True)
        assert len(str(root / cid / "agent.sock")) > 108
        p = deep.run("exec", cid, "sh", "-c", "echo reached")
        assert p.returncode == 0 and p.stdout == "reached\n", p.stderr
    finally:
        deep.run("delete", "--force", cid)


def test_exec_and_attest_in_a_created_container(rune, cid, make_bundle, pal, tmp_path):
    b = enclave_bundle(make_bundle, ["sleep", "60"], pal("pal_v3"))
    rune.run("create", "--bundle", b, cid, check=True)
    p = rune.run("exec", cid, "sh", "-c", "echo before-start")
    assert p.returncode == 0 and p.stdout == "before-start\n", p.stderr
    assert rune.run("attest", cid).returncode == 0
    assert rune.state(cid)["status"] == "created"
    rune.run("start", cid, check=True)
    # the exec above already logged one pal_exec: wait for the init's own
    wait_for(lambda: funcs(b).count("pal_exec") == 2)
    assert funcs(b).count("pal_create_process") == 2
    rune.run("delete", "--force", cid, check=True)
