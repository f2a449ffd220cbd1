"""A stream's configuration: which settings a stream may set for itself, and the settings in
force for one stream (its own values over the global ones).

A stream stores only what it sets (``Stream.config``, by setting name); every other setting
comes from the global :class:`~service.config.Settings`, so an auto-created stream behaves as
today and a change of a global default reaches every stream that did not set it.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Collection, Iterable
from typing import Any

from pydantic import ValidationError

from service.config import Settings, settings_error
from service.errors import LearnstreamError
from service.store.schema import Stream

# The settings a stream may set, by section of the configuration it shows.
SECTIONS: dict[str, tuple[str, ...]] = {
    "input": ("input_mean", "input_std"),
    "model": ("model_arch", "model_weights", "train_layers", "drift_feature_space"),
    "strategy": ("strategy", "strategy_params"),
    "windows": ("window_size", "window_max_age", "window_min_size", "holdout_fraction"),
    "retention": ("retention_max_age", "retention_max_samples"),
    "traffic": (
        "traffic_capture",
        "traffic_p_value",
        "traffic_window_size",
        "traffic_window_max_age",
        "traffic_max_rows",
        "traffic_retention",
    ),
    "learning": (
        "update_policy",
        "train_windows",
        "adapt_margin",
        "adapt_alpha",
        "adapt_close_confidence",
        "adapt_patience",
        "champion_gap_max",
        "champion_gap_windows",
        "adapt_baseline_windows",
        "adapt_on_traffic_drift",
        "train_epochs",
        "train_batch_size",
        "learning_rate",
        "bootstrap_samples",
        "bootstrap_epochs",
        "min_bootstrap_accuracy",
        "seed",
    ),
    "gate": (
        "gate_tolerance",
        "min_group_size",
        "max_gap_increase",
        "gate_confidence",
        "gate_windows",
        "gate_max_per_window",
        "gate_recent_windows",
        "gate_chain_tolerance",
        "gate_chain_versions",
    ),
    "drift": (
        "drift_p_value",
        "drift_permutations",
        "drift_detector",
        "drift_mode",
        "drift_online_ert",
        "drift_online_window",
        "drift_online_bootstraps",
        "drift_encoder_dim",
        "drift_encoder_seed",
        "concept_detector",
        "concept_delta",
        "reference_size",
        "min_drift_group_size",
        "incident_samples",
    ),
    "labels": ("label_screen", "label_screen_alpha", "label_screen_margin"),
}
STREAM_FIELDS: frozenset[str] = frozenset(name for names in SECTIONS.values() for name in names)

# Changing these after creation would leave the stream's stored state invalid: its models'
# architecture and inputs, the split of samples already stored, the drift reference's space.
UNSAFE_WHY: dict[str, str] = {
    "model_arch": "the stream's versions are models of that architecture",
    "model_weights": "version 1 and every version after it descend from those weights",
    "train_layers": "the strategy's state (EWC/SI importances, optimiser) covers those layers",
    "input_mean": "the models were trained on inputs normalised that way",
    "input_std": "the models were trained on inputs normalised that way",
    "drift_feature_space": "the drift references were computed in that feature space",
    "drift_encoder_dim": "the drift references were computed in that feature space",
    "drift_encoder_seed": "the drift references were computed in that feature space",
    "strategy": "the champion's strategy state (buffers, importances) belongs to that strategy",
    "holdout_fraction": "the samples already stored were split with it, and the gate compares "
    "candidates on that holdout",
}
# Strategy parameters that size or shape the stored strategy state.
_VARIABLE = re.compile(r"LEARNSTREAM_([A-Z0-9_]+)")
STATE_PARAMS: frozenset[str] = frozenset({"mem_size", "patterns_per_exp", "mode", "group_balanced"})
UNSAFE_ADVICE = (
    "create a new stream with the configuration you want (learnstream streams create) "
    "and send its samples there"
)


class StreamConfigInvalid(LearnstreamError, ValueError):
    """A stream configuration cannot be used; the message names the field and the problem."""

    status_code = 422


class StreamChangeRefused(LearnstreamError, ValueError):
    """A change to a stream's configuration would invalidate what the stream has stored."""

    status_code = 409


def unsafe_change(name: str, old: Any, new: Any) -> str | None:
    """Why changing the stream setting ``name`` from ``old`` to ``new`` is unsafe, or None."""
    if old == new:
        return None
    if name in UNSAFE_WHY:
        return UNSAFE_WHY[name]
    if name == "strategy_params":
        changed = sorted(
            key
            for key in set(old or {}) | set(new or {})
            if key in STATE_PARAMS and (old or {}).get(key) != (new or {}).get(key)
        )
        if changed:
            return f"strategy parameter(s) {', '.join(changed)} size the stored strategy state"
    return None


def refuse_unknown(
    keys: Iterable[str], allowed: Collection[str], what: str, prefix: str = ""
) -> None:
    """Refuse the first of ``keys`` not ``allowed``, as ``<prefix><key>: <what> <allowed>``."""
    unknown = sorted(set(keys) - set(allowed))
    if unknown:
        raise StreamConfigInvalid(f"{prefix}{unknown[0]}: {what} " + ", ".join(sorted(allowed)))


def check_names(values: dict[str, Any]) -> None:
    """Refuse a setting a stream cannot set, naming it and the ones it can."""
    refuse_unknown(values, STREAM_FIELDS, "not a setting a stream can set; a stream sets:")


def merged(settings: Settings, values: dict[str, Any]) -> Settings:
    """The global ``settings`` with the stream's ``values`` over them, validated as a whole
    (so a rule across settings holds); a bad value raises :class:`StreamConfigInvalid`."""
    check_names(values)
    try:
        # model_validate skips the environment: only the two mappings given count.
        return Settings.model_validate({**settings.model_dump(), **values})
    except ValidationError as exc:
        # The message names environment variables; a stream's fields go by their names.
        text = _VARIABLE.sub(lambda m: m.group(1).lower(), str(settings_error(exc)))
        raise StreamConfigInvalid(text) from None


def validated(settings: Settings, values: dict[str, Any]) -> tuple[dict[str, Any], Settings]:
    """``values`` as validated and stored (JSON: a path as text), and the settings in force
    with them."""
    in_force = merged(settings, values)
    full = in_force.model_dump(mode="json", include=set(values))
    return {name: full[name] for name in values}, in_force


class _Cache:
    """The settings in force per (global settings, stream configuration): a learner asks for
    them for every window, and validating them each time would cost more than the window's
    bookkeeping."""

    def __init__(self, size: int = 64) -> None:
        self._entries: OrderedDict[tuple[int, str], tuple[Settings, Settings]] = OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def get(self, settings: Settings, config: dict[str, Any]) -> Settings:
        key = (id(settings), json.dumps(config, sort_keys=True))
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is settings:
                self._entries.move_to_end(key)
                return entry[1]
        value = merged(settings, config)
        with self._lock:
            self._entries[key] = (settings, value)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return value


_cache = _Cache()


def settings_for(settings: Settings, stream: Stream) -> Settings:
    """The settings in force for ``stream``: its own values over the global ``settings``."""
    if not stream.config:
        return settings
    return _cache.get(settings, dict(stream.config))
