"""One contract, every model option: the pair model (``AdaptiveGaussian``) and River anomaly
detectors through the River tier's wrapper (``OnlineModel``), the shipped tier's among them.

Each option must: clone to an unfitted model with equal parameters; survive a snapshot round trip
(pickled, restored by the snapshots' restricted unpickler) scoring and learning exactly as before;
give identical scores on two runs with the same seed; leave its input dicts alone; and never learn
a NaN or infinite value (its state and later scores as if it had not seen it).
"""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from river import base

from monitor.common import safepickle
from monitor.detect.model import AdaptiveGaussian
from monitor.detect.online import OnlineModel
from monitor.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
Factory = Callable[[], base.AnomalyDetector]


def _shipped() -> OnlineModel:
    (tier,) = load_settings(ROOT / "configs/river.yaml").river.tiers
    return OnlineModel.from_settings(tier)


#: name -> (factory, axes of the readings it scores)
OPTIONS: dict[str, tuple[Factory, tuple[str, ...]]] = {
    "adaptive_gaussian": (lambda: AdaptiveGaussian(3, resolution=0.01), ("x", "y", "z")),
    "shipped_tier": (_shipped, ("value",)),
    "half_space_trees": (
        lambda: OnlineModel("river.anomaly.HalfSpaceTrees", {"window_size": 50}, "minmax", quantile=0.99),
        ("x", "y", "z"),
    ),
    "half_space_trees_threshold": (
        lambda: OnlineModel(
            "river.anomaly.HalfSpaceTrees", {"n_trees": 5}, "minmax", threshold=0.9, warmup=20
        ),
        ("value",),
    ),
    "one_class_svm": (
        lambda: OnlineModel("river.anomaly.OneClassSVM", {"nu": 0.1}, "standard", quantile=0.995),
        ("x", "y", "z"),
    ),
    "gaussian_scorer": (
        lambda: OnlineModel("river.anomaly.GaussianScorer", {"grace_period": 30}, quantile=0.99),
        ("value",),
    ),
    "gaussian_scorer_window": (
        lambda: OnlineModel(
            "river.anomaly.GaussianScorer",
            {"window_size": 50, "grace_period": 10},
            threshold=0.999,
            protect=False,
        ),
        ("value",),
    ),
}


def _stream(axes: tuple[str, ...], n: int, seed: int = 7) -> list[dict[str, float]]:
    rng = random.Random(seed)
    return [{a: rng.gauss(0.5, 0.1) + (0.6 if i % 97 == 96 else 0.0) for a in axes} for i in range(n)]


def _scores(model: base.AnomalyDetector, stream: list[dict[str, float]]) -> list[float]:
    """Score then learn every reading, as the stream does."""
    out = []
    for x in stream:
        out.append(model.score_one(x))  # type: ignore[arg-type]
        model.learn_one(x)  # type: ignore[arg-type]
    return out


@pytest.fixture(params=sorted(OPTIONS))
def option(request: pytest.FixtureRequest) -> tuple[Factory, tuple[str, ...]]:
    return OPTIONS[request.param]


def test_clone_is_an_unfitted_model_with_equal_parameters(option: tuple[Factory, tuple[str, ...]]) -> None:
    factory, axes = option
    trained = factory()
    _scores(trained, _stream(axes, 300))
    clone = trained.clone()
    assert type(clone) is type(trained)
    assert clone._get_params() == factory()._get_params()
    probe = _stream(axes, 200, seed=8)
    assert _scores(clone, probe) == _scores(factory(), probe)


def test_a_snapshot_round_trip_scores_and_learns_identically(option: tuple[Factory, tuple[str, ...]]) -> None:
    factory, axes = option
    model = factory()
    _scores(model, _stream(axes, 300))
    restored = safepickle.loads(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
    later = _stream(axes, 200, seed=9)
    assert _scores(restored, later) == _scores(model, later)


def test_the_same_seed_gives_the_same_scores(option: tuple[Factory, tuple[str, ...]]) -> None:
    factory, axes = option
    stream = _stream(axes, 400)
    first, second = _scores(factory(), stream), _scores(factory(), stream)
    assert first == second
    assert len(set(first)) > 1  # it does score


def test_input_dicts_are_not_mutated(option: tuple[Factory, tuple[str, ...]]) -> None:
    factory, axes = option
    stream = _stream(axes, 300)
    copies = [dict(x) for x in stream]
    _scores(factory(), stream)
    assert stream == copies


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_value_is_never_learned(option: tuple[Factory, tuple[str, ...]], bad: float) -> None:
    factory, axes = option
    stream, later = _stream(axes, 300), _stream(axes, 200, seed=10)
    clean, dirty = factory(), factory()
    _scores(clean, stream)
    _scores(dirty, stream)
    before = pickle.dumps(dirty)
    for axis in axes:
        x = {**stream[-1], axis: bad}
        dirty.learn_one(x)  # type: ignore[arg-type]
        dirty.score_one(x)  # type: ignore[arg-type]
    assert pickle.dumps(dirty) == before
    assert _scores(dirty, later) == _scores(clean, later)


def test_every_river_option_goes_through_the_tier_wrapper() -> None:
    """The suite covers the River classes the README names (and the shipped tier)."""
    models = {f().model for f, _ in OPTIONS.values() if isinstance(f(), OnlineModel)}  # type: ignore[attr-defined]
    assert {
        "river.anomaly.HalfSpaceTrees",
        "river.anomaly.OneClassSVM",
        "river.anomaly.GaussianScorer",
    } <= models
