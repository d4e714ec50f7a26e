"""verdictd's error type: every refusal or failure carries a one-line message naming what and where."""

from inclavare.errors import InclavareError


class VerdictdError(InclavareError):
    """verdictd cannot do what was asked; the message says what and where."""
