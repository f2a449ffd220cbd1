"""Training a candidate on the windows its champion has not learned, and writing it.

Training is seeded by ``seed + window number`` and sees the samples in arrival order, so
the same window gives bit-identical weights in any process (``test_processor_restart``).
The manifest records the epochs, learning rate and batch size that really ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from learners.devices import resolve_device
from learners.models import Classifier, build_model, to_float
from learners.strategy_state import StrategyState
from learners.update import UpdateResult, train_update
from service.config import Settings
from service.models.registry import Registry
from service.pipeline.adaptation import Step
from service.store.batches import Batch
from service.store.schema import Stream, Window


@dataclass(frozen=True)
class TrainingRun:
    """How one candidate is trained: what its manifest records besides the strategy's params."""

    epochs: int
    learning_rate: float
    batch_size: int
    seed: int

    @classmethod
    def for_window(cls, settings: Settings, window: int, *, epochs: int) -> TrainingRun:
        """The run on window number ``window``, seeded by ``settings.seed + window``."""
        return cls(
            epochs, settings.learning_rate, settings.train_batch_size, settings.seed + window
        )

    def manifest_params(self, strategy_params: dict[str, Any]) -> dict[str, Any]:
        return {
            **strategy_params,
            "epochs": self.epochs,
            "lr": self.learning_rate,
            "batch_size": self.batch_size,
        }


@dataclass(frozen=True)
class Candidate:
    """A trained candidate written to the registry (status ``candidate``)."""

    version: int
    model: Classifier


def fresh_model(settings: Settings, stream: Stream) -> Classifier:
    """A new model of the stream's architecture and starting weights: version 1's start, and
    a retrain's after a deletion."""
    return build_model(
        n_classes=len(stream.classes),
        in_channels=stream.channels,
        input_size=stream.size,
        seed=settings.seed,
        name=settings.model_arch,
        weights=settings.model_weights,
        mean=settings.input_mean,
        std=settings.input_std,
        train=settings.train_layers,
    )


def should_update(settings: Settings, drifted: bool, adaptation: Step) -> bool:
    """Whether the update policy trains a candidate on this window."""
    if settings.update_policy == "adaptive":
        return adaptation.trains
    if settings.update_policy == "every_window":
        return True
    if settings.update_policy == "on_drift":
        return drifted
    return False


def training_windows(
    session: Session, stream: Stream, learned: list[int], current: Window, limit: int
) -> list[int]:
    """Ids of the newest ``limit`` windows up to ``current`` that the champion has not learned
    (after the last of its ``learned`` window ids), oldest first; quarantined windows left out."""
    ids = session.scalars(
        select(Window.id)
        .where(
            Window.stream_id == stream.id,
            Window.id > max(learned, default=0),
            Window.seq <= current.seq,
            Window.quarantined.is_(False),
        )
        .order_by(Window.seq.desc())
        .limit(limit)
    ).all()
    return sorted(ids) or [current.id]


def train(
    settings: Settings,
    model: Classifier,
    samples: Batch,
    state: StrategyState | None,
    run: TrainingRun,
) -> UpdateResult:
    """A copy of ``model`` trained on ``samples``, in their order, as the next experience."""
    return train_update(
        model,
        to_float(samples.x),
        samples.y_tensor,
        sample_ids=samples.sample_ids,
        groups=[str(g) for g in samples.groups],
        strategy=settings.strategy,
        params=dict(settings.strategy_params),
        state=state,
        epochs=run.epochs,
        batch_size=run.batch_size,
        lr=run.learning_rate,
        seed=run.seed,
        device=resolve_device(settings.device),
    )


def write_candidate(
    registry: Registry,
    settings: Settings,
    stream: Stream,
    trained: UpdateResult,
    run: TrainingRun,
    *,
    parent: int | None,
    windows: list[int],
) -> Candidate:
    """Write the trained model and state as the stream's next version (status ``candidate``)."""
    version = registry.create_version(
        stream,
        trained.model,
        trained.state,
        parent=parent,
        strategy=settings.strategy,
        params=run.manifest_params(settings.strategy_params),
        windows=[int(w) for w in windows],
        arch=trained.model.arch,
    )
    return Candidate(version, trained.model)
