"""A registered model's artifact: the file that holds its learned state, and its formats.

Since format 1 a version's model is ``model.json``, plain JSON that any language reads and nothing
executes::

    {"format": "telemon.model.adaptive-gaussian", "format_version": 1,
     "params": {"n_features": 1, "fading": 0.02, "var_fading": 0.005, "resolution": 0.01, "trend": 0.0},
     "state": {"n": 32.0, "level": [34.37983496007084], "variance": [0.016878611939561635],
               "trend": [0.0]}}

Every number is a JSON number written with the shortest decimal that reads back to the same IEEE
754 double, so a model loads bit for bit as it was saved; the values JSON has no number for are
the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``. Versions registered before are
``model.pkl`` (a pickle of :class:`~monitor.detect.model.AdaptiveGaussian`, protocol 5): they load
as before, verified and unpickled with :mod:`monitor.common.safepickle`'s allowlist. The signed
manifest names the artifact's ``format`` and ``format_version`` (:data:`FORMATS`); a version of any
other format is refused with :class:`ArtifactError`, never guessed at.

>>> from monitor.detect.model import AdaptiveGaussian
>>> m = AdaptiveGaussian.fit([(1.0,), (2.0,), (4.0,)], resolution=0.01)
>>> data = encode(m)
>>> data[:70]
b'{"format":"telemon.model.adaptive-gaussian","format_version":1,"params'
>>> decode(data).state() == m.state()
True
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from monitor import errors
from monitor.common import safepickle
from monitor.errors import ArtifactError, RegistryError

if TYPE_CHECKING:  # River and scipy load only when a model does
    from monitor.detect.model import AdaptiveGaussian

#: The format of ``model.json`` and its version.
JSON_FORMAT, JSON_VERSION, JSON_FILE = "telemon.model.adaptive-gaussian", 1, "model.json"
#: Versions registered before ``model.json``: a pickle (their manifests name no format).
PICKLE_FORMAT, PICKLE_FILE = "python-pickle", "model.pkl"
PYTHON_CLASS = "monitor.detect.model.AdaptiveGaussian"


class Format(NamedTuple):
    name: str
    version: int

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


#: Every artifact format this telemon reads, and the file it is stored in.
FORMATS: dict[Format, str] = {
    Format(JSON_FORMAT, JSON_VERSION): JSON_FILE,
    Format(PICKLE_FORMAT, 0): PICKLE_FILE,
}
#: Every file name an artifact may have.
FILES = frozenset(FORMATS.values())

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
Number = float | str  # a str only for the values JSON has no number for


class Params(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    n_features: int
    fading: float
    var_fading: float
    resolution: float
    trend: float


class State(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    n: Number
    level: list[Number]
    variance: list[Number]
    trend: list[Number]


class Header(msgspec.Struct, frozen=True):
    """What every artifact format starts with: the rest is read only once this is known."""

    format: str
    format_version: int


class ModelFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``model.json``, format ``telemon.model.adaptive-gaussian`` version 1."""

    format: str
    format_version: int
    params: Params
    state: State


_ENCODER = msgspec.json.Encoder()
_HEADER = msgspec.json.Decoder(Header)
_MODEL = msgspec.json.Decoder(ModelFile)


def file_of(fmt: Format, what: str) -> str:
    """The file name of an artifact of format ``fmt``; :class:`ArtifactError` for a format this
    telemon does not read (``what`` names the version in the message)."""
    try:
        return FORMATS[fmt]
    except KeyError:
        known = ", ".join(str(f) for f in FORMATS)
        raise ArtifactError(
            f"{what}: unknown artifact format {fmt} (this telemon reads {known}): a newer telemon wrote it"
        ) from None


def encode(model: AdaptiveGaussian) -> bytes:
    """``model.json`` of ``model``: its parameters and its whole state."""
    from monitor.detect.model import AdaptiveGaussian

    if not isinstance(model, AdaptiveGaussian):
        raise RegistryError(f"only AdaptiveGaussian models can be registered, not {_class_name(model)}")
    s, k = model.state(), model.n_features
    m = model
    params = Params(k, float(m.fading), float(m.var_fading), float(m.resolution), float(m.trend))
    state = State(_out(s[0]), _outs(s[1 : 1 + k]), _outs(s[1 + k : 1 + 2 * k]), _outs(s[1 + 2 * k :]))
    return _ENCODER.encode(ModelFile(JSON_FORMAT, JSON_VERSION, params, state)) + b"\n"


def decode(data: bytes, what: str = "model.json") -> AdaptiveGaussian:
    """The model of a ``model.json``; :class:`ArtifactError` (one line, naming ``what``) for
    anything else: another format or version, a missing or extra field, a wrong shape."""
    try:
        header = _HEADER.decode(data)
    except msgspec.MsgspecError as exc:
        raise ArtifactError(f"{what} is not a model file: {exc}") from None
    fmt = Format(header.format, header.format_version)
    if fmt != (JSON_FORMAT, JSON_VERSION):
        raise ArtifactError(f"{what} is of format {fmt}, not {JSON_FORMAT} v{JSON_VERSION}")
    try:
        f = _MODEL.decode(data)
    except msgspec.MsgspecError as exc:
        raise ArtifactError(f"{what} does not follow {fmt}: {exc}") from None
    return _model(f, what)


def _model(f: ModelFile, what: str) -> AdaptiveGaussian:
    from monitor.detect.model import AdaptiveGaussian
    from monitor.schema import MAX_AXES

    p, s = f.params, f.state
    if not 1 <= p.n_features <= MAX_AXES:
        raise ArtifactError(f"{what}: params.n_features is {p.n_features}, not 1 to {MAX_AXES}")
    for name, values in (("level", s.level), ("variance", s.variance), ("trend", s.trend)):
        if len(values) != p.n_features:
            raise ArtifactError(f"{what}: state.{name} has {len(values)} values, not {p.n_features}")
    model = AdaptiveGaussian(p.n_features, p.fading, p.var_fading, p.resolution, p.trend)
    model.set_state([_in(s.n, what), *(_in(x, what) for x in (*s.level, *s.variance, *s.trend))])
    return model


def load_pickle(data: bytes, what: str = PICKLE_FILE) -> AdaptiveGaussian:
    """A model of a version registered before ``model.json``: unpickled with the allowlist of
    :data:`monitor.common.safepickle.MODEL_CLASSES` (call it only on verified bytes)."""
    try:
        model = safepickle.loads(data, safepickle.MODEL_CLASSES)
    except errors.RefusedClassError as exc:
        raise ArtifactError(f"{what} refused: {exc}") from exc
    except (pickle.UnpicklingError, ValueError, TypeError, EOFError) as exc:
        raise ArtifactError(f"{what} does not unpickle: {exc}") from exc
    from monitor.detect.model import AdaptiveGaussian

    if not isinstance(model, AdaptiveGaussian):
        raise ArtifactError(f"{what} holds a {type(model).__name__}, not an AdaptiveGaussian")
    return model


def load(fmt: Format, data: bytes, what: str) -> AdaptiveGaussian:
    """The model of an artifact of format ``fmt`` (verified bytes)."""
    file_of(fmt, what)
    if fmt.name == PICKLE_FORMAT:
        return load_pickle(data, f"{what}: {PICKLE_FILE}")
    return decode(data, f"{what}: {JSON_FILE}")


def _out(x: float) -> Number:
    if math.isfinite(x):
        return x
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


def _outs(xs: Sequence[float]) -> list[Number]:
    return [_out(x) for x in xs]


def _in(x: Number, what: str) -> float:
    if isinstance(x, float):
        return x
    if x in _NON_FINITE:
        return _NON_FINITE[x]
    raise ArtifactError(f"{what}: {x!r} is not a number (nor NaN, Infinity or -Infinity)")


def _class_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"
