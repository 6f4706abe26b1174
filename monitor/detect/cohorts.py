"""Cohort labels: which firmware, site, ... each device belongs to, and which vendor, placement,
... each channel; a (device, channel) pair carries both.

``cohorts_file`` is a YAML mapping of device id to labels::

    dev-0001: {firmware: "1.2.0", site: plant-a}
    dev-0002: {firmware: "1.3.0", site: plant-a}

and a declared channel may carry labels of its own (``channels.declare``:
``labels: {vendor: bosch}``). A cohort rule (``scope: cohort``, ``cohort: firmware``) pools, per
sensor, the scores of the pairs sharing each label value, like the fleet scope does for all
devices; its evaluations are keyed ``firmware=1.2.0``. Pairs without the label are in no cohort
of it. A label name belongs to devices or to channels, never both (:class:`CohortLabels` refuses
it): so a pair's value of a label comes from one place, and a cohorts file cannot silently move
a channel's pairs to another cohort.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from monitor import errors
from monitor.common import yamlfile
from monitor.errors import CohortsError
from monitor.schema import DEVICE_ID_PATTERN, Catalog

Cohorts = dict[str, dict[str, str]]
#: A fleet's labels: 64 MiB is about a million devices with two labels each.
MAX_COHORTS_BYTES = 64 << 20
_ADAPTER: TypeAdapter[Cohorts] = TypeAdapter(Cohorts)


def load_cohorts(path: Path | None) -> Cohorts:
    """The labels per device (empty without a file)."""
    if path is None:
        return {}
    try:
        data = yamlfile.load(path, MAX_COHORTS_BYTES) or {}
        cohorts = _ADAPTER.validate_python(data)
    except FileNotFoundError as exc:
        raise CohortsError(f"{path}: {exc.strerror}") from None
    except errors.YamlError as exc:
        raise CohortsError(str(exc)) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CohortsError(
            f"{path}: {where}: {first['msg']} (expected device id -> {{label: value}})"
        ) from None
    bad = [d for d in cohorts if not DEVICE_ID_PATTERN.fullmatch(d)]
    if bad:
        raise CohortsError(f"{path}: not a device id: {bad[0]!r}")
    return cohorts


@dataclass(frozen=True)
class CohortLabels:
    """The labels of every (device, channel) pair: its device's (``devices``, from the cohorts
    file) and its channel's (``channels``, per sensor index of the catalog up to its capacity).
    Only declared channels carry labels: one registered on its first reading
    (``channels.auto_register``) has none of its own, so its pairs are in the cohorts of their
    devices' labels only, and a catalog that grows so needs no new labels.

    >>> labels = CohortLabels({"dev-1": {"site": "a"}}, ({}, {"vendor": "bosch"}))
    >>> labels.pair("dev-1", 1), labels.pair("dev-2", 0)
    ({'vendor': 'bosch', 'site': 'a'}, {})
    >>> labels.channel_cohorts("vendor"), labels.channel_cohorts("site")
    ((('vendor=bosch', frozenset({1})),), ())
    """

    devices: Cohorts
    channels: tuple[dict[str, str], ...]

    @classmethod
    def load(cls, path: Path | None, channels: dict[str, dict[str, str]], catalog: Catalog) -> CohortLabels:
        """The cohorts file's labels and the declared channels' (by name); a label name used by
        both is refused (:class:`~monitor.errors.CohortsError`, naming a device and a channel)."""
        devices = load_cohorts(path)
        by_name = {label: name for name, labels in channels.items() for label in labels}
        for device, labels in devices.items() if by_name else ():
            both = sorted(by_name.keys() & labels.keys())
            if both:
                raise CohortsError(
                    f"{path}: {device}: label {both[0]!r} is also a label of channel {by_name[both[0]]} "
                    "(channels.declare): a label belongs to devices or to channels; rename one of them"
                )
        declared = tuple(channels.get(name, {}) for name in catalog.names)
        return cls(devices, declared + ({},) * catalog.spare)

    def pair(self, device_id: str, s: int) -> dict[str, str]:
        """The labels of pair (``device_id``, sensor ``s``): its channel's and its device's."""
        return {**self.channels[s], **self.devices.get(device_id, {})}

    def channel_cohorts(self, label: str) -> tuple[tuple[str, frozenset[int]], ...]:
        """The cohorts of a channel label: each ``label=value`` key with the sensors it holds
        (every device's pairs of them), by value; none for a device label."""
        values = sorted({c[label] for c in self.channels if label in c})
        return tuple(
            (f"{label}={v}", frozenset(s for s, c in enumerate(self.channels) if c.get(label) == v))
            for v in values
        )

    def values(self, label: str) -> set[str]:
        """Every value of ``label``, over devices and channels."""
        return {c[label] for c in (*self.devices.values(), *self.channels) if label in c}
