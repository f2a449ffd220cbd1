"""Registry of continual-learning strategies: their names, settings and how to build them.

Importing this module is cheap (no torch, no Avalanche): settings code imports
`validate_strategy` at start-up, and Avalanche is only imported inside `build_strategy`.

Strategies: naive, replay, ewc, gem, agem, lwf, si, gdumb, der, mir, all Avalanche's. Every
one also takes the fairness settings `group_balanced` and `reweigh_groups` (see
`learners.fairness`), which need the samples' groups.

Not here: iCaRL. It is a class-incremental method: it classifies by the nearest mean of
exemplars in feature space, keeps exemplars per class chosen by herding, and distils only
the outputs of the classes seen before. Our updates are domain-incremental (every experience
holds every class), so its class-incremental machinery has nothing to work on, and Avalanche's
ICaRL also needs the model split into a feature extractor and a classifier that its
nearest-mean classifier replaces, so the model it trains would no longer be our SmallCNN's
plain forward. It cannot be offered soundly here; asking for it fails validation with that
reason (`NOT_OFFERED_WHY`).
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
NOT_OFFERED = "strategy {name!r} is not offered: {why}"
BAD_TRAINING = "need epochs >= 1, batch_size >= 1 and lr > 0, got {}, {}, {}"

# Avalanche strategies asked for by name that cannot work on our windows, and why.
NOT_OFFERED_WHY: dict[str, str] = {
    "icarl": (
        "iCaRL is class-incremental (exemplars chosen per new class, a nearest-mean-of-exemplars "
        "classifier on a separate feature extractor), but every window of a stream holds every "
        "class of its fixed class list (domain-incremental), so it has no new classes to learn "
        "and would replace the model's own classifier; for a memory of exemplars use replay, "
        "gdumb or der"
    ),
}

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
    from avalanche.training import Naive
    from avalanche.training.plugins import ReplayPlugin

    from learners.fairness import GroupBalancedBuffer

    # As avalanche.training.Replay (Naive + ReplayPlugin), whose default storage policy is an
    # ExperienceBalancedBuffer; group_balanced swaps in a GroupBalancedBuffer.
    size = params["mem_size"]
    policy = GroupBalancedBuffer(size) if params["group_balanced"] else None
    common["plugins"].append(ReplayPlugin(size, storage_policy=policy))
    return Naive(**common)


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
    common["plugins"].append(
        KeyedGEMPlugin(
            params["patterns_per_exp"], params["memory_strength"], params["group_balanced"]
        )
    )
    return Naive(**common)


def _build_agem(common: dict[str, Any], params: dict[str, Any]) -> SupervisedTemplate:
    from avalanche.training import Naive

    from learners.domain_plugins import GroupAwareAGEMPlugin

    # Same as avalanche.training.AGEM, with a memory that can be group-balanced.
    common["plugins"].append(
        GroupAwareAGEMPlugin(
            params["patterns_per_exp"], params["sample_size"], params["group_balanced"]
        )
    )
    return Naive(**common)


def _build_lwf(common: dict[str, Any], params: dict[str, Any]) -> SupervisedTemplate:
    from avalanche.training import LwF

    return LwF(alpha=params["alpha"], temperature=params["temperature"], **common)


def _build_si(common: dict[str, Any], params: dict[str, Any]) -> SupervisedTemplate:
    from avalanche.training import Naive

    from learners.domain_plugins import CPUSynapticIntelligencePlugin

    # As avalanche.training.SynapticIntelligence (Naive + its plugin), with a plugin that also
    # works on a CPU (Avalanche's does nothing there; see the plugin).
    common["plugins"].append(CPUSynapticIntelligencePlugin(params["si_lambda"], params["eps"]))
    return Naive(**common)


def _build_gdumb(common: dict[str, Any], params: dict[str, Any]) -> SupervisedTemplate:
    from avalanche.training import GDumb
    from avalanche.training.plugins import GDumbPlugin

    from learners.fairness import GroupBalancedBuffer

    strategy = GDumb(mem_size=params["mem_size"], **common)
    if params["group_balanced"]:
        # GDumb's buffer is class-balanced; balance it over (group, class) pairs instead.
        (plugin,) = (p for p in strategy.plugins if isinstance(p, GDumbPlugin))
        plugin.storage_policy = GroupBalancedBuffer(params["mem_size"], by_class=True)
    return strategy


def _build_der(common: dict[str, Any], params: dict[str, Any]) -> SupervisedTemplate:
    from avalanche.training import DER

    from learners.fairness import GroupBalancedBuffer

    size = params["mem_size"]
    strategy = DER(mem_size=size, alpha=params["alpha"], beta=params["beta"], **common)
    if params["group_balanced"]:
        # DER's buffer is class-balanced and keeps logits; balance it over (group, class).
        strategy.storage_policy = GroupBalancedBuffer(size, by_class=True, with_logits=True)
    return strategy


def _build_mir(common: dict[str, Any], params: dict[str, Any]) -> SupervisedTemplate:
    from avalanche.training import Naive

    from learners.domain_plugins import DomainMIRPlugin
    from learners.fairness import GroupBalancedBuffer

    # As avalanche.training.MIR (Naive + MIRPlugin), replaying from the whole buffer.
    size = params["mem_size"]
    plugin = DomainMIRPlugin(
        batch_size_mem=params["batch_size_mem"], mem_size=size, subsample=params["subsample"]
    )
    if params["group_balanced"]:
        # MIR's buffer is class-balanced; balance it over (group, class) pairs instead.
        plugin.storage_policy = GroupBalancedBuffer(size, by_class=True)
    common["plugins"].append(plugin)
    return Naive(**common)


def _positive_float(default: float) -> Param:
    return Param(float, default, "a number > 0", lambda v: v > 0)


# To add a strategy: a builder like those above and one entry here; if its plugin remembers
# anything between experiences, also a codec in learners.plugin_state. Every strategy also
# takes the FAIRNESS_PARAMS.
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
    # A-GEM's memory grows by patterns_per_exp per experience, and each reference batch takes
    # sample_size // experiences samples per experience (Avalanche fails once that is 0).
    "agem": StrategySpec(
        _build_agem,
        {"patterns_per_exp": _int_param(64, low=1), "sample_size": _int_param(64, low=1)},
    ),
    "lwf": StrategySpec(
        _build_lwf, {"alpha": _float_param(1.0, low=0.0), "temperature": _positive_float(2.0)}
    ),
    "si": StrategySpec(
        _build_si, {"si_lambda": _float_param(1.0, low=0.0), "eps": _positive_float(1e-7)}
    ),
    "gdumb": StrategySpec(_build_gdumb, {"mem_size": _int_param(500, low=1)}),
    "der": StrategySpec(
        _build_der,
        {
            "mem_size": _int_param(500, low=1),
            "alpha": _float_param(0.1, low=0.0),
            "beta": _float_param(0.5, low=0.0),
        },
    ),
    "mir": StrategySpec(
        _build_mir,
        {
            "mem_size": _int_param(500, low=1),
            "subsample": _int_param(50, low=1),
            "batch_size_mem": _int_param(10, low=1),
        },
    ),
}

FAIRNESS_PARAMS: dict[str, Param] = {
    # Where the strategy keeps a replay buffer, share it equally among the samples' groups.
    "group_balanced": Param(bool, False, "true or false"),
    # Weigh each sample's loss by the inverse frequency of its group (mean weight 1).
    "reweigh_groups": Param(bool, False, "true or false"),
}
"""Settings every strategy takes; switching one on needs the samples' groups."""

STRATEGY_NAMES: tuple[str, ...] = tuple(STRATEGIES)


def validate_strategy(name: str, params: dict) -> None:
    """Raise ValueError with a one-line reason unless `name` and `params` make a valid strategy."""
    if name in NOT_OFFERED_WHY:
        raise ValueError(NOT_OFFERED.format(name=name, why=NOT_OFFERED_WHY[name]))
    spec = STRATEGIES.get(name)
    if spec is None:
        raise ValueError(UNKNOWN_STRATEGY.format(name=name, known=", ".join(STRATEGY_NAMES)))
    rules = {**spec.params, **FAIRNESS_PARAMS}
    for param, value in params.items():
        if param not in rules:
            allowed = ", ".join(rules)
            raise ValueError(UNKNOWN_PARAM.format(param=param, name=name, allowed=allowed))
        rule = rules[param]
        if not rule.accepts(value):
            raise ValueError(
                BAD_VALUE.format(value=value, param=param, name=name, expected=rule.expected)
            )


def resolve_params(name: str, params: dict) -> dict[str, Any]:
    """The validated settings of `name` with defaults filled in for those not given."""
    validate_strategy(name, params)
    rules = {**STRATEGIES[name].params, **FAIRNESS_PARAMS}
    return {key: rule.kind(params.get(key, rule.default)) for key, rule in rules.items()}


def needs_groups(name: str, params: dict) -> bool:
    """True when the settings switch on an option that needs each sample's group."""
    settings = resolve_params(name, params)
    return any(settings[key] for key in FAIRNESS_PARAMS)


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

    Evaluation runs with no metrics and no loggers, so training prints nothing. With
    `reweigh_groups`, a `ReweighGroupsPlugin` comes first among the plugins.
    """
    import torch
    from avalanche.training.plugins import EvaluationPlugin

    from learners.fairness import ReweighGroupsPlugin

    settings = resolve_params(name, params)
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(BAD_TRAINING.format(epochs, batch_size, lr))
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
            # Reweighing goes first, so the strategy's own hooks see the reweighed loss.
            "plugins": [ReweighGroupsPlugin()] if settings["reweigh_groups"] else [],
        }
        return STRATEGIES[name].build(common, settings)
