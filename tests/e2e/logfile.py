"""A process the suite started (registry, Neon gateway, Skynet portal): reading its log file, and
stopping it (SIGTERM, then SIGKILL if it lingers)."""

from __future__ import annotations

import select
import signal
import subprocess
from pathlib import Path
from typing import IO, Optional


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


class ChildProcess(LogFile):
    """Mixin for objects with a ``proc`` (``subprocess.Popen`` or ``None``) writing to ``_log``."""

    proc: Optional[subprocess.Popen]
    _log: Optional[IO[bytes]]

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _spawn_announcing(self, cmd: list[str], cwd: Path, timeout: float) -> str:
        """Starts ``cmd`` (stderr to the log, in a session of its own) and returns the first line
        it prints on stdout, where our stand-ins announce their address ("" if none in time)."""
        self._log = open(self.log_path, "ab")
        self._log.write(f"\n===== e2e: {' '.join(cmd)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._log, cwd=cwd, start_new_session=True)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline().decode().strip() if ready else ""

    def stop(self, timeout: float = 10.0) -> Optional[int]:
        """SIGTERM (SIGKILL if it lingers); its exit code. What it keeps on disk and the port it
        had stay for the next start()."""
        if self.proc is None:
            return None
        self._terminate(timeout)
        self._close_log()
        return self.proc.returncode

    def _terminate(self, timeout: float) -> bool:
        """SIGTERM and wait; SIGKILL if it does not exit within ``timeout``. True if it was killed."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
            return False
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return True

    def _close_log(self) -> None:
        """Closes the log file and the process's stdout pipe, if any."""
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None
