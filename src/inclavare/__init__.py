"""Inclavare Containers: confidential containers, rebuilt in Python."""

__version__ = "0.1.0"
# The OCI runtime-spec version whose config.json we accept and whose state JSON we write.
OCI_VERSION = "1.1.0"
