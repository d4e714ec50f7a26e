from inclavare.errors import InclavareError


class VerdictdError(InclavareError):
    """verdictd: a request, configuration or stored state is not acceptable; the message says what."""
