"""The device plugin's error type."""

from __future__ import annotations

from inclavare.errors import InclavareError


class DevicePluginError(InclavareError):
    """The SGX device plugin cannot start or serve (bad flag value, unreadable platform facts, unusable socket
    directory); the message is one line naming what and where."""
