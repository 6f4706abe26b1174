"""One status line that stays in place on a terminal while a long command runs.

On a terminal, :class:`StatusLine` is a ``rich`` progress display redrawn in place, and the log
handlers that write to a terminal are swapped for one that prints above it through the same
console, so a log line never tears the status line. Elsewhere (a CI log, a pipe, a test capturing
output) it prints a plain line when the phase changes and at most every ``every_s`` seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, Task, TaskID, TextColumn
from rich.text import Text

#: How often the plain line is printed when the phase does not change.
PLAIN_EVERY_S = 10.0


class _Elapsed(ProgressColumn):
    """The time since the line started (the whole command's, not the phase's)."""

    def __init__(self, seconds: Callable[[], float]) -> None:
        super().__init__()
        self.seconds = seconds

    def render(self, task: Task) -> Text:
        s = int(self.seconds())
        return Text(f"{s // 60}:{s % 60:02d}", style="progress.elapsed")


class StatusLine:
    """``show(phase, done, total, detail)`` as often as wanted; the display keeps up at its pace."""

    def __init__(
        self,
        console: Console | None = None,
        every_s: float = PLAIN_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console or Console(highlight=False)
        self.every_s = every_s
        self.clock = clock
        self.started = clock()
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._lock = threading.Lock()
        self._phase: str | None = None
        self._latest: tuple[str, float] | None = None  # the plain line not printed yet, and when
        self._printed = float("-inf")  # when the last plain line was printed
        self._entered = float("-inf")  # when the current phase began
        self._handlers: list[tuple[logging.Handler, logging.Handler]] = []

    @property
    def live(self) -> bool:
        return self._progress is not None

    def __enter__(self) -> StatusLine:
        self.started = self.clock()
        if self.console.is_terminal:
            self._progress = Progress(
                SpinnerColumn(),
                _Elapsed(lambda: self.clock() - self.started),
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=16),
                TextColumn("{task.fields[detail]}"),
                console=self.console,
                refresh_per_second=4,
            )
            self._progress.start()
            self._route_logging()
        return self

    def show(self, phase: str, done: int = 0, total: int | None = None, detail: str = "") -> None:
        """The current phase, its progress (``total``: ``None`` when not known yet) and a detail."""
        if self._progress is not None:
            self._show_live(self._progress, phase, done, total, detail)
            return
        line = f"{phase}: {detail}" if detail else phase
        with self._lock:
            now = self.clock()
            if phase != self._phase:
                self._flush()  # the last state of the phase that ends
                self._phase, self._entered = phase, now
            self._latest = (line, now)
            if self._printed < self._entered or now - self._printed >= self.every_s:
                self._flush()

    def _show_live(self, progress: Progress, phase: str, done: int, total: int | None, detail: str) -> None:
        with self._lock:
            if phase != self._phase or self._task is None:  # a new task: a new bar, its total unknown
                if self._task is not None:
                    progress.remove_task(self._task)
                self._task = progress.add_task(phase, total=total, detail=detail)
                self._phase = phase
            progress.update(self._task, completed=done, total=total, detail=detail)  # done at total: finished

    def _flush(self) -> None:
        """Print the latest plain line unless it is already out."""
        if self._latest is None:
            return
        line, at = self._latest
        self.console.print(f"[{at - self.started:6.1f}s] {line}", markup=False, soft_wrap=True)
        self._printed = at
        self._latest = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        with self._lock:
            self._flush()
        self._restore_logging()

    def _route_logging(self) -> None:
        """Log handlers writing to a terminal print through the console while the line is live."""
        root = logging.getLogger()
        for handler in list(root.handlers):
            stream = getattr(handler, "stream", None)
            if not (isinstance(handler, logging.StreamHandler) and stream is not None and stream.isatty()):
                continue
            through = RichHandler(
                console=self.console,
                show_path=False,
                markup=False,
                rich_tracebacks=False,
                log_time_format="%X",
            )
            through.setLevel(handler.level)
            through.setFormatter(logging.Formatter("%(name)s: %(message)s"))
            root.removeHandler(handler)
            root.addHandler(through)
            self._handlers.append((handler, through))

    def _restore_logging(self) -> None:
        root = logging.getLogger()
        for handler, through in self._handlers:
            root.removeHandler(through)
            root.addHandler(handler)
        self._handlers.clear()
