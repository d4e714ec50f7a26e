"""Enclave configuration: env wins over annotations, ENCLAVE_* leave the workload's env, bad values."""

from __future__ import annotations

import os

import pytest

from inclavare.enclave import config as ec
from inclavare.enclave.api import EnclaveConfigError


def proc(*env: str) -> dict:
    return {"args": ["/bin/true"], "env": ["PATH=/bin", *env]}


def test_no_enclave_is_plain() -> None:
    p = proc("FOO=1")
    assert ec.resolve(p, {"other": "x"}) is None
    assert p["env"] == ["PATH=/bin", "FOO=1"]
    from inclavare.cli.rune import mentions_enclave

    assert not mentions_enclave({"process": p, "annotations": {"other": "x"}})
    assert mentions_enclave({"process": p, "annotations": {"enclave.type": "sim"}})


def test_env_wins_and_is_removed() -> None:
    p = proc("ENCLAVE_TYPE=sim", "ENCLAVE_RUNTIME_PATH=builtin:wasm", "ENCLAVE_RUNTIME_ARGS=a,b", "KEEP=1")
    ann = {"enclave.type": "intelSgx", "enclave.runtime.path": "/usr/lib/x.so",
           "enclave.runtime.loglevel": "debug"}
    out = ec.resolve(p, ann)
    assert out == {"type": "sim", "path": "builtin:wasm", "args": "a,b", "loglevel": "debug"}
    assert p["env"] == ["PATH=/bin", "KEEP=1"]
    assert ec.pal_args(out) == "a b"


def test_annotations_alone() -> None:
    p = proc()
    out = ec.resolve(p, {"enclave.type": "sim", "enclave.runtime.path": "/opt/pal.so",
                         "enclave.attestation.ra_type": "ECDSA"})
    assert out == {"type": "sim", "path": "/opt/pal.so", "args": "", "loglevel": "info", "ra_type": "ecdsa"}


def test_single_character_values_are_valid() -> None:
    # upstream treated one-character values as unset
    out = ec.resolve(proc("ENCLAVE_TYPE=sim", "ENCLAVE_RUNTIME_PATH=/p", "ENCLAVE_RUNTIME_ARGS=x"), None)
    assert out is not None and out["path"] == "/p" and out["args"] == "x"


def test_value_with_equals_sign() -> None:
    out = ec.resolve(proc("ENCLAVE_TYPE=sim", "ENCLAVE_RUNTIME_PATH=builtin:sim",
                          "ENCLAVE_RUNTIME_ARGS=image=/e.img,debug"), None)
    assert out is not None and ec.pal_args(out) == "image=/e.img debug"


@pytest.mark.parametrize(("env", "needle"), [
    (["ENCLAVE_TYPE=tdx", "ENCLAVE_RUNTIME_PATH=/p"], "unknown enclave type 'tdx'"),
    (["ENCLAVE_TYPE=sim"], "ENCLAVE_RUNTIME_PATH / enclave.runtime.path: not set"),
    (["ENCLAVE_TYPE=sim", "ENCLAVE_RUNTIME_PATH=lib/pal.so"], "not an absolute host path"),
    (["ENCLAVE_TYPE=sim", "ENCLAVE_RUNTIME_PATH=/p", "ENCLAVE_RUNTIME_LOGLEVEL=loud"], "invalid log level 'loud'"),
    (["ENCLAVE_TYPE=sim", "ENCLAVE_RUNTIME_PATH=/p", "ENCLAVE_RA_TYPE=magic"], "unknown attestation type"),
    (["ENCLAVE_RUNTIME_PATH=/p"], "ENCLAVE_TYPE / enclave.type: not set"),
])
def test_bad_values(env: list[str], needle: str) -> None:
    with pytest.raises(EnclaveConfigError) as ei:
        ec.resolve(proc(*env), None)
    assert needle in str(ei.value)
    assert "\n" not in str(ei.value)


def test_every_log_level_accepted() -> None:
    for level in ("trace", "debug", "info", "warning", "error", "fatal", "panic", "off"):
        out = ec.resolve(proc("ENCLAVE_TYPE=sim", "ENCLAVE_RUNTIME_PATH=/p", f"ENCLAVE_RUNTIME_LOGLEVEL={level}"), None)
        assert out is not None and out["loglevel"] == level


def test_strip_env_for_exec() -> None:
    p = proc("ENCLAVE_TYPE=sim", "A=1")
    ec.strip_env(p)
    assert p["env"] == ["PATH=/bin", "A=1"]


def test_sim_warns_once_and_leaves_spec() -> None:
    spec: dict = {"process": proc()}
    warnings = ec.prepare_spec(spec, {"type": "sim", "path": "/p"})
    assert len(warnings) == 1 and "nothing in this container is protected" in warnings[0]
    assert "linux" not in spec


@pytest.mark.skipif(ec.sgx_device() is not None, reason="this machine has an SGX device")
def test_intel_sgx_without_hardware_is_refused() -> None:
    with pytest.raises(EnclaveConfigError) as ei:
        ec.prepare_spec({"process": proc()}, {"type": "intelSgx", "path": "/p"})
    assert "no SGX device" in str(ei.value) or "has none" in str(ei.value)


def test_intel_sgx_injects_devices_and_mounts(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    # stand-ins for the device nodes and the AESM directory: /dev/null is a real character device
    dev = tmp_path / "sgx_enclave"
    os.symlink("/dev/null", dev)
    aesmd = tmp_path / "aesmd"
    aesmd.mkdir()
    monkeypatch.setattr(ec, "SGX_ENCLAVE_DEVICES", (str(dev),))
    monkeypatch.setattr(ec, "SGX_EXTRA_DEVICES", (str(tmp_path / "absent"),))
    monkeypatch.setattr(ec, "SGX_HOST_DIRS", (str(aesmd), str(tmp_path / "no-epm")))
    spec: dict = {"process": proc(), "mounts": []}
    assert ec.prepare_spec(spec, {"type": "intelSgx", "path": "/p"}) == []
    st = os.stat("/dev/null")
    assert spec["linux"]["devices"] == [{"path": str(dev), "type": "c", "major": os.major(st.st_rdev),
                                         "minor": os.minor(st.st_rdev), "fileMode": 0o666, "uid": 0, "gid": 0}]
    assert {"allow": True, "type": "c", "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
            "access": "rwm"} in spec["linux"]["resources"]["devices"]
    assert spec["mounts"] == [{"destination": str(aesmd), "type": "bind", "source": str(aesmd),
                               "options": ["rbind", "rprivate"]}]


@pytest.mark.parametrize("mark", ["io.kubernetes.cri.container-type", "io.kubernetes.cri-o.ContainerType"])
def test_pod_sandbox_ignores_the_pods_enclave_annotations(mark: str) -> None:
    """CRI runtimes give a pod's annotations to its pause container too: it stays a plain container, while the
    pod's workload containers (marked "container") become enclaves."""
    ann = {"enclave.type": "sim", "enclave.runtime.path": "builtin:sim"}
    assert ec.resolve({"env": []}, {**ann, mark: "sandbox"}) is None
    got = ec.resolve({"env": []}, {**ann, mark: "container"})
    assert got is not None and got["type"] == "sim"
