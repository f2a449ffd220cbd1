"""Registry of continual-learning strategies: their names, settings and how to build them.

Importing this module is cheap (no torch, no Avalanche): settings code imports
`validate_strategy` at start-up, and Avalanche is only imported inside `build_strategy`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate
    from torch import nn

UNKNOWN_STRATEGY = "unknown strategy {name!r}; known strategies: {known}"
UNKNOWN_PARAM = "unknown parameter {param!r} for strategy {name!r}; allowed parameters: {allowed}"
BAD_VALUE = "bad value {value!r} for parameter {param!r} of strategy {name!r}: expected {expected}"

# Avalanche warns about these on every build/train; they say nothing useful to our callers.
_QUIET = ("No loggers specified", "Call to deprecated function")


@dataclass(frozen=True)
class Param:
    """One strategy setting: its type, default and the rule a value must satisfy."""

    kind: type
    default: Any
    expected: str
    check: Callable[[Any], bool] = lambda _value: True

    def accepts(self, value: Any) -> bool:
        """True when `value` has the right type and satisfies the rule."""
        if isinstance(value, bool) and self.kind is not bool:
            return False
        if self.kind is float:
            ok_type = isinstance(value, int | float) and math.isfinite(value)
        else:
            ok_type = isinstance(value, self.kind)
        return ok_type and self.check(value)


def _int_param(default: int, low: int) -> Param:
    return Param(int, default, f"an integer >= {low}", lambda v: v >= low)


def _float_param(default: float, low: float) -> Param:
    return Param(float, default, f"a number >= {low}", lambda v: v >= low)


def _choice_param(default: str, choices: tuple[str, ...]) -> Param:
    return Param(str, default, " or ".join(map(repr, choices)), lambda v: v in choices)


@dataclass(frozen=True)
class StrategySpec:
    """How to build one strategy: its settings and a builder taking (common kwargs, settings)."""

    build: Callable[[dict[str, Any], dict[str, Any]], SupervisedTemplate]
    """Called with the common strategy kwargs and the resolved settings."""
    params: Mapping[str, Param] = field(default_factory=dict)


def _build_naive(common: dict[str, Any], _params: dict[str, Any]) -> SupervisedTemplate:
    from avalanche.training import Naive

    return Naive(**common)


def _build_replay(common: dict[str, Any], params: dict[str, Any]) -> SupervisedTemplate:
    from avalanche.training import Replay

    return Replay(mem_size=params["mem_size"], **common)


def _build_ewc(common: dict[str, Any], params: dict[str, Any]) -> SupervisedTemplate:
    from avalanche.training import EWC

    online = params["mode"] == "online"
    return EWC(
        ewc_lambda=params["ewc_lambda"],
        mode=params["mode"],
        decay_factor=params["decay_factor"] if online else None,
        **common,
    )


def _build_gem(common: dict[str, Any], params: dict[str, Any]) -> SupervisedTemplate:
    from avalanche.training import Naive

    from learners.keyed_gem import KeyedGEMPlugin

    # Same as avalanche.training.GEM, with a GEMPlugin that also records which samples it keeps.
    plugin = KeyedGEMPlugin(params["patterns_per_exp"], params["memory_strength"])
    return Naive(plugins=[plugin], **common)


# To add a strategy (agem, lwf, si, ...): a builder like those above and one entry here; if its
# plugin remembers anything between experiences, also a codec in learners.plugin_state.
STRATEGIES: dict[str, StrategySpec] = {
    "naive": StrategySpec(_build_naive),
    "replay": StrategySpec(_build_replay, {"mem_size": _int_param(500, low=1)}),
    "ewc": StrategySpec(
        _build_ewc,
        {
            "ewc_lambda": _float_param(100.0, low=0.0),
            "mode": _choice_param("separate", ("separate", "online")),
            # Importance decay of the 'online' mode; unused in 'separate' mode.
            "decay_factor": Param(float, 0.9, "a number in (0, 1]", lambda v: 0 < v <= 1),
        },
    ),
    "gem": StrategySpec(
        _build_gem,
        {
            "patterns_per_exp": _int_param(64, low=1),
            "memory_strength": _float_param(0.5, low=0.0),
        },
    ),
}

STRATEGY_NAMES: tuple[str, ...] = tuple(STRATEGIES)


def validate_strategy(name: str, params: dict) -> None:
    """Raise ValueError with a one-line reason unless `name` and `params` make a valid strategy."""
    spec = STRATEGIES.get(name)
    if spec is None:
        raise ValueError(UNKNOWN_STRATEGY.format(name=name, known=", ".join(STRATEGY_NAMES)))
    for param, value in params.items():
        if param not in spec.params:
            allowed = ", ".join(spec.params) or "(none)"
            raise ValueError(UNKNOWN_PARAM.format(param=param, name=name, allowed=allowed))
        rule = spec.params[param]
        if not rule.accepts(value):
            raise ValueError(
                BAD_VALUE.format(value=value, param=param, name=name, expected=rule.expected)
            )


def resolve_params(name: str, params: dict) -> dict[str, Any]:
    """The validated settings of `name` with defaults filled in for those not given."""
    validate_strategy(name, params)
    spec = STRATEGIES[name]
    return {key: rule.kind(params.get(key, rule.default)) for key, rule in spec.params.items()}


@contextmanager
def quiet_avalanche() -> Iterator[None]:
    """Hide Avalanche's routine warnings (no loggers given, deprecated internal calls).

    Avalanche resets the warning filters itself when it warns about deprecated calls, so the
    warnings are recorded instead and all but the routine ones are re-issued afterwards.
    """
    with warnings.catch_warnings(record=True) as caught:
        yield
    for warning in caught:
        if not any(text in str(warning.message) for text in _QUIET):
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )


def build_strategy(
    name: str,
    model: nn.Module,
    *,
    params: dict,
    epochs: int,
    batch_size: int,
    lr: float,
    device: str = "cpu",
) -> SupervisedTemplate:
    """An Avalanche strategy training `model` with SGD (momentum 0.9) and cross-entropy.

    Evaluation runs with no metrics and no loggers, so training prints nothing.
    """
    import torch
    from avalanche.training.plugins import EvaluationPlugin

    settings = resolve_params(name, params)
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(
            f"need epochs >= 1, batch_size >= 1 and lr > 0, got {epochs}, {batch_size}, {lr}"
        )
    with quiet_avalanche():
        common = {
            "model": model,
            "optimizer": torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9),
            "criterion": torch.nn.CrossEntropyLoss(),
            "train_mb_size": batch_size,
            "train_epochs": epochs,
            "eval_mb_size": batch_size,
            "device": device,
            "evaluator": EvaluationPlugin(),
            "eval_every": -1,
        }
        return STRATEGIES[name].build(common, settings)
