"""Strategy state: checks on export and restore; safetensors round trips, empty ones too."""

from __future__ import annotations

import json

import pytest
import torch
from training_runs import trained

from learners.strategies import build_strategy
from learners.strategy_state import (
    SAVED_FOR_ANOTHER,
    WRONG_EXPERIENCES,
    WRONG_PLUGINS,
    StrategyState,
    export_state,
    load_state,
    restore_state,
    save_state,
)


def test_export_checks_the_experience_count(model, exp_a) -> None:
    learner, ids = trained("naive", model, exp_a, {})
    with pytest.raises(ValueError) as info:
        export_state("naive", learner, 2, ids)
    assert str(info.value) == WRONG_EXPERIENCES.format(1, 2)


def test_restore_into_another_kind_of_strategy_rejected(model, exp_a) -> None:
    learner, ids = trained("replay", model, exp_a, {"mem_size": 20})
    state = export_state("replay", learner, 1, ids)
    other = build_strategy("gem", model, params={}, epochs=1, batch_size=32, lr=0.05)
    with pytest.raises(ValueError) as info:
        restore_state(other, state)
    assert str(info.value) == WRONG_PLUGINS.format("replay", ["replay"], ["gem"])


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
    with pytest.raises(ValueError) as info:
        load_state(tmp_path / "s.safetensors", meta, "gem")
    path = tmp_path / "s.safetensors"
    assert str(info.value) == SAVED_FOR_ANOTHER.format(path=path, saved="ewc", strategy="gem")
