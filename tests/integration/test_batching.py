"""A batch closes at ``consume.batch_size`` messages or ``consume.max_batch_age_ms``, whichever
comes first: a slow stream is not held back until a batch fills or a long poll ends."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.settings import KafkaSettings
from tests.conftest import Readings, run_monitor, total

pytestmark = [pytest.mark.integration, pytest.mark.quick]  # quick: passes on the embedded broker too


def test_a_batch_that_cannot_fill_closes_at_its_age(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    readings = Readings(kafka_settings, devices=3, partitions=kafka_settings.partitions)
    readings.round(10)
    readings.flush()
    # A batch of 100,000 never fills here, and a poll would wait two minutes for it: only the
    # batch's age can close it within the run's 60 s (a start on a busy machine, the kernels
    # compiling, may take half of that).
    run = run_monitor(
        kafka_settings,
        readings.ends,
        timeout=60,
        TELEMON_STATE_DIR=str(tmp_path),
        TELEMON_CONSUME__BATCH_SIZE="100000",
        TELEMON_CONSUME__POLL_TIMEOUT_S="120",
        TELEMON_CONSUME__MAX_BATCH_AGE_MS="50",
    )
    assert run.alive and run.returncode == 0, run.stderr[-3000:]
    assert total(run.samples, "telemon_readings_total") == readings.valid == 30
