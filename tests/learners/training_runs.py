"""Helpers shared by the learners tests: one update of a split, and a strategy trained on one."""

from __future__ import annotations

from typing import Any

from learners.experience import make_experience
from learners.models import SmallCNN
from learners.strategies import build_strategy, quiet_avalanche
from learners.update import UpdateResult, train_update

SETTINGS = {"epochs": 3, "batch_size": 32, "lr": 0.05}


def update(
    model: SmallCNN, split: Any, strategy: str, state: Any, *, groups=None, seed: int = 0, **params
) -> UpdateResult:
    """`train_update` on a conftest split (its images, labels and ids) with the test settings."""
    return train_update(
        model,
        split.x,
        split.y,
        sample_ids=split.ids,
        strategy=strategy,
        params=params,
        state=state,
        seed=seed,
        groups=groups,
        **SETTINGS,
    )


def trained(strategy: str, model: SmallCNN, split: Any, params: dict) -> tuple[Any, dict]:
    """An Avalanche strategy that has trained on `split` as experience 0, and the key -> id map."""
    learner = build_strategy(strategy, model, params=params, epochs=1, batch_size=32, lr=0.05)
    keys = list(range(len(split.ids)))
    with quiet_avalanche():
        learner.train(make_experience(split.x.float() / 255, split.y, keys, 0), eval_streams=[])
    return learner, dict(zip(keys, split.ids, strict=True))
