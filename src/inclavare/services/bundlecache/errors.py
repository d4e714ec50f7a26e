from inclavare.errors import InclavareError


class BundleCacheError(InclavareError):
    """The bundle cache: a key input, the cache directory, its index or a built entry is not acceptable."""
