"""Codemod: import `inclavare._fastos` under its own name (`fos`) instead of `as os`.

`from inclavare import _fastos as os` made readers believe they were reading the real `os`. This rewrites
the import and every `os.` use in the modules that have it (and `<module>.os` in the tests that patch
them). Idempotent; re-run it after merging branches that still use the old import:

    python3 tools/rename_fastos.py src tests
"""

import pathlib
import re
import sys

OLD = "from inclavare import _fastos as os"
NEW = "from inclavare import _fastos as fos"
USE = re.compile(r"(?<![\w.])os\.")


def main(roots: list[str]) -> int:
    renamed = [p for r in roots for p in sorted(pathlib.Path(r).rglob("*.py"))
               if p.name != "_fastos.py" and OLD in p.read_text()]
    names = {p.stem for p in renamed}
    for p in renamed:
        text = p.read_text().replace(OLD, NEW)
        p.write_text(USE.sub("fos.", text))
        print(p)
    # tests that patch a renamed module's `os` attribute, e.g. monkeypatch.setattr(init.os, ...)
    attr = re.compile(r"\b(" + "|".join(sorted(names)) + r")\.os\b") if names else None
    for r in roots:
        for p in sorted(pathlib.Path(r).rglob("*.py")):
            text = p.read_text()
            new = attr.sub(r"\1.fos", text) if attr else text
            if new != text:
                p.write_text(new)
                print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["src", "tests"]))
