"""cli/runelog.py: log lines exactly as runc writes them through logrus (json and text), without root."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inclavare.cli import runelog
from inclavare.cli.rune import main
from inclavare.errors import InclavareError

T0 = 1796549629.75  # 2026-12-06T09:33:49.75Z


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_json_line_as_logrus_writes_it(utc: None) -> None:
    # measured with runc 1.1.5: {"level":"error","msg":"container does not exist","time":"2026-12-06T09:33:49Z"}
    line = runelog.format_line("json", "error", "container does not exist", now=T0)
    assert line == '{"level":"error","msg":"container does not exist","time":"2026-12-06T09:33:49Z"}'


def test_json_fields_are_sorted_and_html_characters_escaped(utc: None) -> None:
    # encoding/json sorts map keys and escapes <, >, & (runc's debug lines show "=\u003e")
    line = runelog.format_line("json", "warning", "a -> b & <c>", {"error": "rmdir x: busy"}, now=T0)
    assert line == ('{"error":"rmdir x: busy","level":"warning","msg":"a -\\u003e b \\u0026 \\u003cc\\u003e",'
                    '"time":"2026-12-06T09:33:49Z"}')
    assert json.loads(line)["msg"] == "a -> b & <c>"
    assert list(json.loads(line)) == ["error", "level", "msg", "time"]


def test_json_keeps_utf8_and_escapes_line_separators(utc: None) -> None:
    line = runelog.format_line("json", "error", "caf\u00e9 \u2028", now=T0)
    assert '"msg":"caf\u00e9 \\u2028"' in line


def test_text_line_as_logrus_writes_it(utc: None) -> None:
    # measured with runc 1.1.5: time="2026-12-06T09:33:49Z" level=error msg="container does not exist"
    line = runelog.format_line("text", "error", "container does not exist", now=T0)
    assert line == 'time="2026-12-06T09:33:49Z" level=error msg="container does not exist"'


def test_text_quotes_only_when_needed_as_go_does(utc: None) -> None:
    line = runelog.format_line("text", "warning", "plain-word_1.2/x@y^z+", {"error": 'say "hi"\n\tbye\\'}, now=T0)
    assert line == ('time="2026-12-06T09:33:49Z" level=warning msg=plain-word_1.2/x@y^z+ '
                    'error="say \\"hi\\"\\n\\tbye\\\\"')
    assert runelog.format_line("text", "info", "", now=T0).endswith(" msg=")


def test_go_quote_control_and_unicode() -> None:
    assert runelog.go_quote("a\x01b\x7f") == '"a\\x01b\\x7f"'
    assert runelog.go_quote("caf\u00e9") == '"caf\u00e9"'
    assert runelog.go_quote("\u00a0") == '"\\u00a0"'  # not printable for Go either


def test_time_offset_outside_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        assert runelog.rfc3339_now(T0) == "2026-12-06T15:03:49+05:30"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_invalid_format() -> None:
    with pytest.raises(InclavareError, match=r"^invalid log-format: xml \(text or json\)$"):
        runelog.Logger(None, "xml", False)


def test_relative_log_path_is_fixed_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `create` changes into the bundle before it fails: the log must still land where it was asked for
    monkeypatch.chdir(tmp_path)
    log = runelog.Logger("log.json", "json", False)
    (tmp_path / "bundle").mkdir()
    os.chdir(tmp_path / "bundle")
    log("error", "boom")
    assert json.loads((tmp_path / "log.json").read_text())["msg"] == "boom"
    assert not (tmp_path / "bundle" / "log.json").exists()


def test_debug_lines_only_with_debug(tmp_path: Path) -> None:
    quiet = runelog.Logger(str(tmp_path / "q.log"), "text", False)
    quiet("debug", "not written")
    quiet("info", "written")
    assert [re.search(r"msg=(\S+)", x).group(1) for x in (tmp_path / "q.log").read_text().splitlines()] == ["written"]  # type: ignore[union-attr]
    loud = runelog.Logger(str(tmp_path / "d.log"), "json", True)
    loud("debug", "written")
    assert json.loads((tmp_path / "d.log").read_text())["level"] == "debug"


def test_without_log_file_lines_go_to_stderr_but_not_the_error(capfd: pytest.CaptureFixture[str]) -> None:
    log = runelog.Logger(None, "text", True)
    log("warning", "w")
    log("debug", "d")
    log("error", "e")  # the CLI prints it as "rune: e"
    err = capfd.readouterr().err.splitlines()
    assert err[0] == "rune: warning: w"  # the project's CLI form for warnings
    assert re.fullmatch(r'time="[^"]+" level=debug msg=d', err[1])  # debug lines as runc writes them
    assert len(err) == 2


def _main(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capfd.readouterr()
    return rc, out, err


def test_error_goes_to_stderr_and_to_the_log(capfd: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # as runc with --log: the error line in the file (containerd reads the last level=error one) and the
    # message on stderr
    log = tmp_path / "log.json"
    rc, out, err = _main(capfd, "--root", str(tmp_path), "--log", str(log), "--log-format", "json", "kill", "gone")
    assert (rc, out) == (1, "")
    msg = f'container does not exist: "gone" (no state under {tmp_path})'
    assert err == f"rune: {msg}\n"
    entries = [json.loads(x) for x in log.read_text().splitlines()]
    assert [(e["level"], e["msg"]) for e in entries] == [("error", msg)]


def test_debug_goes_to_the_log_not_stderr(capfd: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    rc, out, err = _main(capfd, "--root", str(tmp_path), "--debug", "--log", str(log), "--log-format", "json",
                         "list", "-q")
    assert (rc, out, err) == (0, "", "")
    entries = [json.loads(x) for x in log.read_text().splitlines()]
    assert entries and all(e["level"] == "debug" for e in entries)
    assert entries[0]["msg"] == "rune list"


def test_no_log_lines_without_debug_on_success(capfd: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # go-runc reads `state` and `ps` with stderr and stdout together: nothing may be added on success
    log = tmp_path / "log.json"
    rc, out, err = _main(capfd, "--root", str(tmp_path), "--log", str(log), "list", "-q")
    assert (rc, out, err) == (0, "", "")
    assert not log.exists()
