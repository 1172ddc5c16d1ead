"""A one-line progress display on stderr, for terminals only."""

from __future__ import annotations

import sys
import time


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


class ProgressLine:
    """Redraws one status line at most ten times a second; does nothing when disabled."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._width = 0
        self.done = 0

    def advance(self, count: int) -> None:
        """Count count more bytes done (for work whose total is not known up front)."""
        self.done += count
        self.update(self.done, None)

    def update(self, done_bytes: int, total_bytes: int | None, files: str = "", force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        elapsed = max(now - self.started, 1e-6)
        rate = f"{human_bytes(done_bytes / elapsed)}/s"
        if total_bytes:
            fraction = min(done_bytes / total_bytes, 1.0)
            bar = "#" * int(fraction * 30)
            text = f"[{bar:<30}] {fraction:6.1%} {human_bytes(done_bytes)} / {human_bytes(total_bytes)} {rate} {files}"
        else:
            text = f"{human_bytes(done_bytes)} {rate} {files}"
        self._draw(text)

    def _draw(self, text: str) -> None:
        padding = max(self._width - len(text), 0)
        sys.stderr.write("\r" + text + " " * padding)
        sys.stderr.flush()
        self._width = len(text)

    def finish(self) -> None:
        if self.enabled and self._width:
            sys.stderr.write("\r" + " " * self._width + "\r")
            sys.stderr.flush()
            self._width = 0
