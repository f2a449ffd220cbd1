"""Whether the configured strategy can continue from each stream's champion.

An update restores the champion's strategy state into a strategy built from the settings;
that needs the same strategy and the same values of the settings that decide the shape of
the state (`STATE_SHAPE_PARAMS`). Sizes and weights (mem_size, lambdas, ...) carry over: a
restored buffer is resized on the next experience. A learner checks this at start-up,
because otherwise every later update of the stream fails.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from learners.strategies import STRATEGIES, resolve_params
from service.config import Settings
from service.store.engine import Store
from service.store.schema import Champion, ModelVersion, Stream
from service.streams.configuration import StreamConfigInvalid, settings_for

log = logging.getLogger(__name__)

# group_balanced swaps a replay buffer's policy; EWC's mode keeps one or every experience.
STATE_SHAPE_PARAMS = ("group_balanced", "mode")

CHAMPION_INCOMPATIBLE = (
    "stream {stream!r}: its champion v{version} was trained with {saved}, but the settings "
    "ask for {wanted}, which cannot continue its state; set {fix} back, or give the new "
    "strategy a new stream"
)


def _own_params(params: dict[str, Any]) -> dict[str, Any]:
    """A version's recorded params without the training settings recorded beside them."""
    return {k: v for k, v in params.items() if k not in ("epochs", "lr", "batch_size")}


def state_shape(strategy: str, params: dict[str, Any]) -> dict[str, Any]:
    """The strategy's name and the values (defaults filled in) of its state-shaping settings."""
    spec = STRATEGIES.get(strategy)
    if spec is None:
        return {"strategy": strategy}
    own = _own_params(params)
    try:
        resolved = resolve_params(strategy, own)
    except ValueError:
        return {"strategy": strategy, **own}
    return {"strategy": strategy, **{k: resolved[k] for k in STATE_SHAPE_PARAMS if k in resolved}}


@dataclass(frozen=True)
class Mismatch:
    """A stream whose champion the configured strategy cannot continue."""

    stream: str
    version: int
    saved_strategy: str
    saved_params: dict[str, Any]
    saved: dict[str, Any]
    wanted: dict[str, Any]

    def message(self) -> str:
        """One line: the stream, both strategies and what to set."""
        fix = f"LEARNSTREAM_STRATEGY={self.saved_strategy}"
        if self.saved["strategy"] == self.wanted["strategy"]:
            fix = f"LEARNSTREAM_STRATEGY_PARAMS='{json.dumps(self.saved_params)}'"
        return CHAMPION_INCOMPATIBLE.format(
            stream=self.stream,
            version=self.version,
            saved=_describe(self.saved, self.wanted),
            wanted=_describe(self.wanted, self.saved),
            fix=fix,
        )


def _describe(shape: dict[str, Any], other: dict[str, Any]) -> str:
    """``shape`` by name, with the settings in which it differs from ``other``."""
    if shape["strategy"] != other["strategy"]:
        return repr(shape["strategy"])
    differ = [f"{k}={shape.get(k)}" for k in STATE_SHAPE_PARAMS if shape.get(k) != other.get(k)]
    return f"{shape['strategy']!r} ({', '.join(differ)})"


def champion_mismatches(store: Store, settings: Settings) -> list[Mismatch]:
    """Every stream whose champion's strategy state the strategy in force for the stream (its
    own, else the global one) cannot restore."""
    with store.session() as session:
        rows = session.execute(
            select(Stream, Champion.version, ModelVersion.strategy, ModelVersion.params)
            .join(Champion, Champion.stream_id == Stream.id)
            .join(
                ModelVersion,
                (ModelVersion.stream_id == Stream.id) & (ModelVersion.version == Champion.version),
            )
            .order_by(Stream.name)
        ).all()
    found = []
    for stream, version, strategy, params in rows:
        try:
            in_force = settings_for(settings, stream)  # a stream's own strategy over the global
        except StreamConfigInvalid as exc:  # that stream's windows fail, saying why; not all
            log.error("stream configuration invalid: %s", exc, extra={"stream": stream.name})
            continue
        wanted = state_shape(in_force.strategy, dict(in_force.strategy_params))
        own = _own_params(params or {})
        saved = state_shape(strategy, own)
        if saved != wanted:
            found.append(Mismatch(stream.name, version, strategy, own, saved, wanted))
    return found


def check_champions(store: Store, settings: Settings) -> str | None:
    """The line refusing to start a learner, or ``None`` when every champion can continue."""
    found = champion_mismatches(store, settings)
    if not found:
        return None
    more = f" (and {len(found) - 1} more streams)" if len(found) > 1 else ""
    return found[0].message() + more
