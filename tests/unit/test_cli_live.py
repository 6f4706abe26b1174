"""The status line of long commands: live on a terminal, a plain line now and then elsewhere."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from rich.console import Console

from monitor.cli.live import StatusLine


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _plain() -> tuple[StatusLine, io.StringIO, _Clock]:
    out, clock = io.StringIO(), _Clock()
    return StatusLine(Console(file=out, width=60), every_s=10.0, clock=clock), out, clock


def test_not_a_terminal_prints_each_phase_and_then_every_so_often() -> None:
    status, out, clock = _plain()
    with status:
        status.show("starting")
        for n in range(1, 26):  # 25 s of updates, one a second
            clock.now = float(n)
            status.show("consuming", n, None, f"consumed {n}")
        clock.now = 25.5
        status.show("report")
    assert not status.live
    assert out.getvalue().splitlines() == [
        "[   0.0s] starting",
        "[   1.0s] consuming: consumed 1",
        "[  11.0s] consuming: consumed 11",
        "[  21.0s] consuming: consumed 21",
        "[  25.0s] consuming: consumed 25",  # the last state of a phase, when it ends
        "[  25.5s] report",
    ]


def test_a_plain_line_is_never_cut_to_the_console_width() -> None:
    status, out, _ = _plain()
    with status:
        status.show("consuming", detail="x" * 100)
    assert out.getvalue() == f"[   0.0s] consuming: {'x' * 100}\n"


@pytest.fixture
def terminal_log() -> Iterator[_Tty]:
    """The root logger writing to a terminal, as ``main()`` sets it up."""
    root, stream = logging.getLogger(), _Tty()
    handler = logging.StreamHandler(stream)
    before = list(root.handlers)
    root.handlers = [handler]
    yield stream
    root.handlers = before


def test_on_a_terminal_logging_goes_through_the_line_s_console(terminal_log: _Tty) -> None:
    out = io.StringIO()
    status = StatusLine(Console(file=out, force_terminal=True, width=100))
    with status:
        assert status.live
        status.show("consuming", 5, 10, "consumed 5")
        logging.getLogger("monitor.test").warning("a warning during the run")
    assert "a warning during the run" in out.getvalue() and "consuming" in out.getvalue()
    assert terminal_log.getvalue() == ""
    logging.getLogger("monitor.test").warning("after the run")  # the handler is back
    assert "after the run" in terminal_log.getvalue()
    assert all(not type(h).__name__.startswith("Rich") for h in logging.getLogger().handlers)


def test_a_log_file_is_left_alone() -> None:
    root, stream = logging.getLogger(), io.StringIO()  # not a terminal: it cannot tear the line
    handler = logging.StreamHandler(stream)
    root.addHandler(handler)
    try:
        with StatusLine(Console(file=io.StringIO(), force_terminal=True)):
            assert handler in root.handlers
    finally:
        root.removeHandler(handler)
