"""What every argparse-based program of this package does the same way: flag errors raised as
:class:`~inclavare.errors.UsageError`, and a ``main`` that turns an error into one ``PROG: message`` line.

The programs share code through this module and its siblings (``_inputs``, ``_verify``, ``_ratstls``), never
by importing one another (issue 13)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, NoReturn

from inclavare.errors import InclavareError, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose flag errors are a UsageError (one line, the program's exit status) rather than
    argparse's usage text and exit 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def run_program(prog: str, parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int],
                argv: Sequence[str] | None = None, *, error_status: int = 1, usage_status: int | None = None) -> int:
    """Parse ``argv`` (default: the process's arguments) and return what ``run`` returns. An InclavareError
    becomes ``PROG: message`` on stderr (after what was printed on stdout) and ``error_status`` (a bad flag,
    UsageError, ``usage_status`` if given: the daemons exit 2 as Go's flag package does); Ctrl-C exits 130 and
    a closed stdout (BrokenPipeError) 1, without a traceback."""
    try:
        return run(parser.parse_args(list(sys.argv[1:] if argv is None else argv)))
    except UsageError as e:
        sys.stderr.write(f"{prog}: {e}\n")
        return error_status if usage_status is None else usage_status
    except InclavareError as e:
        try:
            sys.stdout.flush()  # the error line comes after the program's output
        except OSError:
            pass
        sys.stderr.write(f"{prog}: {e}\n")
        return error_status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
