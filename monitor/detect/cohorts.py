"""Device labels for cohort-scope rules: which firmware, site, ... each device belongs to.

``cohorts_file`` is a YAML mapping of device id to labels::

    dev-0001: {firmware: "1.2.0", site: plant-a}
    dev-0002: {firmware: "1.3.0", site: plant-a}

A cohort rule (``scope: cohort``, ``cohort: firmware``) pools the scores of each label value's
devices per sensor, like the fleet scope does for all devices; its evaluations are keyed
``firmware=1.2.0``. Devices without the label are in no cohort of it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from monitor import errors
from monitor.common import yamlfile
from monitor.errors import CohortsError
from monitor.schema import DEVICE_ID_PATTERN

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
