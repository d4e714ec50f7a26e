"""The sample confidential container under rune: a sim enclave container (detached) whose runtime serves
inclavared's second hop from inside the enclave (ENCLAVE_INFO_LISTEN, a unix socket in a bind mount), the real
inclavared relays, and shelter compares the measurement with the one `shelter mrverify` computes from the same
image file: a match; a container running another image: a mismatch; the container stopped: a clear error."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import needs_busybox, needs_root
from tests.integration.test_encrypted_image import BUSYBOX, signed_image
from tests.integration.test_inclavared import TIMEOUT, Proc, env, inclavared, procs, shelter  # noqa: F401

pytestmark = [needs_root, needs_busybox]

INSIDE = "/run/enclave-info"


def mrverify(env: dict[str, str], path: Path) -> str:  # noqa: F811
    p = subprocess.run([sys.executable, "-m", "inclavare.cli.shelter", "mrverify", str(path), "--json"], env=env,
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode == 0, p.stderr
    return str(json.loads(p.stdout)["mrenclave_computed"])


def start_container(rune: Any, make_bundle: Any, cid: str, env: dict[str, str], img: bytes,  # noqa: F811
                    listen: str, shared: Path | None, mutual: bool = True, **flags: Any) -> tuple[int, str]:
    """`rune run -d` of a sim enclave container of ``img`` serving its identity on ``listen`` (``shared``: a host
    directory bind-mounted at /run/enclave-info); (exit status, rune's output)."""
    def edit(cfg: dict[str, Any]) -> None:
        cfg["process"]["env"] += ["ENCLAVE_TYPE=sim", "ENCLAVE_RUNTIME_PATH=builtin:sim",
                                  f"ENCLAVE_INFO_LISTEN={listen}", f"ENCLAVE_INFO_MUTUAL={int(mutual)}"]
        if shared is not None:
            cfg["mounts"].append({"destination": INSIDE, "type": "bind", "source": str(shared),
                                  "options": ["rbind", "rw"]})

    b = Path(make_bundle(["sleep", "600"], edit=edit, **flags))
    (b / "rootfs" / "enclave").mkdir()
    (b / "rootfs" / "enclave" / "enclave.img").write_bytes(img)
    out = b.parent / f"{cid}.out"  # a detached container keeps rune's stdio: a file, not a pipe
    with open(out, "ab") as f:
        p = subprocess.run(rune.cmd("run", "-d", "--bundle", str(b), cid), stdin=subprocess.DEVNULL, stdout=f,
                           stderr=f, env={**os.environ, "INCLAVARE_SIM_STATE_DIR": env["INCLAVARE_SIM_STATE_DIR"]},
                           timeout=TIMEOUT)
    return p.returncode, out.read_text()


def run_container(rune: Any, make_bundle: Any, cid: str, env: dict[str, str], img: bytes,  # noqa: F811
                  shared: Path, mutual: bool = True) -> Path:
    """A container serving on ``shared``/c.sock; returns the socket's host path."""
    shared.mkdir(exist_ok=True)
    rc, out = start_container(rune, make_bundle, cid, env, img, f"unix://{INSIDE}/c.sock", shared, mutual)
    assert rc == 0, out
    sock = shared / "c.sock"
    assert sock.is_socket()  # pal_init bound it before `create` returned
    return sock


def wait_stopped(rune: Any, cid: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while rune.state(cid)["status"] != "stopped":
        assert time.monotonic() < deadline, "the container did not stop"
        time.sleep(0.05)


def test_shelter_checks_the_image_rune_loaded(rune, make_bundle, cid, env, procs, tmp_path):  # noqa: F811
    img, _ = signed_image(BUSYBOX)
    (tmp_path / "enclave.img").write_bytes(img)
    expected = mrverify(env, tmp_path / "enclave.img")
    sock = run_container(rune, make_bundle, cid, env, img, tmp_path / "shared")
    d = inclavared(procs, env, f"unix://{sock}")

    for _ in range(3):  # inclavared hangs up after each answer: the container goes on (SIGPIPE, runelet.py)
        ok = shelter(env, d.address, "--mrenclave", expected)
        assert ok.returncode == 0, ok.stderr
        assert f"App Enclave mrenclave: {expected}" in ok.stdout
        assert "Attested: yes (TEE sim, verifier sim)" in ok.stdout
        assert ok.stdout.rstrip().endswith("Remote attestation is successful.")
    assert rune.state(cid)["status"] == "running"

    # another image, another container: its own measurement, which is not the first image's
    other, other_mr = signed_image(BUSYBOX + b"\0another build")
    (tmp_path / "other.img").write_bytes(other)
    assert mrverify(env, tmp_path / "other.img") == other_mr != expected
    sock2 = run_container(rune, make_bundle, cid + "-2", env, other, tmp_path / "shared2")
    try:
        d2 = inclavared(procs, env, f"unix://{sock2}")
        bad = shelter(env, d2.address, "--mrenclave", expected)
        assert bad.returncode == 1, bad.stdout
        assert bad.stderr.strip() == (f"shelter: MRENCLAVE mismatch: the enclave's is {other_mr}, --mrenclave "
                                      f"accepts {expected}")
    finally:
        rune.run("delete", "--force", cid + "-2")

    # the container stopped: its runtime removed the socket, inclavared answers an error, shelter fails clearly
    assert rune.run("kill", cid, "TERM").returncode == 0
    wait_stopped(rune, cid)
    assert not sock.exists()
    gone = shelter(env, d.address, "--mrenclave", expected)
    assert gone.returncode == 1 and gone.stdout == "", gone.stdout
    assert f"confidential container unix://{sock}: cannot connect: No such file or directory" in gone.stderr
    assert len(gone.stderr.splitlines()) == 1, gone.stderr


def test_a_killed_container_leaves_a_refusing_socket(rune, make_bundle, cid, env, procs, tmp_path):  # noqa: F811
    """kill -9 gives the runtime no chance to clean up: the stale socket refuses, and the next container of the
    same bind mount replaces it."""
    img, mr = signed_image(BUSYBOX)
    sock = run_container(rune, make_bundle, cid, env, img, tmp_path / "shared", mutual=False)
    d = inclavared(procs, env, f"unix://{sock}")
    assert shelter(env, d.address, "--mrenclave", mr).returncode == 0
    assert rune.run("kill", cid, "KILL").returncode == 0
    wait_stopped(rune, cid)
    gone = shelter(env, d.address, "--mrenclave", mr)
    assert gone.returncode == 1 and "cannot connect: Connection refused" in gone.stderr, gone.stderr
    rune.run("delete", cid, check=True)
    assert sock.is_socket()  # stale
    run_container(rune, make_bundle, cid, env, img, tmp_path / "shared", mutual=False)
    assert shelter(env, d.address, "--mrenclave", mr).returncode == 0


def test_an_agent_client_that_hangs_up_does_not_end_the_payload(rune, make_bundle, cid, env, tmp_path):  # noqa: F811
    """The init-runelet's answer to a `rune attest` client that is gone fails with EPIPE in the agent's thread; that
    SIGPIPE was forwarded to the payload and ended the container."""
    from inclavare.enclave import agent

    img, _ = signed_image(BUSYBOX)
    run_container(rune, make_bundle, cid, env, img, tmp_path / "shared", mutual=False)
    pb = agent.load_codec()
    req = pb.AgentServiceRequest()
    req.attest.isRA = False
    for _ in range(3):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(os.path.join(rune.root, cid, agent.SOCKET_NAME))
        s.sendall(agent.frame(req))
        s.close()  # before the answer
    res = rune.run("attest", cid)  # the agent still answers, after the three failed writes
    assert res.returncode == 0, res.stderr
    assert rune.state(cid)["status"] == "running"


def test_the_host_network(rune, make_bundle, cid, env, procs, tmp_path):  # noqa: F811
    """A container on the host's network serves on a TCP port that inclavared reaches directly."""
    img, mr = signed_image(BUSYBOX)
    with socket.socket() as probe:  # a port free a moment ago; the container binds it with SO_REUSEADDR
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    rc, out = start_container(rune, make_bundle, cid, env, img, f"tcp://127.0.0.1:{port}", None, hostnet=True)
    assert rc == 0, out
    d = inclavared(procs, env, f"127.0.0.1:{port}")
    ok = shelter(env, d.address, "--mrenclave", mr)
    assert ok.returncode == 0 and f"App Enclave mrenclave: {mr}" in ok.stdout, ok.stderr


def test_an_address_it_cannot_listen_on_fails_create(rune, make_bundle, cid, env, tmp_path):  # noqa: F811
    img, _ = signed_image(BUSYBOX)
    rc, out = start_container(rune, make_bundle, cid, env, img, "unix:///no/such/dir/c.sock", None)
    assert rc != 0
    lines = [x for x in out.splitlines() if not x.startswith("rune: warning")]
    assert lines == ["rune: enclave runtime: pal_init() failed with -99: ENCLAVE_INFO_LISTEN=unix:///no/such/dir/"
                     "c.sock: cannot listen: No such file or directory"], out
    assert rune.run("state", cid).returncode != 0  # nothing left behind


def test_payloads_start_with_no_signal_blocked(rune, make_bundle, cid, env, tmp_path):  # noqa: F811
    """The init-runelet's worker threads block SIGPIPE; the payload and `rune exec`'s processes must not inherit
    that (a `yes | head -1` would otherwise never see its SIGPIPE)."""
    img, _ = signed_image(BUSYBOX)
    run_container(rune, make_bundle, cid, env, img, tmp_path / "shared")
    p = rune.run("exec", cid, "sh", "-c", "grep -H SigBlk /proc/[0-9]*/status; yes | head -1")
    assert p.returncode == 0, p.stderr
    masks = dict(line.split(":SigBlk:") for line in p.stdout.splitlines() if ":SigBlk:" in line)
    assert len(masks) >= 3  # the init-runelet, the payload (sleep), this shell (and grep)
    assert {m.strip() for m in masks.values()} == {"0000000000000000"}, masks
    assert p.stdout.splitlines()[-1] == "y"
