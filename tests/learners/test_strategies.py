"""Strategy registry: names, settings validation, building quiet Avalanche strategies."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from learners.models import SmallCNN
from learners.strategies import (
    BAD_TRAINING,
    BAD_VALUE,
    NOT_OFFERED,
    NOT_OFFERED_WHY,
    STRATEGY_NAMES,
    build_strategy,
    needs_groups,
    resolve_params,
    validate_strategy,
)

ALL = ("naive", "replay", "ewc", "gem", "agem", "lwf", "si", "gdumb", "der", "mir")


def test_names() -> None:
    assert STRATEGY_NAMES == ALL
    assert "icarl" not in STRATEGY_NAMES


def test_unknown_strategy_message() -> None:
    with pytest.raises(ValueError) as error:
        validate_strategy("lwf2", {})
    assert str(error.value) == (
        "unknown strategy 'lwf2'; known strategies: "
        "naive, replay, ewc, gem, agem, lwf, si, gdumb, der, mir"
    )


def test_icarl_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError) as error:
        validate_strategy("icarl", {})
    assert str(error.value) == NOT_OFFERED.format(name="icarl", why=NOT_OFFERED_WHY["icarl"])
    assert str(error.value).startswith(
        "strategy 'icarl' is not offered: iCaRL is class-incremental"
    )
    assert "domain-incremental" in str(error.value)


def test_icarl_setting_fails_at_start_up() -> None:
    from pydantic import ValidationError

    from service.config import Settings

    with pytest.raises(ValidationError) as info:
        Settings(strategy="icarl")
    expected = NOT_OFFERED.format(name="icarl", why=NOT_OFFERED_WHY["icarl"])
    assert str(info.value.errors()[0]["ctx"]["error"]) == expected


def test_unknown_param_message() -> None:
    with pytest.raises(ValueError) as error:
        validate_strategy("replay", {"memsize": 10})
    assert str(error.value) == (
        "unknown parameter 'memsize' for strategy 'replay'; "
        "allowed parameters: mem_size, group_balanced, reweigh_groups"
    )
    with pytest.raises(ValueError) as error:
        validate_strategy("naive", {"mem_size": 10})
    assert str(error.value) == (
        "unknown parameter 'mem_size' for strategy 'naive'; "
        "allowed parameters: group_balanced, reweigh_groups"
    )


@pytest.mark.parametrize(
    ("name", "param", "value", "expected"),
    [
        ("replay", "mem_size", -5, "an integer >= 1"),
        ("replay", "mem_size", 2.5, "an integer >= 1"),
        ("replay", "mem_size", True, "an integer >= 1"),
        ("ewc", "ewc_lambda", "big", "a number >= 0.0"),
        ("ewc", "ewc_lambda", float("nan"), "a number >= 0.0"),
        ("ewc", "mode", "sometimes", "'separate' or 'online'"),
        ("gem", "memory_strength", -0.1, "a number >= 0.0"),
        ("agem", "sample_size", 0, "an integer >= 1"),
        ("lwf", "temperature", 0, "a number > 0"),
        ("lwf", "alpha", -1, "a number >= 0.0"),
        ("si", "eps", 0.0, "a number > 0"),
        ("si", "si_lambda", "x", "a number >= 0.0"),
        ("gdumb", "mem_size", 0, "an integer >= 1"),
        ("der", "beta", -0.5, "a number >= 0.0"),
        ("mir", "subsample", 1.5, "an integer >= 1"),
        ("naive", "group_balanced", 1, "true or false"),
        ("der", "reweigh_groups", "yes", "true or false"),
    ],
)
def test_bad_value_message(name: str, param: str, value: object, expected: str) -> None:
    with pytest.raises(ValueError) as error:
        validate_strategy(name, {param: value})
    assert str(error.value) == BAD_VALUE.format(
        value=value, param=param, name=name, expected=expected
    )


def test_exact_bad_value_text() -> None:
    with pytest.raises(ValueError) as error:
        validate_strategy("replay", {"mem_size": -5})
    assert str(error.value) == (
        "bad value -5 for parameter 'mem_size' of strategy 'replay': expected an integer >= 1"
    )


OFF = {"group_balanced": False, "reweigh_groups": False}


def test_valid_params_and_defaults() -> None:
    validate_strategy("ewc", {"ewc_lambda": 3, "mode": "online", "decay_factor": 0.5})
    assert resolve_params("replay", {}) == {"mem_size": 500, **OFF}
    assert resolve_params("gem", {"memory_strength": 1}) == {
        "patterns_per_exp": 64,
        "memory_strength": 1,
        **OFF,
    }
    assert resolve_params("naive", {}) == OFF
    assert resolve_params("agem", {}) == {"patterns_per_exp": 64, "sample_size": 64, **OFF}
    assert resolve_params("lwf", {"alpha": 2}) == {"alpha": 2.0, "temperature": 2.0, **OFF}
    assert resolve_params("si", {}) == {"si_lambda": 1.0, "eps": 1e-7, **OFF}
    assert resolve_params("gdumb", {}) == {"mem_size": 500, **OFF}
    assert resolve_params("der", {}) == {"mem_size": 500, "alpha": 0.1, "beta": 0.5, **OFF}
    assert resolve_params("mir", {}) == {
        "mem_size": 500,
        "subsample": 50,
        "batch_size_mem": 10,
        **OFF,
    }
    on = {"group_balanced": True, "reweigh_groups": True}
    for name in STRATEGY_NAMES:
        assert {k: resolve_params(name, on)[k] for k in on} == on
        assert needs_groups(name, {"reweigh_groups": True})
        assert not needs_groups(name, {})


def test_import_is_light() -> None:
    code = (
        "import sys, learners, learners.strategies, learners.models, learners.strategy_state;"
        "from learners.strategies import validate_strategy;"
        "assert 'avalanche' not in sys.modules, 'avalanche imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_build_strategy_is_quiet(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    model = SmallCNN(input_size=16)
    strategy = build_strategy(name, model, params={}, epochs=2, batch_size=8, lr=0.1)
    assert strategy.model is model
    assert isinstance(strategy.optimizer, torch.optim.SGD)
    assert strategy.optimizer.defaults["momentum"] == 0.9
    assert strategy.optimizer.defaults["lr"] == 0.1
    assert (strategy.train_epochs, strategy.train_mb_size) == (2, 8)
    assert strategy.evaluator.loggers == []
    assert capsys.readouterr().out == ""


def test_build_strategy_rejects_bad_training_settings() -> None:
    with pytest.raises(ValueError) as info:
        build_strategy("naive", SmallCNN(), params={}, epochs=0, batch_size=8, lr=0.1)
    assert str(info.value) == BAD_TRAINING.format(0, 8, 0.1)


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_fairness_options_build(name: str) -> None:
    from learners.fairness import GroupBalancedBuffer, ReweighGroupsPlugin

    on = {"group_balanced": True, "reweigh_groups": True}
    strategy = build_strategy(
        name, SmallCNN(input_size=16), params=on, epochs=1, batch_size=8, lr=0.1
    )
    assert isinstance(strategy.plugins[0], ReweighGroupsPlugin)
    holders = [p for p in [strategy, *strategy.plugins] if hasattr(p, "storage_policy")]
    assert all(isinstance(h.storage_policy, GroupBalancedBuffer) for h in holders)
    flags = [p.group_balanced for p in strategy.plugins if hasattr(p, "group_balanced")]
    assert all(flags)
    # Every strategy that keeps a memory of samples is switched to a group-balanced one.
    assert len(holders) + len(flags) == (name in ("replay", "gem", "agem", "gdumb", "der", "mir"))

    plain = build_strategy(name, SmallCNN(input_size=16), params={}, epochs=1, batch_size=8, lr=0.1)
    assert not any(isinstance(p, ReweighGroupsPlugin) for p in plain.plugins)
    holders = [p for p in [plain, *plain.plugins] if hasattr(p, "storage_policy")]
    assert not any(isinstance(h.storage_policy, GroupBalancedBuffer) for h in holders)
