"""cli/rune.py and cli/runecmds.py without root: flag parsing, sizes, update resources, exec process, main()."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from inclavare import OCI_VERSION, __version__
from inclavare.cli import rune
from inclavare.cli.rune import (
    COMMANDS,
    GLOBAL_FLAGS,
    UsageError,
    main,
    parse_flags,
)
from inclavare.cli.runecmds import exec_process, parse_size, resources_from_flags
from inclavare.errors import ConfigError
from inclavare.runtime.state import State

EXEC = COMMANDS["exec"][0]
UPDATE = COMMANDS["update"][0]
CREATE = COMMANDS["create"][0]


# ------------------------------------------------------------------------------ parse_flags


@pytest.mark.parametrize("args", [
    ["--root", "/r", "state"],
    ["--root=/r", "state"],
    ["-root", "/r", "state"],
    ["-root=/r", "state"],
])
def test_value_flag_spellings(args: list[str]) -> None:
    opts, pos = parse_flags(args, GLOBAL_FLAGS, "rune")
    assert opts == {"root": "/r"}
    assert pos == ["state"]


def test_short_alias_maps_to_long_name() -> None:
    opts, pos = parse_flags(["-b", "/bundle", "cid"], CREATE, "rune create")
    assert opts == {"bundle": "/bundle"}
    assert pos == ["cid"]
    opts, _ = parse_flags(["--b=/x", "cid"], CREATE, "rune create")
    assert opts == {"bundle": "/x"}


def test_boolean_flag_without_value_is_true_and_does_not_eat_next_arg() -> None:
    opts, pos = parse_flags(["--debug", "state", "x"], GLOBAL_FLAGS, "rune")
    assert opts == {"debug": True}
    assert pos == ["state", "x"]


@pytest.mark.parametrize(("text", "value"), [
    ("true", True), ("false", False), ("TRUE", True), ("False", False), ("1", True), ("0", False),
])
def test_boolean_flag_with_explicit_value(text: str, value: bool) -> None:
    opts, pos = parse_flags([f"--debug={text}", "list"], GLOBAL_FLAGS, "rune")
    assert opts == {"debug": value}
    assert pos == ["list"]


def test_boolean_flag_with_bad_value() -> None:
    with pytest.raises(UsageError, match=r"invalid boolean value 'yes' for -debug"):
        parse_flags(["--debug=yes"], GLOBAL_FLAGS, "rune")


def test_repeatable_flags_accumulate_in_order() -> None:
    opts, pos = parse_flags(["-e", "A=1", "--env", "B=2", "--env=C=3", "-g", "10", "--additional-gids=20",
                             "cid", "true"], EXEC, "rune exec")
    assert opts == {"env": ["A=1", "B=2", "C=3"], "additional-gids": ["10", "20"]}
    assert pos == ["cid", "true"]


def test_value_with_equals_sign_kept_whole() -> None:
    opts, _ = parse_flags(["--env=K=v=w", "cid"], EXEC, "rune exec")
    assert opts["env"] == ["K=v=w"]


def test_non_repeatable_flag_last_wins() -> None:
    opts, _ = parse_flags(["--cwd", "/a", "--cwd", "/b", "cid"], EXEC, "rune exec")
    assert opts == {"cwd": "/b"}


def test_flags_stop_at_first_positional() -> None:
    opts, pos = parse_flags(["-t", "cid", "sh", "-c", "echo hi", "--env", "X=1"], EXEC, "rune exec")
    assert opts == {"tty": True}
    assert pos == ["cid", "sh", "-c", "echo hi", "--env", "X=1"]


def test_double_dash_ends_flags_and_is_dropped() -> None:
    opts, pos = parse_flags(["--tty", "--", "--cwd", "x"], EXEC, "rune exec")
    assert opts == {"tty": True}
    assert pos == ["--cwd", "x"]


def test_single_dash_is_a_positional() -> None:
    opts, pos = parse_flags(["-", "x"], UPDATE, "rune update")
    assert opts == {}
    assert pos == ["-", "x"]


def test_value_that_looks_like_a_flag_is_taken_as_the_value() -> None:
    opts, pos = parse_flags(["--memory", "-1", "cid"], UPDATE, "rune update")
    assert opts == {"memory": "-1"}
    assert pos == ["cid"]


def test_empty_value_after_equals() -> None:
    opts, _ = parse_flags(["--cwd=", "cid"], EXEC, "rune exec")
    assert opts == {"cwd": ""}


def test_no_args() -> None:
    assert parse_flags([], EXEC, "rune exec") == ({}, [])


def test_unknown_flag_error_names_where_and_flag() -> None:
    with pytest.raises(UsageError) as ei:
        parse_flags(["--nope", "cid"], EXEC, "rune exec")
    assert str(ei.value) == "rune exec: flag provided but not defined: -nope"
    # a flag of another command is unknown here
    with pytest.raises(UsageError, match="not defined: -bundle"):
        parse_flags(["--bundle", "b", "cid"], EXEC, "rune exec")


def test_missing_value_error() -> None:
    with pytest.raises(UsageError) as ei:
        parse_flags(["--cwd"], EXEC, "rune exec")
    assert str(ei.value) == "rune exec: flag needs an argument: -cwd"
    with pytest.raises(UsageError, match="flag needs an argument: -p"):
        parse_flags(["-p"], EXEC, "rune exec")


# ------------------------------------------------------------------------------ parse_size


@pytest.mark.parametrize(("text", "value"), [
    ("100", 100), ("100b", 100), ("512k", 512 << 10), ("512K", 512 << 10), ("512kb", 512 << 10),
    ("100M", 100 << 20), ("100m", 100 << 20), ("100MB", 100 << 20), ("100MiB", 100 << 20),
    ("1g", 1 << 30), ("1G", 1 << 30), ("2gb", 2 << 30), ("1t", 1 << 40), ("1.5g", 3 << 29),
    (" 64m ", 64 << 20), ("-1", -1), ("0", 0),
])
def test_parse_size(text: str, value: int) -> None:
    assert parse_size("memory", text) == value


@pytest.mark.parametrize("text", ["", "abc", "m", "10x", "1..2m", "ten", "1mm"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(UsageError) as ei:
        parse_size("memory-swap", text)
    assert str(ei.value) == f"--memory-swap: invalid size {text!r}"


# ------------------------------------------------------------------------------ resources_from_flags


@pytest.mark.parametrize(("flag", "value", "expected"), [
    ("memory", "100M", {"memory": {"limit": 100 << 20}}),
    ("memory-reservation", "50m", {"memory": {"reservation": 50 << 20}}),
    ("memory-swap", "-1", {"memory": {"swap": -1}}),
    ("kernel-memory", "1g", {"memory": {"kernel": 1 << 30}}),
    ("kernel-memory-tcp", "4k", {"memory": {"kernelTCP": 4096}}),
    ("cpu-period", "100000", {"cpu": {"period": 100000}}),
    ("cpu-quota", "-1", {"cpu": {"quota": -1}}),
    ("cpu-rt-period", "1000000", {"cpu": {"realtimePeriod": 1000000}}),
    ("cpu-rt-runtime", "950000", {"cpu": {"realtimeRuntime": 950000}}),
    ("cpu-share", "512", {"cpu": {"shares": 512}}),
    ("cpuset-cpus", "0-1", {"cpu": {"cpus": "0-1"}}),
    ("cpuset-mems", "0", {"cpu": {"mems": "0"}}),
    ("pids-limit", "42", {"pids": {"limit": 42}}),
    ("blkio-weight", "300", {"blockIO": {"weight": 300}}),
])
def test_each_update_flag_maps_to_its_resource_key(flag: str, value: str, expected: dict[str, Any]) -> None:
    opts, pos = parse_flags([f"--{flag}", value, "cid"], UPDATE, "rune update")
    assert pos == ["cid"]
    assert resources_from_flags(opts) == expected


def test_no_flags_gives_empty_resources() -> None:
    assert resources_from_flags({}) == {}


def test_several_flags_combine() -> None:
    res = resources_from_flags({"memory": "1g", "memory-swap": "2g", "cpu-quota": "50000", "cpu-period": "100000",
                                "pids-limit": "10"})
    assert res == {"memory": {"limit": 1 << 30, "swap": 2 << 30}, "cpu": {"quota": 50000, "period": 100000},
                   "pids": {"limit": 10}}


def test_resources_file_merged_with_flags(tmp_path: Path) -> None:
    f = tmp_path / "r.json"
    f.write_text(json.dumps({"memory": {"limit": 1, "reservation": 7}, "cpu": {"shares": 2},
                             "pids": {"limit": 5}, "hugepageLimits": []}))
    res = resources_from_flags({"resources": str(f), "memory": "2m", "cpu-quota": "1000"})
    assert res == {"memory": {"limit": 2 << 20, "reservation": 7}, "cpu": {"shares": 2, "quota": 1000},
                   "pids": {"limit": 5}, "hugepageLimits": []}


def test_resources_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO('{"pids": {"limit": 3}}'))
    assert resources_from_flags({"resources": "-"}) == {"pids": {"limit": 3}}


def test_resources_invalid_json_is_one_line_usage_error(tmp_path: Path) -> None:
    f = tmp_path / "bad.json"
    f.write_text('{"memory": {"limit": 1,}\n\n}')
    with pytest.raises(UsageError) as ei:
        resources_from_flags({"resources": str(f)})
    msg = str(ei.value)
    assert msg.startswith(f"--resources {f}: invalid JSON: ")
    assert "line 1" in msg
    assert "\n" not in msg


def test_resources_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as ei:
        resources_from_flags({"resources": str(tmp_path / "nope.json")})
    assert str(ei.value) == f"--resources {tmp_path / 'nope.json'}: No such file or directory"


def test_resources_file_must_be_an_object(tmp_path: Path) -> None:
    f = tmp_path / "list.json"
    f.write_text("[1, 2]")
    with pytest.raises(UsageError, match="must be a JSON object"):
        resources_from_flags({"resources": str(f)})


@pytest.mark.parametrize("flag", ["cpu-quota", "cpu-share", "pids-limit", "blkio-weight", "cpu-period"])
def test_bad_number(flag: str) -> None:
    with pytest.raises(UsageError) as ei:
        resources_from_flags({flag: "12x"})
    assert str(ei.value) == f"--{flag}: invalid number '12x'"


def test_bad_size_flag() -> None:
    with pytest.raises(UsageError, match=r"--memory-reservation: invalid size 'lots'"):
        resources_from_flags({"memory-reservation": "lots"})


@pytest.mark.parametrize("flag", ["l3-cache-schema", "mem-bw-schema"])
def test_rdt_flags_rejected(flag: str) -> None:
    with pytest.raises(UsageError, match="Intel RDT is not supported"):
        resources_from_flags({flag: "L3:0=f"})


# ------------------------------------------------------------------------------ exec_process


BASE_PROCESS: dict[str, Any] = {
    "terminal": True,
    "consoleSize": {"height": 24, "width": 80},
    "user": {"uid": 5, "gid": 6, "additionalGids": [7]},
    "args": ["sh"],
    "env": ["PATH=/bin", "TERM=xterm"],
    "cwd": "/home",
    "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]},
    "noNewPrivileges": False,
    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
}


class FakeRuntime:
    def __init__(self, process: dict[str, Any] | None = None) -> None:
        self.config: dict[str, Any] = {"ociVersion": OCI_VERSION,
                                       "process": json.loads(json.dumps(process or BASE_PROCESS))}
        self.loaded: list[str] = []

    def load(self, cid: str) -> tuple[State, str]:
        self.loaded.append(cid)
        return State.from_dict({"id": cid, "pid": 1, "config": self.config}), "running"


def test_exec_uses_container_process_with_new_args() -> None:
    rt = FakeRuntime()
    proc = exec_process(rt, "c1", {}, ["ls", "-l"])
    assert rt.loaded == ["c1"]
    assert proc["args"] == ["ls", "-l"]
    assert proc["terminal"] is False
    assert "consoleSize" not in proc
    assert proc["env"] == BASE_PROCESS["env"]
    assert proc["cwd"] == "/home"
    assert proc["user"] == BASE_PROCESS["user"]
    assert proc["rlimits"] == BASE_PROCESS["rlimits"]
    assert proc["noNewPrivileges"] is False


def test_exec_does_not_modify_the_stored_config() -> None:
    rt = FakeRuntime()
    exec_process(rt, "c1", {"env": ["X=1"], "cap": ["sys_admin"], "user": "1:2", "additional-gids": ["9"]},
                 ["true"])
    assert rt.config["process"] == BASE_PROCESS


def test_exec_overrides() -> None:
    rt = FakeRuntime()
    opts, pos = parse_flags(["-t", "-e", "A=1", "--env", "B=2", "--cwd", "/tmp", "-u", "1000:1001",
                             "--cap", "net_admin", "-c", "CAP_SYS_PTRACE", "--no-new-privs",
                             "c1", "sh", "-c", "id"], EXEC, "rune exec")
    proc = exec_process(rt, pos[0], opts, pos[1:])
    assert proc["args"] == ["sh", "-c", "id"]
    assert proc["terminal"] is True
    assert proc["env"] == ["PATH=/bin", "TERM=xterm", "A=1", "B=2"]
    assert proc["cwd"] == "/tmp"
    assert proc["user"]["uid"] == 1000
    assert proc["user"]["gid"] == 1001
    assert proc["user"]["additionalGids"] == [7]
    assert proc["noNewPrivileges"] is True
    for kind in ("bounding", "effective", "permitted"):
        assert proc["capabilities"][kind] == ["CAP_KILL", "CAP_NET_ADMIN", "CAP_SYS_PTRACE"]
    assert "CAP_NET_ADMIN" in proc["capabilities"]["ambient"]


def test_exec_cap_not_duplicated() -> None:
    proc = exec_process(FakeRuntime(), "c1", {"cap": ["kill", "CAP_KILL"]}, ["true"])
    assert proc["capabilities"]["bounding"] == ["CAP_KILL"]


def test_exec_user_without_gid_keeps_configured_gid() -> None:
    # runc (exec.go getProcess) only changes the gid when "uid:gid" is given
    proc = exec_process(FakeRuntime(), "c1", {"user": "1000"}, ["id"])
    assert proc["user"]["uid"] == 1000
    assert proc["user"]["gid"] == 6


def test_exec_additional_gids_are_appended_like_runc() -> None:
    # runc appends --additional-gids to process.user.additionalGids from config.json
    proc = exec_process(FakeRuntime(), "c1", {"additional-gids": ["10", "20"]}, ["id"])
    assert proc["user"]["additionalGids"] == [7, 10, 20]


def test_exec_user_bad_numbers() -> None:
    with pytest.raises(UsageError, match=r"--user: invalid number 'root'"):
        exec_process(FakeRuntime(), "c1", {"user": "root"}, ["id"])
    with pytest.raises(UsageError, match=r"--user: invalid number 'x'"):
        exec_process(FakeRuntime(), "c1", {"user": "1:x"}, ["id"])
    with pytest.raises(UsageError, match=r"--additional-gids: invalid number 'g'"):
        exec_process(FakeRuntime(), "c1", {"additional-gids": ["g"]}, ["id"])


def test_exec_without_command_or_process_file() -> None:
    rt = FakeRuntime()
    with pytest.raises(UsageError, match="requires a command"):
        exec_process(rt, "c1", {}, [])
    assert rt.loaded == []


def test_exec_container_without_config_process() -> None:
    rt = FakeRuntime()
    rt.config = {}
    proc = exec_process(rt, "c1", {"env": ["A=1"]}, ["true"])
    assert proc == {"args": ["true"], "terminal": False, "env": ["A=1"]}


def test_exec_process_file(tmp_path: Path) -> None:
    f = tmp_path / "process.json"
    f.write_text(json.dumps({"args": ["/bin/echo", "hi"], "cwd": "/", "env": ["A=1"], "terminal": False,
                             "user": {"uid": 0, "gid": 0}}))
    rt = FakeRuntime()
    proc = exec_process(rt, "c1", {"process": str(f), "env": ["B=2"]}, ["ignored"])
    assert rt.loaded == []  # the container's config is not consulted
    assert proc["args"] == ["/bin/echo", "hi"]
    assert proc["env"] == ["A=1", "B=2"]
    assert proc["terminal"] is False
    proc = exec_process(rt, "c1", {"process": str(f), "tty": True}, [])
    assert proc["terminal"] is True


def test_exec_process_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(UsageError) as ei:
        exec_process(FakeRuntime(), "c1", {"process": str(missing)}, [])
    assert str(ei.value) == f"--process {missing}: No such file or directory"
    bad = tmp_path / "bad.json"
    bad.write_text("{args: 1}")
    with pytest.raises(ConfigError) as ci:
        exec_process(FakeRuntime(), "c1", {"process": str(bad)}, [])
    assert ci.value.field == f"--process {bad}"
    assert ci.value.problem.startswith("invalid JSON: ")
    assert "\n" not in str(ci.value)
    arr = tmp_path / "arr.json"
    arr.write_text("[]")
    with pytest.raises(ConfigError, match="must be a JSON object"):
        exec_process(FakeRuntime(), "c1", {"process": str(arr)}, [])


# ------------------------------------------------------------------------------ main()


def _run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    for flag in ("--version", "-v", "-version"):
        rc, out, err = _run_main(capsys, flag)
        assert rc == 0
        assert err == ""
        lines = out.splitlines()
        assert len(lines) == 3
        assert lines[0] == f"rune version {__version__}"
        assert lines[1].startswith("commit: ")
        assert len(lines[1]) > len("commit: ")
        assert lines[2] == f"spec: {OCI_VERSION}"


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    # as runc: the global help flag shows the program's help even with a command after it
    for argv in (["--help"], ["-h"], [], ["help"], ["h"], ["--root", "/nonexistent"], ["-h", "create"],
                 ["--help", "frobnicate"]):
        rc, out, err = _run_main(capsys, *argv)
        assert rc == 0, argv
        assert err == ""
        assert out.startswith("NAME:\n   rune - ")
        assert "\nUSAGE:\n   rune [global options] command [command options] [arguments...]\n" in out
        commands = out.split("\nCOMMANDS:\n")[1].split("\n\n")[0].splitlines()
        assert [line.split()[0] for line in commands] == [*COMMANDS, "help,"]
        assert "\n   --systemd-cgroup " in out
        assert "\n   --help, -h " in out


def test_command_help(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["exec", "--help"], ["exec", "-h"], ["help", "exec"], ["exec", "-t", "-h"], ["exec", "-h=true"]):
        rc, out, err = _run_main(capsys, *argv)
        assert rc == 0, argv
        assert err == ""
        assert out.startswith("NAME:\n   rune exec - run a new process in a running container\n\n"
                              "USAGE:\n   rune exec [command options] <container-id> <command> [args...]\n\n"
                              "OPTIONS:\n")
        options = out.split("OPTIONS:\n")[1].splitlines()
        assert any(line.startswith("   --process value, -p value  ") for line in options), options
        assert any(line.startswith("   --tty, -t ") for line in options), options
        assert any(line.startswith("   --ignore-paused ") for line in options), options
        assert options[-1].startswith("   --help, -h ")


@pytest.mark.parametrize("argv", [
    ["create", "-h"], ["create", "--help"], ["create", "--bundle", "/b", "-h"], ["create", "x", "-h"],
    ["kill", "x", "--help"], ["delete", "--force", "-h"], ["--root", "/r", "state", "-h"],
])
def test_help_anywhere_in_a_command(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    # urfave/cli (runc) moves a command's flags that follow its arguments in front: `runc create ID -h` is help
    cmd = next(a for a in argv if a in COMMANDS)
    rc, out, err = _run_main(capsys, *argv)
    assert (rc, err) == (0, "")
    assert out.startswith(f"NAME:\n   rune {cmd} - ")


def test_exec_help_flag_after_the_command_belongs_to_the_command() -> None:
    opts, pos = parse_flags(["cid", "ls", "-h"], {**EXEC, "help": rune.HELP_FLAG}, "exec", reorder=False)
    assert opts == {} and pos == ["cid", "ls", "-h"]


def test_reorder_moves_known_flags_after_arguments() -> None:
    opts, pos = parse_flags(["cid", "--bundle", "/b", "-d"], COMMANDS["run"][0], "run", reorder=True)
    assert opts == {"bundle": "/b", "detach": True} and pos == ["cid"]
    # an unknown flag after an argument stays an argument (`kill ID -9` reaches the signal parser)
    opts, pos = parse_flags(["cid", "-9"], COMMANDS["kill"][0], "kill", reorder=True)
    assert opts == {} and pos == ["cid", "-9"]
    # before any argument it is still an error, and "--" still ends the flags
    with pytest.raises(UsageError, match="flag provided but not defined: -9"):
        parse_flags(["-9", "cid"], COMMANDS["kill"][0], "kill", reorder=True)
    opts, pos = parse_flags(["cid", "--", "--all"], COMMANDS["kill"][0], "kill", reorder=True)
    assert opts == {} and pos == ["cid", "--all"]


def _one_line_error(rc: int, out: str, err: str) -> str:
    assert rc == 1
    assert out == ""
    assert err.endswith("\n")
    assert err.count("\n") == 1, err
    assert err.startswith("rune: ")
    return err


def test_unknown_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # as runc (urfave/cli): "No help topic for 'foo'", exit status 3, with or without -h, and `help foo`
    for argv in (["frobnicate", "x"], ["frobnicate", "-h"], ["help", "frobnicate"]):
        rc, out, err = _run_main(capsys, "--root", str(tmp_path), *argv)
        assert (rc, out) == (3, ""), argv
        assert err == "rune: No help topic for 'frobnicate': unknown command (see `rune --help`)\n"


def test_unknown_command_flag(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = _one_line_error(*_run_main(capsys, "--root", str(tmp_path), "exec", "--bogus", "cid", "true"))
    assert "flag provided but not defined: -bogus" in err


def test_unknown_global_flag(capsys: pytest.CaptureFixture[str]) -> None:
    err = _one_line_error(*_run_main(capsys, "--bogus", "state", "x"))
    assert "flag provided but not defined: -bogus" in err


def test_usage_error_has_a_single_program_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    # DESIGN.md: CLIs print "<program>: <message>"; the program name must not be repeated
    err = _one_line_error(*_run_main(capsys, "--bogus", "state", "x"))
    assert not err.startswith("rune: rune"), err


def test_missing_global_flag_value(capsys: pytest.CaptureFixture[str]) -> None:
    err = _one_line_error(*_run_main(capsys, "--root"))
    assert "flag needs an argument: -root" in err


def test_log_format_xml(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = _one_line_error(*_run_main(capsys, "--root", str(tmp_path), "--log-format", "xml", "list"))
    assert err == "rune: invalid log-format: xml (text or json)\n"


def test_systemd_cgroup_rejected(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = _one_line_error(*_run_main(capsys, "--root", str(tmp_path), "--systemd-cgroup", "list"))
    assert err.startswith("rune: --systemd-cgroup: ")
    assert "cgroupfs" in err
    # explicitly false is accepted
    rc, out, err = _run_main(capsys, "--root", str(tmp_path), "--systemd-cgroup=false", "list", "-q")
    assert (rc, out, err) == (0, "", "")


def test_missing_container_id(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = _one_line_error(*_run_main(capsys, "--root", str(tmp_path), "state"))
    assert err == 'rune: "state" requires exactly 1 argument(s): <container-id>, got 0\n'


def test_state_of_missing_container(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = _one_line_error(*_run_main(capsys, "--root", str(tmp_path), "state", "nope"))
    assert err == f'rune: container does not exist: "nope" (no state under {tmp_path})\n'


def test_error_is_logged_as_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    log = tmp_path / "rune.log"
    rc, _out, err = _run_main(capsys, "--root", str(tmp_path), "--log", str(log), "--log-format", "json",
                              "state")
    assert rc == 1
    assert err == 'rune: "state" requires exactly 1 argument(s): <container-id>, got 0\n'
    lines = log.read_text().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert list(entry) == ["level", "msg", "time"]  # logrus: encoding/json sorts the keys
    assert entry["level"] == "error"
    assert entry["msg"] == '"state" requires exactly 1 argument(s): <container-id>, got 0'
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)", entry["time"])


def test_error_is_logged_as_text(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    log = tmp_path / "rune.log"
    rc, _out, _err = _run_main(capsys, "--root", str(tmp_path), "--log", str(log), "kill")
    assert rc == 1
    line = log.read_text()
    assert line.startswith("time=\"")
    assert line.endswith(' level=error msg="\\"kill\\" requires a minimum of 1 argument(s): '
                         '<container-id> [signal]"\n')


def test_list_empty_root(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, err = _run_main(capsys, "--root", str(tmp_path / "none"), "list")
    assert rc == 0
    assert err == ""
    assert out.split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    rc, out, _ = _run_main(capsys, "--root", str(tmp_path / "none"), "list", "--format", "json")
    assert rc == 0
    assert json.loads(out) == []
    err = _one_line_error(*_run_main(capsys, "--root", str(tmp_path), "list", "-f", "yaml"))
    assert "invalid format 'yaml'" in err


def test_spec_writes_config_once(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, _out, err = _run_main(capsys, "spec", "-b", str(tmp_path))
    assert (rc, err) == (0, "")
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["ociVersion"] == OCI_VERSION
    assert cfg["process"]["args"]
    err = _one_line_error(*_run_main(capsys, "spec", "--bundle", str(tmp_path)))
    assert "already exists" in err


def test_features_is_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, err = _run_main(capsys, "--root", str(tmp_path), "features")
    assert (rc, err) == (0, "")
    assert isinstance(json.loads(out), dict)


def test_update_bad_resources_file_via_main(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "r.json"
    f.write_text("{nope")
    err = _one_line_error(*_run_main(capsys, "--root", str(tmp_path), "update", "-r", str(f), "cid"))
    assert f"--resources {f}: invalid JSON" in err


def test_prog_name() -> None:
    assert rune.PROG == "rune"
