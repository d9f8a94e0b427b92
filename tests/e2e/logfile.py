"""Reading the log file of a process the suite started (registry, Neon gateway, Skynet portal)."""

from __future__ import annotations

from pathlib import Path


class LogFile:
    """Mixin for objects with a ``log_path``: size, the part written since an offset, the tail."""

    log_path: Path

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int, limit: int = 30000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except OSError:
            return ""
        if len(data) > limit:
            data = b"[... cut ...]\n" + data[-limit:]
        return data.decode("utf-8", "replace")

    def log_tail(self, limit: int = 8000) -> str:
        return self.log_since(max(0, self.log_size() - limit), limit)
