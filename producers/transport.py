"""Events that change messages rather than values: clock skew, duplicates, late delivery, reboots.

The simulator (:mod:`producers.simulate`) asks a :class:`Transport` for every reading of the
stream: whether the device's seq counter restarts before it (``reboot``), how far the device's
clock is off (``clock_skew``: the reading's ``ts`` moves, the Kafka timestamp does not), and which
messages actually leave the device (``duplicate_messages``: the same message twice;
``out_of_order``: a message held back until after the device's next one). Each event draws from its
own generator (:func:`producers.fleet.event_rng`), so the stream stays a pure function of the
scenario.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from producers.fleet import event_rng
from producers.scenario import ClockSkew, DuplicateMessages, OutOfOrder, Reboot, Scenario, event_span_ms

M = TypeVar("M")
Pair = tuple[int, str]  # device index, sensor


@dataclass(frozen=True, slots=True)
class _Window:
    """A random per-message event active over ms ``[start, end)`` after the scenario start."""

    start_ms: int
    end_ms: int
    probability: float
    rng: np.random.Generator

    def hit(self, offset_ms: int) -> bool:
        """Whether this message is affected; draws only for messages inside the window."""
        if not self.start_ms <= offset_ms < self.end_ms:
            return False
        return bool(self.rng.random() < self.probability)


class Transport(Generic[M]):
    """The scenario's in-transit events, applied message by message in stream order."""

    def __init__(self, scenario: Scenario):
        self._skews: defaultdict[Pair, list[tuple[int, int, int]]] = defaultdict(list)
        self._reboots: defaultdict[Pair, list[int]] = defaultdict(list)
        self._duplicates: defaultdict[Pair, list[_Window]] = defaultdict(list)
        self._late: defaultdict[Pair, list[_Window]] = defaultdict(list)
        self._held: dict[int, list[M]] = {}  # device -> its messages held back
        for i, event in enumerate(scenario.events):
            pair = (scenario.device_index(event.device), event.sensor)
            start, end = event_span_ms(scenario, event)
            match event:
                case ClockSkew():
                    self._skews[pair].append((start, end, round(event.skew_s * 1000)))
                case Reboot():
                    self._reboots[pair].append(start)
                case DuplicateMessages():
                    window = _Window(start, end, event.probability, event_rng(scenario, i))
                    self._duplicates[pair].append(window)
                case OutOfOrder():
                    self._late[pair].append(_Window(start, end, event.probability, event_rng(scenario, i)))
                case _:
                    pass
        for starts in self._reboots.values():
            starts.sort(reverse=True)  # popped from the end, earliest first

    def reboots(self, device: int, sensor: str, offset_ms: int) -> bool:
        """True once per reboot: at the pair's first reading at or after the reboot's start."""
        starts = self._reboots.get((device, sensor))
        if starts and starts[-1] <= offset_ms:
            while starts and starts[-1] <= offset_ms:
                starts.pop()
            return True
        return False

    def skew_ms(self, device: int, sensor: str, offset_ms: int) -> int:
        """How far the device's clock is ahead of the true time for this reading (ms)."""
        skews = self._skews.get((device, sensor), ())
        return sum(skew for start, end, skew in skews if start <= offset_ms < end)

    def deliver(self, device: int, sensor: str, offset_ms: int, message: M) -> list[M]:
        """The messages that go out now, given that the device sends ``message``."""
        pair = (device, sensor)
        out = [message]
        if any([w.hit(offset_ms) for w in self._duplicates.get(pair, ())]):
            out.append(message)
        late = any([w.hit(offset_ms) for w in self._late.get(pair, ())])
        held = self._held.pop(device, None)
        if held is not None:
            return out + held  # the late message arrives after the device's next one
        if late:
            self._held[device] = out
            return []
        return out

    def flush(self) -> list[M]:
        """Messages still held back at the end of the stream, by device."""
        out = [m for device in sorted(self._held) for m in self._held[device]]
        self._held.clear()
        return out
