"""Where a job's training data comes from: the readings topic, or the ring buffer it was built from.

A job arrives with the pair's ring-buffer window (its last ``model.retrain_window`` readings).
:class:`TopicSource` replaces it with the pair's last ``retrain.history_readings`` readings re-read
from the readings topic, up to the same newest reading, so the data depends on the offsets alone,
never on when the worker gets to the job. The ring stays the fallback, with the reason, when the
topic cannot give at least as many readings as the ring holds: retention took them, the read
outlasted ``retrain.history_timeout_s``, or Kafka cannot be reached.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
from confluent_kafka import KafkaException
from numpy.typing import NDArray

from monitor.errors import HistoryTimeout, HistoryUnavailable, KafkaUnavailable
from monitor.govern.training.job import TrainingJob
from monitor.ingest.history import PairFilter, Reader, read_pair
from monitor.schema import Catalog
from monitor.settings import ConsumeSettings, RetrainSettings


@dataclass(frozen=True)
class Sourced:
    """A job with the rows to train on; ``note`` says why the ring buffer was used (or how the
    topic fell short), ``skipped`` counts the device's records that failed the checks."""

    job: TrainingJob
    note: str = ""
    skipped: int = 0
    read_s: float = 0.0


def density(offsets: NDArray[np.int64]) -> float:
    """The share of its partition's messages that are the pair's, from the ring's offsets."""
    if len(offsets) < 2:
        return 1.0
    return (len(offsets) - 1) / max(1, int(offsets.max()) - int(offsets.min()))


class TopicSource:
    """Re-reads jobs' windows from the readings topic through one reader (a
    :class:`~monitor.ingest.history.HistoryReader`: one consumer for every job of a worker)."""

    def __init__(
        self, reader: Reader, retrain: RetrainSettings, consume: ConsumeSettings, catalog: Catalog
    ) -> None:
        self.reader, self.retrain, self.consume, self.catalog = reader, retrain, consume, catalog

    def window(self, job: TrainingJob) -> Sourced:
        want = self.retrain.history_readings
        if want == 0:
            return Sourced(job, "retrain.history_readings is 0")
        timeout = self.retrain.history_timeout_s
        pair = PairFilter(self.consume, self.catalog, job.device_id, job.sensor)
        began = time.monotonic()
        try:
            part = self.reader.partition(job.topic, job.partition)
            deadline = began + timeout
            got = read_pair(part, pair, int(job.offsets.max()), want, density(job.offsets), deadline)
        except HistoryTimeout as exc:
            return Sourced(job, f"reading the topic took longer than {timeout:g}s ({exc}): ring buffer used")
        except (HistoryUnavailable, KafkaUnavailable) as exc:
            return Sourced(job, f"{exc}: ring buffer used")
        except KafkaException as exc:
            return Sourced(job, f"cannot read the topic ({exc.args[0]}): ring buffer used")
        ring = len(job.rows)
        if len(got) < ring:
            note = (
                f"the topic holds {len(got)} of the pair's readings (from offset {got.low}: retention), "
                f"fewer than the ring buffer's {ring}: ring buffer used"
            )
            return Sourced(job, note, got.skipped)
        short = f"{len(got)} of {want} readings: the partition starts at {got.low}" if len(got) < want else ""
        rows = dataclasses.replace(
            job, rows=got.rows, offsets=got.offsets, timestamps=got.timestamps, source="topic"
        )
        return Sourced(rows, short, got.skipped, time.monotonic() - began)

    def close(self) -> None:
        self.reader.close()
