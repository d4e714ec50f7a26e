"""The append-only, fsync'd JSON-lines audit log: a signature is returned only once its line is on disk."""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from inclavare.services.signature_server.common import SignatureServerError

# --------------------------------------------------------------------------------------------------
# Audit log


class AuditLog:
    """Append-only JSON lines; each :meth:`write` returns once its line is fsync'd."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise SignatureServerError(f"audit log {path}: {e.strerror}") from None
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
        with self._lock:
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view):]
        os.fsync(self._fd)  # outside the lock: one fsync covers every line written before it

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
