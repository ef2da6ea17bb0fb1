"""The progress line of a multi-key run on stderr, for ``local.runner``."""

from __future__ import annotations

import io
import shutil
import time
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from kv_sync.model import SyncStats

# The counters the progress line adds up, and their labels.
LABELS = {
    "keys_listed": "listed",
    "keys_fetched": "fetched",
    "records_written": "written",
    "records_unchanged": "unchanged",
    "records_deleted": "deleted",
    "records_failed": "failed",
}
COUNTERS = tuple(LABELS)


class ProgressLine:
    """The progress line of a multi-key run: counters, invocations, time; a bar for names.

    Counters add the ``statistics`` of finished invocations to the engine's
    ``SyncStats`` of the running one (``page`` is its progress listener). The bar
    of ``total_names`` counts pages of the engine's pages of ``NAMES_PAGE_SIZE`` names. With
    ``redraw`` (a terminal) the line is rewritten in place; else each update is a line.
    """

    def __init__(
        self,
        stream: IO[str],
        *,
        total_names: int = 0,
        redraw: bool = False,
        clock: Callable[[], float] = time.monotonic,
        width: int | None = None,
    ) -> None:
        self.stream, self.total_names, self.redraw = stream, total_names, redraw
        self.clock, self.width, self.started = clock, width, clock()
        self.done = dict.fromkeys(COUNTERS, 0)  # finished invocations
        self.live = dict.fromkeys(COUNTERS, 0)  # the running invocation
        self.invocations = self.shown = 0
        self.names_before = self.names = self.pages = 0

    def start_run(self, names_before: int, names: int) -> None:
        """A run of ``names`` named keys (0: a listing) starts after ``names_before``."""
        self.names_before, self.names, self.pages = names_before, names, 0

    def start_invocation(self) -> None:
        """An invocation begins."""
        self.invocations += 1

    def page(self, stats: SyncStats) -> None:
        """The engine finished a page."""
        self.live = {name: getattr(stats, name) for name in COUNTERS}
        self.pages += 1
        self.draw()

    def invocation_done(self, document: Mapping[str, Any]) -> None:
        """An invocation returned ``document``."""
        statistics = document.get("statistics") or {}
        self.done = {name: self.done[name] + int(statistics.get(name) or 0) for name in COUNTERS}
        self.live = dict.fromkeys(COUNTERS, 0)
        self.draw()

    def line(self) -> str:
        """The progress line as it is drawn now."""
        count = {name: self.done[name] + self.live[name] for name in COUNTERS}
        head = f"listed {count['keys_listed']}"
        if self.total_names:
            from kv_sync.pages import NAMES_PAGE_SIZE

            done = self.names_before + min(self.pages * NAMES_PAGE_SIZE, self.names)
            bar = ("#" * (done * 24 // self.total_names)).ljust(24, ".")
            head = f"[{bar}] {done}/{self.total_names} {done * 100 // self.total_names}%"
        counters = " ".join(f"{LABELS[name]} {count[name]}" for name in COUNTERS[1:])
        elapsed = self.clock() - self.started
        return f"kv-sync {head} | {counters} | invocation {self.invocations} | {elapsed:.1f}s"

    def draw(self) -> None:
        """Show the line: in place on a terminal (cut to its width), else as a line."""
        text = self.line()
        if self.redraw:
            text = text[: max((self.width or shutil.get_terminal_size().columns) - 1, 10)]
            self.stream.write(f"\r{text}{' ' * max(self.shown - len(text), 0)}")
            self.shown = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        """Take the line off the terminal, before other output."""
        if self.shown:
            self.stream.write("\r" + " " * self.shown + "\r")
            self.shown = 0

    def finish(self, outcome: str) -> None:
        """End with a summary line: ``kv-sync done: 2 invocation(s), 35 listed, ...``."""
        count = {name: self.done[name] + self.live[name] for name in COUNTERS}
        counters = ", ".join(f"{count[name]} {LABELS[name]}" for name in COUNTERS)
        elapsed = self.clock() - self.started
        self.clear()
        self.stream.write(f"kv-sync {outcome}: {self.invocations} invocation(s), ")
        self.stream.write(f"{counters} in {elapsed:.1f}s\n")
        self.stream.flush()


class LogsAroundProgress(io.TextIOBase):
    """stderr for log lines while the progress line is on a terminal: clear it, then redraw."""

    def __init__(self, stream: IO[str], progress: ProgressLine) -> None:
        super().__init__()
        self.target, self.progress = stream, progress

    def write(self, text: str) -> int:
        self.progress.clear()
        written = self.target.write(text)
        if text.endswith("\n"):
            self.progress.draw()
        return written
