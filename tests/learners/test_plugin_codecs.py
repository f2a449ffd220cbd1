"""Plugin codecs: each strategy's memories export, restore and export again unchanged."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from avalanche.training.plugins import GEMPlugin
from training_runs import trained

from learners.plugin_codecs import NEEDS_SUBCLASS, stateful_plugins
from learners.strategies import build_strategy
from learners.strategy_state import (
    export_state,
    memory_sample_groups,
    memory_sample_ids,
    restore_state,
)

BALANCED = {"group_balanced": True}


@pytest.mark.parametrize(
    ("strategy", "params"),
    [
        ("replay", {"mem_size": 50}),
        ("replay", {"mem_size": 50, **BALANCED}),
        ("ewc", {}),
        ("ewc", {"mode": "online"}),
        ("gem", {}),
        ("gem", BALANCED),
        ("agem", {"patterns_per_exp": 30}),
        ("agem", {"patterns_per_exp": 30, **BALANCED}),
        ("lwf", {}),
        ("si", {}),
        ("gdumb", {"mem_size": 50}),
        ("gdumb", {"mem_size": 50, **BALANCED}),
        ("der", {"mem_size": 50}),
        ("der", {"mem_size": 50, **BALANCED}),
        ("mir", {"mem_size": 50}),
        ("mir", {"mem_size": 50, **BALANCED}),
    ],
)
def test_restore_then_export_gives_the_same_state(strategy, params, model, exp_a) -> None:
    learner, ids = trained(strategy, model, exp_a, params)
    groups = {key: f"g{key % 3}" for key in ids}
    state = export_state(strategy, learner, 1, ids, groups)
    assert state.tensors and state.meta["plugins"]
    assert len(state.meta["buffer_groups"]) == len(state.meta["buffer_ids"])

    fresh = build_strategy(strategy, model, params=params, epochs=1, batch_size=32, lr=0.05)
    restore_state(fresh, state)
    assert fresh.clock.train_exp_counter == 1
    again = export_state(strategy, fresh, 1, memory_sample_ids(state), memory_sample_groups(state))
    assert again.meta == state.meta
    assert again.tensors.keys() == state.tensors.keys()
    for name, value in state.tensors.items():
        assert torch.equal(value, again.tensors[name]), name


def test_a_plugin_whose_memory_needs_our_subclass_is_refused() -> None:
    strategy = SimpleNamespace(plugins=[GEMPlugin(patterns_per_experience=5, memory_strength=0.5)])
    with pytest.raises(TypeError) as info:
        stateful_plugins(strategy)
    assert str(info.value) == NEEDS_SUBCLASS.format("GEMPlugin", "KeyedGEMPlugin")
