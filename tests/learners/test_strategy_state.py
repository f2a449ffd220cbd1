"""Strategy state: export/restore fidelity and safetensors round trips, empty ones included."""

from __future__ import annotations

import json

import pytest
import torch

from learners.experience import make_experience
from learners.strategies import build_strategy, quiet_avalanche
from learners.strategy_state import (
    StrategyState,
    export_state,
    load_state,
    memory_sample_groups,
    memory_sample_ids,
    restore_state,
    save_state,
)


def trained(strategy: str, model, split, params: dict):
    """An Avalanche strategy that has trained on `split` as experience 0, and the key -> id map."""
    learner = build_strategy(strategy, model, params=params, epochs=1, batch_size=32, lr=0.05)
    keys = list(range(len(split.ids)))
    with quiet_avalanche():
        learner.train(make_experience(split.x.float() / 255, split.y, keys, 0), eval_streams=[])
    return learner, dict(zip(keys, split.ids, strict=True))


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


def test_export_checks_the_experience_count(model, exp_a) -> None:
    learner, ids = trained("naive", model, exp_a, {})
    with pytest.raises(ValueError, match="trained 1 experiences, not 2"):
        export_state("naive", learner, 2, ids)


def test_restore_into_another_kind_of_strategy_rejected(model, exp_a) -> None:
    learner, ids = trained("replay", model, exp_a, {"mem_size": 20})
    state = export_state("replay", learner, 1, ids)
    other = build_strategy("gem", model, params={}, epochs=1, batch_size=32, lr=0.05)
    with pytest.raises(ValueError, match="holds"):
        restore_state(other, state)


def test_empty_state_round_trips(tmp_path) -> None:
    state = StrategyState("naive", 3, {}, {"experiences_seen": 3, "buffer_ids": []})
    meta = json.loads(json.dumps(save_state(state, tmp_path / "s.safetensors")))
    loaded = load_state(tmp_path / "s.safetensors", meta, "naive")
    assert (loaded.strategy, loaded.experiences_seen, loaded.tensors) == ("naive", 3, {})
    assert loaded.meta == {"experiences_seen": 3, "buffer_ids": [], "strategy": "naive"}


def test_zero_size_tensors_round_trip(tmp_path) -> None:
    tensors = {"a.x": torch.zeros(0, 1, 4, 4), "a.w": torch.zeros(0), "b": torch.arange(3)}
    state = StrategyState("replay", 1, tensors, {"experiences_seen": 1, "buffer_ids": []})
    loaded = load_state(
        tmp_path / "s.safetensors", save_state(state, tmp_path / "s.safetensors"), "replay"
    )
    assert {k: v.shape for k, v in loaded.tensors.items()} == {
        k: v.shape for k, v in tensors.items()
    }
    assert torch.equal(loaded.tensors["b"], tensors["b"])


def test_load_state_checks_strategy(tmp_path) -> None:
    state = StrategyState("ewc", 1, {}, {"experiences_seen": 1, "buffer_ids": []})
    meta = save_state(state, tmp_path / "s.safetensors")
    with pytest.raises(ValueError, match="belongs to strategy 'ewc'"):
        load_state(tmp_path / "s.safetensors", meta, "gem")
