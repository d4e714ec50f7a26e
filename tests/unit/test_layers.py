"""The layer rules (DESIGN.md "Layers", issue 13), checked from the source: which package may import which.

Each package's ``__init__`` docstring says what it owns and what it may import; this test holds the code to the
same table. Imports are read with ``ast`` from every module, including imports inside functions (the lazy ones
count too: a lazy import still ties the layers together).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "inclavare"

# Modules at the top of the package that every layer may use: errors, small OS helpers, version constants.
BASE = {"errors", "_fastos", "atomicfile", "sockio", "_build", "__init__"}

ALLOWED: dict[str, set[str]] = {
    "formats": set(),
    "linux": {"formats"},
    "runtime": {"linux", "formats"},
    "sgx": {"formats"},
    "sim": {"formats"},
    # an enclave runtime attests from inside: the sim runtime serves RATS-TLS with its own quotes (info_server);
    # it reads the container's files on the host side through the syscall layer's rootfs resolver (secure_join)
    "enclave": {"runtime", "linux", "formats", "sgx", "sim", "ratls"},
    "attestation": {"formats"},
    # attesters produce evidence through the platform packages below them (sgx: AESM/DCAP, sim: the sim TEE)
    "ratls": {"attestation", "formats", "sgx", "sim"},
    "services": {"formats", "linux", "runtime", "sgx", "sim", "enclave", "attestation", "ratls"},
    "shim": {"formats", "linux", "runtime", "sgx", "sim", "enclave", "attestation", "ratls", "services"},
    "cli": {"formats", "linux", "runtime", "sgx", "sim", "enclave", "attestation", "ratls", "services", "shim"},
    "testing": {"formats", "linux", "runtime", "sgx", "sim", "enclave", "attestation", "ratls", "services",
                "shim"},
}
# Base modules may use only each other and formats' pure codecs.
ALLOWED_BASE = {"formats"}


def _imports(path: Path) -> set[str]:
    """The ``inclavare.X`` packages/modules a file imports (X only)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "inclavare":  # a submodule, or a name defined in inclavare/__init__.py
                out.update(alias.name if (SRC / alias.name).is_dir() or (SRC / f"{alias.name}.py").exists()
                           else "__init__" for alias in node.names)
            elif node.module.startswith("inclavare."):
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("inclavare."))
    return out


def _layer_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def test_every_package_imports_only_the_layers_below_it() -> None:
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        layer = _layer_of(path)
        allowed = ALLOWED_BASE if layer in BASE else ALLOWED.get(layer)
        assert allowed is not None, f"{path.relative_to(SRC)}: package {layer!r} is not in the layer table"
        for target in _imports(path) - {layer} - BASE:
            if target not in allowed:
                problems.append(f"{path.relative_to(SRC)} imports inclavare.{target} ({layer} may import "
                                f"{', '.join(sorted(allowed)) or 'nothing of ours'})")
    assert not problems, "\n".join(problems)


def test_the_table_has_no_cycles() -> None:
    seen: dict[str, int] = {}

    def visit(layer: str, stack: tuple[str, ...]) -> None:
        assert layer not in stack, f"cycle: {' -> '.join((*stack, layer))}"
        if seen.get(layer):
            return
        for lower in ALLOWED.get(layer, ()):
            visit(lower, (*stack, layer))
        seen[layer] = 1

    for layer in ALLOWED:
        visit(layer, ())


def test_each_package_says_what_it_owns_and_may_import() -> None:
    for package in sorted(p for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""
        assert "May import" in doc, f"{package.name}/__init__.py: no docstring naming what it may import"


# Cross-cutting tests that stay at the top of tests/unit: the base module, the layer table, the fuzz targets.
TOP_LEVEL_TESTS = {"test_fastos.py", "test_layers.py", "test_fuzz.py"}


def test_unit_tests_mirror_the_source_layers() -> None:
    """tests/unit/<layer>/ for each package; a new test file at the top (or in a folder no package has) fails."""
    here = Path(__file__).resolve().parent
    folders = {p.name for p in here.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders <= set(ALLOWED), f"test folders without a source package: {sorted(folders - set(ALLOWED))}"
    stray = {p.name for p in here.glob("test_*.py")} - TOP_LEVEL_TESTS
    assert not stray, f"unit tests outside a layer folder: {sorted(stray)}"
    for folder in folders:
        assert (here / folder / "__init__.py").is_file(), f"tests/unit/{folder} lacks __init__.py"
