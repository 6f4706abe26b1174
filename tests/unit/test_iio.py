"""IIO sysfs discovery and unit conversion against a fixture tree laid out like the kernel's."""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

import pytest

from monitor.schema import Reading, Rejection, decode
from producers import iio
from producers.publisher import Sample, Sequencer

FIXTURE = Path(__file__).parents[1] / "fixtures" / "iio"
TS = 1_767_225_600_000


class MemorySink:
    """A :class:`producers.publisher.SampleSink` that keeps the wire bytes it would publish."""

    def __init__(self) -> None:
        self.sequencer = Sequencer()
        self.messages: list[bytes] = []
        self.checks = 0

    def publish(self, sample: Sample) -> Rejection | None:
        value = self.sequencer.encode(sample)
        if isinstance(value, Rejection):
            return value
        self.messages.append(value)
        return None

    def check(self) -> None:
        self.checks += 1

    def readings(self) -> list[Reading]:
        out = [decode(m, None) for m in self.messages]
        assert all(isinstance(r, Reading) for r in out)
        return [r for r in out if isinstance(r, Reading)]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A writable copy of the fixture tree."""
    root = tmp_path / "devices"
    shutil.copytree(FIXTURE, root)
    return root


def by_sensor(root: Path) -> dict[str, iio.Source]:
    return {s.sensor: s for s in iio.discover(root)}


def test_discovers_each_sensor_from_the_first_device_in_index_order() -> None:
    found = by_sensor(FIXTURE)
    assert {k: (s.device, s.name) for k, s in found.items()} == {
        "accelerometer": ("iio:device0", "lsm9ds1_accel"),
        "gyroscope": ("iio:device1", "lsm9ds1_gyro"),
        "magnetometer": ("iio:device2", "lsm9ds1_magn"),
        "humidity": ("iio:device3", "hts221"),
        "pressure": ("iio:device4", "lps25h"),
        # hts221 (device3) before lps25h (device4) and bme280 (device10: numeric, not text, order)
        "temperature": ("iio:device3", "hts221"),
    }
    assert found["accelerometer"].sampling_frequency == 50.0
    assert [p.name for p in (c.path for c in found["gyroscope"].channels.values())] == [
        "in_anglvel_x_raw",
        "in_anglvel_y_raw",
        "in_anglvel_z_raw",
    ]


def test_unit_conversion_matches_hand_computed_values() -> None:
    found = by_sensor(FIXTURE)
    # accel: raw * in_accel_scale (m/s^2 per LSB, 0.061 mg/LSB on the LSM9DS1 at +-2 g)
    assert found["accelerometer"].read() == pytest.approx({"x": -0.01794, "y": 0.01495, "z": 9.8072})
    # anglvel: raw * 0.000152716 rad/s per LSB (8.75 mdps/LSB)
    assert found["gyroscope"].read() == pytest.approx({"x": 0.0152716, "y": -0.0305432, "z": 0.0})
    # magn: gauss -> uT (x100); per-axis scales: 1500 * 0.000146 G = 21.9 uT, 3000 * 0.000148 G = 44.4 uT
    assert found["magnetometer"].read() == pytest.approx({"x": 21.9, "y": -7.3, "z": 44.4})
    # humidityrelative: (2345 + 1000) * 15 = 50175 milli percent = 50.175 %RH
    assert found["humidity"].read() == pytest.approx({"value": 50.175})
    # temp: (300 + 1000) * 20.5 = 26650 milli degC = 26.65 degC
    assert found["temperature"].read() == pytest.approx({"value": 26.65})
    # pressure: 4186112 * 0.000024414 kPa = 102.199738 kPa = 1021.99738 hPa
    assert found["pressure"].read() == pytest.approx({"value": 1021.99738368})


def test_processed_input_values_need_no_scale() -> None:
    found = {s.sensor: s for s in iio.scan_device(FIXTURE / "iio:device10")}
    assert found["temperature"].read() == pytest.approx({"value": 23.45})  # 23450 milli degC
    assert found["pressure"].read() == pytest.approx({"value": 1013.25})  # 101.325 kPa
    assert found["humidity"].read() == pytest.approx({"value": 45.678})  # 45678 milli percent


def test_a_processed_value_is_preferred_to_the_raw_one(tree: Path) -> None:
    (tree / "iio:device3" / "in_temp_input").write_text("21500\n")
    assert by_sensor(tree)["temperature"].read() == pytest.approx({"value": 21.5})


def test_a_missing_channel_removes_the_kind_and_another_device_supplies_it(tree: Path) -> None:
    (tree / "iio:device3" / "in_humidityrelative_raw").unlink()
    (tree / "iio:device0" / "in_accel_y_raw").unlink()
    found = by_sensor(tree)
    assert "accelerometer" not in found  # no other device has an accelerometer
    assert found["humidity"].device == "iio:device10"  # the bme280 steps in
    assert found["temperature"].device == "iio:device3"


def test_an_unreadable_channel_is_reported_and_skipped(tree: Path, caplog: pytest.LogCaptureFixture) -> None:
    z = tree / "iio:device2" / "in_magn_z_raw"
    z.unlink()
    z.mkdir()  # reading it fails with IsADirectoryError (chmod would not stop root)
    with caplog.at_level(logging.WARNING):
        found = by_sensor(tree)
    assert "magnetometer" not in found
    assert "iio:device2: magn channels unusable" in caplog.text


def test_no_channels_or_no_root_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        iio.discover(tmp_path / "absent")
    with pytest.raises(ValueError, match="no supported IIO channels"):
        iio.discover(tmp_path)


def test_sampling_publishes_valid_readings_with_increasing_seq() -> None:
    sink = MemorySink()
    sampler = iio.Sampler(iio.discover(FIXTURE), sink, "pi-1", clock=lambda: TS / 1000)
    report = iio.sample(sampler, iio.Sampling(rate_hz=1000.0, count=3), threading.Event())
    readings = sink.readings()
    assert report.ticks == 3 and len(readings) == 18 and sink.checks == 3
    assert [r.seq for r in readings] == list(range(18))
    assert {r.device_id for r in readings} == {"pi-1"} and {r.ts for r in readings} == {TS}
    assert readings[0].sensor == "accelerometer" and readings[0].unit == "m/s^2"


def test_read_failures_and_rejections_are_counted_not_dropped_silently(
    tree: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = MemorySink()
    sampler = iio.Sampler(iio.discover(tree), sink, "pi-1", clock=lambda: TS / 1000)
    (tree / "iio:device1" / "in_anglvel_x_raw").unlink()  # gone after discovery (device unplugged)
    (tree / "iio:device3" / "in_temp_raw").write_text("garbage\n")
    (tree / "iio:device0" / "in_accel_z_raw").write_text("9000000\n")  # 5382 m/s^2: out of range
    with caplog.at_level(logging.WARNING):
        for _ in range(4):
            sampler.tick()
    r = sampler.report
    assert r.read_errors == {"gyroscope": 4, "temperature": 4}
    assert r.rejected == {"accelerometer": 4}
    assert r.published == {"magnetometer": 4, "humidity": 4, "pressure": 4}
    assert len(sink.messages) == 12
    assert caplog.text.count("gyroscope") == 3  # the first three per sensor, then every 1000th
    assert "out_of_range" in caplog.text
    assert "12 readings published, 8 failed reads" in r.summary()


def test_sampling_stops_when_asked() -> None:
    stop = threading.Event()
    stop.set()
    sampler = iio.Sampler(iio.discover(FIXTURE), MemorySink(), "pi-1")
    assert iio.sample(sampler, iio.Sampling(rate_hz=1.0), stop).ticks == 0


def test_seq_start_grows_with_the_clock() -> None:
    assert iio.seq_start(lambda: 1.5) == 1_500_000
    assert iio.seq_start() > iio.seq_start(lambda: 1_700_000_000.0)


def test_indexed_channels_take_the_lowest_index_and_per_type_rates_win(tmp_path: Path) -> None:
    device = tmp_path / "iio:device0"
    device.mkdir()
    for index, milli_degc in ((10, "10000"), (2, "2000"), (0, "500")):
        (device / f"in_temp{index}_input").write_text(milli_degc)
    (device / "sampling_frequency").write_text("12.5")
    (device / "in_temp_sampling_frequency").write_text("4")
    (source,) = iio.discover(tmp_path)
    assert source.channels["value"].path.name == "in_temp0_input"
    assert source.read() == pytest.approx({"value": 0.5})
    assert source.sampling_frequency == 4.0
