"""cli/sgx_device_plugin.py's refusals: every bad flag is one line and exit 2, before anything is served; a
start-up failure is one line and exit 1."""

from __future__ import annotations

import os

import pytest

from inclavare.cli import sgx_device_plugin as cli


@pytest.mark.parametrize(("args", "message"), [
    (["--resources", "sgx.intel.com/epc"],
     "--resources 'sgx.intel.com/epc': expected distinct names among alibabacloud.com/sgx_epc_MiB, "
     "sgx.intel.com/enclave, sgx.intel.com/provision (it is a node-level extended resource; see --epc-nfd-file)"),
    (["--resources", "sgx.intel.com/enclave,sgx.intel.com/enclave"], "expected distinct names"),
    (["--resources", ","], "expected distinct names"),
    (["--sim-epc-mib", "0"], "argument --sim-epc-mib: '0': expected a whole number from 1 to 1048576"),
    (["--enclave-limit", "-3"], "expected a whole number"),
    (["--provision-limit", "2x"], "expected a whole number"),
    (["--interval", "0"], "argument --interval: '0': expected seconds from 0.05 to 3600"),
    (["--interval", "nan"], "expected seconds"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_flags(tmp_path, capsys, args, message):
    assert cli.main(["--device-plugin-dir", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("inclavare-sgx-device-plugin: ") and message in err and err.count("\n") == 1
    assert os.listdir(tmp_path) == []  # nothing served


def test_startup_failure_is_one_line(tmp_path, capsys):
    (tmp_path / "sgx.sock").write_text("someone else's file")
    assert cli.main(["--sim", "--device-plugin-dir", str(tmp_path), "--resources", "alibabacloud.com/sgx_epc_MiB"]) \
        == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[-1] == (f"inclavare-sgx-device-plugin: {tmp_path}/sgx.sock: exists and is not a socket; "
                                    "refusing to replace it")
    assert (tmp_path / "sgx.sock").read_text() == "someone else's file"


def test_nfd_file_failure_is_one_line(tmp_path, capsys):
    assert cli.main(["--sim", "--device-plugin-dir", str(tmp_path), "--epc-nfd-file", str(tmp_path / "no" / "f")]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == \
        f"inclavare-sgx-device-plugin: --epc-nfd-file {tmp_path}/no/f: No such file or directory"


def test_signal_handlers_are_restored_after_a_failed_start(tmp_path):
    import signal

    before = signal.getsignal(signal.SIGTERM)
    (tmp_path / "sgx.sock").mkdir()
    assert cli.main(["--sim", "--device-plugin-dir", str(tmp_path)]) == 1
    assert signal.getsignal(signal.SIGTERM) is before
