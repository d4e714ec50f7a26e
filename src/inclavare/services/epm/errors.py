"""epm's error type: every refusal is one of these, with a one-line reason naming what and where."""

from inclavare.errors import InclavareError


class EpmError(InclavareError):
    """A refused request, a bad configuration or a store failure; ``code`` is the gRPC status name it maps to."""

    def __init__(self, message: str, code: str = "INVALID_ARGUMENT") -> None:
        super().__init__(message)
        self.code = code
