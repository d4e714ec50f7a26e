"""Every CLI raises the one UsageError of inclavare.errors (it was defined five times)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from inclavare import errors
from inclavare.cli import rats_tls_client, rats_tls_server, rune, runecmds, sgx_tools, shelter, signature_server
from inclavare.cli._common import Parser, run_program

SRC = Path(__file__).resolve().parents[3] / "src" / "inclavare"


def test_one_usage_error_for_every_cli() -> None:
    for module in (rats_tls_client, rats_tls_server, rune, runecmds, sgx_tools, shelter, signature_server):
        assert module.UsageError is errors.UsageError, module.__name__
    assert issubclass(rune.UnknownCommand, errors.UsageError)
    assert errors.UsageError.exit_code == 1 and rune.UnknownCommand.exit_code == 3


def test_no_module_defines_its_own_usage_error() -> None:
    defined = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
               for node in ast.walk(ast.parse(p.read_text()))
               if isinstance(node, ast.ClassDef) and node.name == "UsageError"]
    assert defined == ["errors.py"]


def test_formats_oci_does_no_file_io() -> None:
    tree = ast.parse((SRC / "formats" / "oci.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom) for a in n.names}
    called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert "os" not in imported and "_fastos" not in imported
    assert "open" not in called


def test_programs_share_code_only_through_the_private_modules() -> None:
    """Issue 13: a program module imports another program only within its own family (rune's split modules);
    what two programs share lives in a cli/_*.py module."""
    problems = []
    for path in sorted((SRC / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module == "inclavare.cli":
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("inclavare.cli."):
                names = [(node.module or "").split(".")[2]]
            for name in names:
                if not name.startswith("_") and not (name.startswith("rune") and path.stem.startswith("rune")):
                    problems.append(f"cli/{path.name} imports inclavare.cli.{name}")
    assert not problems, "\n".join(problems)


def test_run_program_turns_errors_into_one_line_and_a_status(capsys: pytest.CaptureFixture[str]) -> None:
    def fail(a: object) -> int:
        print("partial output")
        raise errors.InclavareError("--x y: broken")

    def interrupted(a: object) -> int:
        raise KeyboardInterrupt

    parser = Parser(prog="prog")
    parser.add_argument("--n", type=int)
    assert run_program("prog", parser, fail, [], error_status=2) == 2
    out, err = capsys.readouterr()
    assert out == "partial output\n" and err == "prog: --x y: broken\n"
    assert run_program("prog", parser, lambda a: a.n, ["--n", "7"]) == 7
    assert run_program("prog", parser, lambda a: 0, ["--n", "seven"]) == 1  # a flag error: UsageError, one line
    assert capsys.readouterr().err.count("\n") == 1
    assert run_program("prog", parser, interrupted, []) == 130
