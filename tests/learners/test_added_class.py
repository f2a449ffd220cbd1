"""Every strategy goes on training after the head grew by a class, its memory carried over."""

from __future__ import annotations

import pytest
import torch

from learners.models import build_model
from learners.strategies import STRATEGIES
from learners.update import train_update

PARAMS = {
    "replay": {"mem_size": 20},
    "der": {"mem_size": 20},
    "gdumb": {"mem_size": 20},
    "mir": {"mem_size": 20},
    "gem": {"patterns_per_exp": 8},
    "agem": {"patterns_per_exp": 8},
}


def _update(model, x, y, prefix, strategy, state, seed):  # type: ignore[no-untyped-def]
    return train_update(
        model,
        x,
        y,
        sample_ids=[f"{prefix}{i}" for i in range(len(y))],
        strategy=strategy,
        params=PARAMS.get(strategy, {}),
        state=state,
        epochs=1,
        batch_size=8,
        lr=0.05,
        seed=seed,
        groups=["A", "B"] * (len(y) // 2),
    )


def test_a_grown_head_keeps_the_rows_of_the_known_classes() -> None:
    model = build_model(n_classes=3, in_channels=1, input_size=16, seed=0)
    grown = model.with_classes(5, seed=1)
    assert grown.head.out_features == 5 and grown.arch["n_classes"] == 5
    assert torch.equal(grown.head.weight[:3], model.head.weight)
    assert torch.equal(grown.head.bias[:3], model.head.bias)
    assert model.head.out_features == 3  # a copy: the champion is untouched
    with pytest.raises(ValueError, match="cannot shrink"):
        grown.with_classes(4)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_trains_on_after_a_class_is_added(strategy: str) -> None:
    torch.manual_seed(0)
    x, y = torch.rand(32, 1, 16, 16), torch.randint(0, 3, (32,))
    first = _update(
        build_model(n_classes=3, in_channels=1, input_size=16, seed=0), x, y, "a", strategy, None, 0
    )
    x2, y2 = torch.rand(32, 1, 16, 16), torch.arange(32) % 4  # class 3 is new
    second = _update(first.model.with_classes(4, seed=1), x2, y2, "b", strategy, first.state, 1)
    assert second.model(x2[:2]).shape == (2, 4)
    assert second.state.experiences_seen == 2
