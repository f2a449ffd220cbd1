"""Strategy registry: names, settings validation, building quiet Avalanche strategies."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from learners.models import SmallCNN
from learners.strategies import (
    BAD_VALUE,
    STRATEGY_NAMES,
    build_strategy,
    resolve_params,
    validate_strategy,
)


def test_names() -> None:
    assert STRATEGY_NAMES == ("naive", "replay", "ewc", "gem")


def test_unknown_strategy_message() -> None:
    with pytest.raises(ValueError) as error:
        validate_strategy("lwf2", {})
    assert str(error.value) == (
        "unknown strategy 'lwf2'; known strategies: naive, replay, ewc, gem"
    )


def test_unknown_param_message() -> None:
    with pytest.raises(ValueError) as error:
        validate_strategy("replay", {"memsize": 10})
    assert str(error.value) == (
        "unknown parameter 'memsize' for strategy 'replay'; allowed parameters: mem_size"
    )
    with pytest.raises(ValueError) as error:
        validate_strategy("naive", {"mem_size": 10})
    assert str(error.value) == (
        "unknown parameter 'mem_size' for strategy 'naive'; allowed parameters: (none)"
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


def test_valid_params_and_defaults() -> None:
    validate_strategy("ewc", {"ewc_lambda": 3, "mode": "online", "decay_factor": 0.5})
    assert resolve_params("replay", {}) == {"mem_size": 500}
    assert resolve_params("gem", {"memory_strength": 1}) == {
        "patterns_per_exp": 64,
        "memory_strength": 1,
    }
    assert resolve_params("naive", {}) == {}


def test_import_is_light() -> None:
    code = (
        "import sys, learners, learners.strategies, learners.models, learners.state;"
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
    with pytest.raises(ValueError, match="epochs"):
        build_strategy("naive", SmallCNN(), params={}, epochs=0, batch_size=8, lr=0.1)
