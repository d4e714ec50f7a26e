"""runtime/process.py without root: user lookup, executable resolution, rlimits (in a forked child)."""

from __future__ import annotations

import builtins
import json
import os
import resource
from pathlib import Path
from typing import Any

import pytest

from inclavare.errors import ConfigError, InclavareError
from inclavare.runtime import process as pr

DEFAULT_PATH_DIRS = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
# a comment line
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
broken line without fields
weird:x:notanumber:0::/weird:/bin/sh
alice:x:1000:1000:Alice,,,:/home/alice:/bin/sh
al:x:1001:1001::/home/al:/bin/sh
nohome:x:1002:1002
"""

GROUP = """\
root:x:0:
wheel:x:10:root,alice
audio:x:29:bob,alice
alice:x:1000:
als:x:1001:al
bad:x:zz:alice
short:x:30
video:x:44:alice,carol
"""


@pytest.fixture
def etc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Point the module's open() of /etc/passwd and /etc/group at tmp files."""
    files = {"/etc/passwd": tmp_path / "passwd", "/etc/group": tmp_path / "group"}
    files["/etc/passwd"].write_text(PASSWD)
    files["/etc/group"].write_text(GROUP)
    real_open = builtins.open

    def fake_open(path: Any, *args: Any, **kw: Any) -> Any:
        if path in files:
            return real_open(files[path], *args, **kw)
        return real_open(path, *args, **kw)

    monkeypatch.setattr(pr, "open", fake_open, raising=False)
    return files


def test_lookup_known_user(etc: dict[str, Path]) -> None:
    home, groups = pr.lookup_user(1000, 1000, [])
    assert home == "/home/alice"
    assert groups == [10, 29, 44]  # member groups in /etc/group order; "bad" has a non-numeric gid


def test_lookup_root(etc: dict[str, Path]) -> None:
    assert pr.lookup_user(0, 0, []) == ("/root", [10])


def test_lookup_adds_extra_gids_without_duplicates(etc: dict[str, Path]) -> None:
    home, groups = pr.lookup_user(1000, 1000, [44, 5, 5, 10, 7])
    assert home == "/home/alice"
    assert groups == [10, 29, 44, 5, 7]


def test_lookup_name_must_match_exactly(etc: dict[str, Path]) -> None:
    # "al" is not "alice", and "als" is a group name, not a member
    assert pr.lookup_user(1001, 1001, []) == ("/home/al", [1001])


def test_lookup_unknown_uid(etc: dict[str, Path]) -> None:
    assert pr.lookup_user(4242, 4242, [3, 3]) == (None, [3])


def test_lookup_skips_short_passwd_lines(etc: dict[str, Path]) -> None:
    assert pr.lookup_user(1002, 1002, []) == (None, [])


def test_lookup_without_passwd(etc: dict[str, Path]) -> None:
    etc["/etc/passwd"].unlink()
    assert pr.lookup_user(1000, 1000, [9]) == (None, [9])


def test_lookup_without_group(etc: dict[str, Path]) -> None:
    etc["/etc/group"].unlink()
    assert pr.lookup_user(1000, 1000, [9]) == ("/home/alice", [9])


def test_lookup_reads_only_the_two_files(etc: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    inner = pr.open  # type: ignore[attr-defined]

    def spy(path: Any, *a: Any, **kw: Any) -> Any:
        seen.append(str(path))
        return inner(path, *a, **kw)

    monkeypatch.setattr(pr, "open", spy, raising=False)
    pr.lookup_user(1000, 1000, [])
    assert seen == ["/etc/passwd", "/etc/group"]
    seen.clear()
    pr.lookup_user(4242, 0, [])
    assert seen == ["/etc/passwd"]  # no name, no group scan


# ------------------------------------------------------------------------------ find_executable


def _exe(path: Path, mode: int = 0o755) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(mode)
    return path


def _config_error(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    assert exc.value.field == "process.args[0]"
    return exc.value.problem


def test_search_uses_path_from_env(tmp_path: Path) -> None:
    _exe(tmp_path / "a" / "tool", 0o644)  # not executable: skipped
    (tmp_path / "b" / "tool").mkdir(parents=True)  # a directory: skipped
    good = _exe(tmp_path / "c" / "tool")
    _exe(tmp_path / "d" / "tool")
    env = ["HOME=/", f"PATH={tmp_path / 'a'}:{tmp_path / 'b'}:{tmp_path / 'missing'}:{tmp_path / 'c'}:"
           f"{tmp_path / 'd'}"]
    assert pr.find_executable("tool", env, "/") == str(good)


def test_last_path_entry_in_env_wins(tmp_path: Path) -> None:
    _exe(tmp_path / "one" / "t")
    two = _exe(tmp_path / "two" / "t")
    assert pr.find_executable("t", [f"PATH={tmp_path / 'one'}", f"PATH={tmp_path / 'two'}"], "/") == str(two)


def test_default_path_when_env_has_none() -> None:
    found = pr.find_executable("sh", ["TERM=xterm"], "/")
    assert os.path.basename(found) == "sh"
    assert os.path.dirname(found) in DEFAULT_PATH_DIRS
    assert os.access(found, os.X_OK)


def test_empty_path_entry_means_current_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _exe(tmp_path / "here")
    monkeypatch.chdir(tmp_path)
    assert pr.find_executable("here", [f"PATH={tmp_path / 'nothing'}::"], "/") == "./here"


def test_symlink_in_path_is_followed(tmp_path: Path) -> None:
    real = _exe(tmp_path / "real" / "prog")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "alias").symlink_to(real)
    assert pr.find_executable("alias", [f"PATH={tmp_path / 'bin'}"], "/") == str(tmp_path / "bin" / "alias")


def test_not_in_path(tmp_path: Path) -> None:
    _exe(tmp_path / "x" / "prog", 0o600)
    with pytest.raises(ConfigError) as ei:
        pr.find_executable("prog", [f"PATH={tmp_path / 'x'}"], "/")
    assert _config_error(ei) == 'exec: "prog": executable file not found in $PATH'
    # runc's words: docker and podman turn them into exit status 127
    assert str(ei.value) == 'unable to start container process: exec: "prog": executable file not found in $PATH'


def test_absolute_path(tmp_path: Path) -> None:
    p = _exe(tmp_path / "abs")
    assert pr.find_executable(str(p), ["PATH=/nonexistent"], "/elsewhere") == str(p)


def test_relative_path_is_joined_to_cwd(tmp_path: Path) -> None:
    p = _exe(tmp_path / "work" / "bin" / "run.sh")
    work = str(tmp_path / "work")
    assert pr.find_executable("./bin/run.sh", [], work) == os.path.join(work, "./bin/run.sh")
    assert os.path.samefile(pr.find_executable("bin/run.sh", [], str(tmp_path / "work")), p)


def test_explicit_path_not_executable(tmp_path: Path) -> None:
    p = _exe(tmp_path / "data.txt", 0o644)
    with pytest.raises(ConfigError) as ei:
        pr.find_executable(str(p), [], "/")
    assert _config_error(ei) == f'exec: "{p}": permission denied'


def test_explicit_path_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir(mode=0o755)
    with pytest.raises(ConfigError) as ei:
        pr.find_executable("./dir", [], str(tmp_path))
    assert _config_error(ei) == 'exec: "./dir": permission denied'


def test_explicit_path_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        pr.find_executable("/no/such/prog", [], "/")
    # Go's PathError text, as runc prints it
    assert _config_error(ei) == 'exec: "/no/such/prog": stat /no/such/prog: no such file or directory'
    with pytest.raises(ConfigError) as ei:
        pr.find_executable("rel/prog", [], str(tmp_path))
    assert _config_error(ei) == 'exec: "rel/prog": stat rel/prog: no such file or directory'
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError) as ei:
        pr.find_executable("file/prog", [], str(tmp_path))
    assert _config_error(ei) == 'exec: "file/prog": stat file/prog: not a directory'


def test_finalizer_resolve_and_errors(tmp_path: Path) -> None:
    p = _exe(tmp_path / "bin" / "app")
    f = pr.Finalizer({"args": ["app", "-x"], "env": [f"PATH={tmp_path / 'bin'}"], "cwd": "/"}, None)
    f.resolve()
    assert f.path == str(p)
    with pytest.raises(ConfigError) as ei:
        pr.Finalizer({"args": []}, None).resolve()
    assert ei.value.field == "process.args"
    with pytest.raises(ConfigError) as ei:
        pr.Finalizer({"args": ["true"], "cwd": str(tmp_path / "gone")}, None).chdir()
    assert str(ei.value) == ('unable to start container process: '
                             f'chdir to cwd ("{tmp_path / "gone"}") set in config.json failed: '
                             'no such file or directory')
    # the early chdir fails at once for anything but a permission error, which waits for chdir()
    with pytest.raises(ConfigError, match="no such file or directory"):
        pr.Finalizer({"args": ["true"], "cwd": str(tmp_path / "gone")}, None).chdir_early()


def test_env_dict_last_wins_and_keeps_equals() -> None:
    assert pr._env_dict(["A=1", "B=x=y", "A=2", "EMPTY=", "NOEQ"]) == {"A": "2", "B": "x=y", "EMPTY": "", "NOEQ": ""}


# ------------------------------------------------------------------------------ set_rlimits


def _in_child(fn: Any) -> dict[str, Any]:
    """Run fn() in a forked child; return what it returned (a JSON-able dict) or the error it raised."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            out = {"ok": fn()}
        except InclavareError as e:
            out = {"error": str(e), "type": type(e).__name__, "errno": getattr(e, "errno", None)}
        except BaseException as e:
            out = {"error": repr(e), "type": type(e).__name__}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(data)  # type: ignore[no-any-return]


def test_set_rlimits_lowers_nofile_in_child() -> None:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft = min(64, before[0])

    def child() -> list[int]:
        pr.set_rlimits([{"type": "RLIMIT_NOFILE", "soft": soft, "hard": before[1]}])
        return list(resource.getrlimit(resource.RLIMIT_NOFILE))

    assert _in_child(child) == {"ok": [soft, before[1]]}
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == before  # the test process is untouched


def test_set_rlimits_several_types_in_child() -> None:
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    core = resource.getrlimit(resource.RLIMIT_CORE)

    def child() -> list[list[int]]:
        pr.set_rlimits([{"type": "RLIMIT_CORE", "soft": 0, "hard": core[1]},
                        {"type": "RLIMIT_NOFILE", "soft": 32, "hard": nofile[1]}])
        return [list(resource.getrlimit(resource.RLIMIT_CORE)), list(resource.getrlimit(resource.RLIMIT_NOFILE))]

    assert _in_child(child) == {"ok": [[0, core[1]], [32, nofile[1]]]}


def test_set_rlimits_soft_above_hard_is_a_sys_error() -> None:
    def child() -> None:
        pr.set_rlimits([{"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
                        {"type": "RLIMIT_NOFILE", "soft": 20, "hard": 10}])

    out = _in_child(child)
    assert out["type"] == "SysError"
    assert out["error"].startswith("process.rlimits[1] (RLIMIT_NOFILE): setrlimit 20:10: ")
    assert "\n" not in out["error"]


def test_set_rlimits_noop() -> None:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    pr.set_rlimits(None)
    pr.set_rlimits([])
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == before


def test_write_oom_score_adj_error_names_field() -> None:
    with pytest.raises(InclavareError) as ei:
        pr.write_oom_score_adj(100, pid="999999999")
    assert str(ei.value).startswith("process.oomScoreAdj: writing 100: ")
    pr.write_oom_score_adj(None, pid="999999999")  # nothing requested, nothing written

