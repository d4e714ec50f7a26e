"""What the confidential-VM guest attesters (SEV-SNP, TDX) share: the choice between configfs-tsm and the
guest device, and the probe that says why neither is there."""

from __future__ import annotations

import os
from typing import ClassVar

from inclavare.ratls.attesters.base import Attester, AttesterError, IoctlFn
from inclavare.ratls.attesters.ioctls import default_ioctl
from inclavare.ratls.attesters.tsm import ConfigfsTsm


class GuestAttester(Attester):
    """An attester that asks configfs-tsm (when its provider is this TEE's) or the guest device. Subclasses set
    ``methods`` (``auto`` and ``configfs`` first, then the device's ways), ``tsm_provider``, ``device_path``,
    ``device_env`` (the variable that overrides the path) and ``guest`` (for messages: "an SEV-SNP guest")."""

    methods: ClassVar[tuple[str, ...]] = ("auto", "configfs")
    tsm_provider: ClassVar[str] = ""
    device_path: ClassVar[str] = ""
    device_env: ClassVar[str] = ""
    guest: ClassVar[str] = ""

    def __init__(self, *, method: str = "auto", tsm: ConfigfsTsm | None = None, device: str | None = None,
                 ioctl: IoctlFn | None = None) -> None:
        if method not in self.methods:
            raise AttesterError(f"{self.name}: method {method!r} is not one of {', '.join(self.methods)}")
        self.method = method
        self.tsm = tsm or ConfigfsTsm()
        self.device = device or os.environ.get(self.device_env) or self.device_path
        self.ioctl = ioctl or default_ioctl

    def _use_configfs(self) -> bool:
        return self.method == "configfs" or (self.method == "auto" and self.tsm.provider() == self.tsm_provider)

    def unavailable_reason(self) -> str | None:
        if self.method in ("auto", "configfs") and self.tsm.provider() == self.tsm_provider:
            return None
        if self.method != "configfs" and os.path.exists(self.device):
            return None
        parts = []
        if self.method in ("auto", "configfs"):
            name = self.tsm.provider()
            parts.append(f"configfs-tsm: {f'the provider is {name!r}' if name else self.tsm.probe_error()}")
        if self.method != "configfs":
            parts.append(f"{self.device} does not exist")
        return f"not {self.guest}: " + "; ".join(parts)
