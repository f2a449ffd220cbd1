"""Processing a closed window: the stages of DESIGN.md's "Processing a window", in order.

Each stage takes what it needs and returns a typed result; this module only composes
them and builds the window's :class:`WindowOutcome` from their results.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select

from service.context import Service
from service.pipeline import notifications
from service.pipeline.adaptation import (
    Adaptation,
    AdaptSettings,
    Counts,
    Step,
    adaptation_history,
    step,
    window_counts,
)
from service.pipeline.bootstrap import Bootstrap, bootstrap
from service.pipeline.claims import (
    claim_next_window,
    discard_dead_attempt,
    finish_window,
    release_window,
)
from service.pipeline.decision import Decision, decide, update_failed
from service.pipeline.drift import DriftFindings, run_drift_tests
from service.pipeline.eras import Eras, eras_after
from service.pipeline.gate import judge
from service.pipeline.group_gap import GapCheck, check_gap, record_gap
from service.pipeline.holdout import gate_holdout, recent_champions
from service.pipeline.inputs import Champion, WindowInputs, load_inputs, model_outputs
from service.pipeline.prequential import Prequential, score_window
from service.pipeline.records import record_drift
from service.pipeline.reference import Reference, load_reference
from service.pipeline.screen import (
    NOT_SCREENED_DRIFT,
    NOT_SCREENED_NEW_ERA,
    Screen,
    judged_classes,
    reference_flags,
    screen_labels,
)
from service.pipeline.timing import Stopwatch
from service.pipeline.update import (
    TrainingRun,
    should_update,
    train,
    training_windows,
    write_candidate,
)
from service.quarantine.records import flags_from, hold_samples, hold_window
from service.quarantine.suspect import record_screen
from service.store.batches import load_batch
from service.store.schema import Window
from service.traffic.drift import check_pending_traffic
from service.traffic.sign import TrafficSign, traffic_sign

__all__ = ["WindowOutcome", "claim_next_window", "process_pending", "release_window"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowOutcome:
    """What processing one window decided; stored as the window's summary."""

    stream: str
    window: int
    champion_before: int | None
    champion_after: int | None = None
    prequential_accuracy: dict[str, float] = field(default_factory=dict)
    drift: dict[str, bool] = field(default_factory=dict)
    drifted_groups: dict[str, list[str]] = field(default_factory=dict)
    prequential_counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    adaptation: dict[str, Any] | None = None
    group_gap: dict[str, Any] | None = None
    eras: dict[str, int] = field(default_factory=dict)
    screen: dict[str, Any] | None = None
    traffic: dict[str, Any] | None = None  # the traffic incident that started an adaptation
    updated: bool = False
    candidate: int | None = None
    gate_passed: bool | None = None
    gate_reasons: list[str] = field(default_factory=list)
    promoted: int | None = None
    rejected: int | None = None
    error: str | None = None
    note: str = ""
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def drifted(self) -> bool:
        return any(self.drift.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def process_pending(service: Service, stream_name: str) -> list[WindowOutcome]:
    """Test the stream's closed traffic windows for drift (:mod:`service.traffic.drift`),
    then process every closed labelled window, oldest first; returns what each decided."""
    with service.store.session() as session:
        stream_id = service.store.stream(session, stream_name).id
    try:
        check_pending_traffic(service, stream_name)
    except Exception:  # traffic is watched, not learned from: its failure must not stop learning
        log.exception("traffic drift tests failed", extra={"stream": stream_name})
    outcomes = []
    while (window_id := claim_next_window(service, stream_id)) is not None:
        try:
            outcomes.append(process_window(service, stream_name, window_id))
        except BaseException:
            release_window(service, window_id)
            raise
    return outcomes


def process_window(service: Service, stream_name: str, window_id: int) -> WindowOutcome:
    """Run every stage on one claimed window and mark it processed with its outcome."""
    clock = Stopwatch()
    with service.store.session() as session:
        service = service.for_stream(service.store.stream(session, stream_name))
    with clock.stage("inputs"):
        inputs = load_inputs(service, stream_name, window_id)
    discard_dead_attempt(service, inputs.stream, window_id)
    champion = inputs.champion
    if champion is None:
        cold = bootstrap(service, inputs, clock)
        outcome = _outcome(service, inputs, clock, cold=cold)
    else:
        with clock.stage("prequential"):
            scored = score_window(inputs.batch, champion.outputs.predictions)
        before, history = adaptation_history(
            service.store, inputs.stream, inputs.window.seq, service.settings.adapt_baseline_windows
        )
        with clock.stage("drift"):
            findings, reference = _drift(
                service, inputs, champion, scored, before.get("eras") or {}
            )
        counts = scored.counts
        eras = eras_after(before, findings.drifted_groups, inputs.window.seq)
        with clock.stage("screen"):
            screen = _screen(service, inputs, champion, findings, eras, reference)
        sign = _traffic_sign(service, inputs)
        policy = _adapt(service, inputs, counts, findings, before, history, sign)
        gap = _group_gap(service, inputs, counts, before)
        decision = None
        if should_update(service.settings, findings.drifted or sign is not None, policy):
            decision = _update(service, inputs, champion, eras, clock)
            _hold_rejected_window(service, inputs, findings, decision)
        outcome = _outcome(
            service,
            inputs,
            clock,
            scored=scored,
            findings=findings,
            decision=decision,
            counts=counts,
            adaptation=policy.adaptation,
            gap=gap,
            eras=eras,
            screen=screen,
            sign=sign,
        )
    finish_window(
        service,
        window_id,
        served_by=inputs.champion_version,
        drifted=outcome.drifted,
        summary=outcome.to_dict(),
    )
    log.info(
        "window processed",
        extra={
            "stream": stream_name,
            "window": outcome.window,
            "drift": outcome.drift,
            "candidate": outcome.candidate,
            "gate_passed": outcome.gate_passed,
            "promoted": outcome.promoted,
            "error": outcome.error,
        },
    )
    return outcome


def _drift(
    service: Service, inputs: WindowInputs, champion: Champion, scored: Prequential, eras: Eras
) -> tuple[DriftFindings, Reference]:
    """The drift tests against the champion's reference (each group's from its era on),
    recorded as reports and incidents; the reference they compared with."""
    s = service.settings
    reference = load_reference(
        service.store,
        inputs.stream,
        champion.loaded,
        seq=inputs.window.seq,
        eras=eras,
        limit=s.reference_size,
        features=s.drift_feature_space == "penultimate",
    )
    findings = run_drift_tests(service, inputs, champion, scored, reference)
    record_drift(service.store, inputs, scored, reference, findings, s.incident_samples)
    return findings, reference


def _screen(
    service: Service,
    inputs: WindowInputs,
    champion: Champion,
    findings: DriftFindings,
    eras: Eras,
    reference: Reference,
) -> Screen | None:
    """The label screen of the window (:mod:`service.pipeline.screen`): suspect groups'
    flagged samples held in quarantine, and their ``labels.suspect`` incidents."""
    s, batch, seq = service.settings, inputs.batch, inputs.window.seq
    if not s.label_screen:
        return None
    learned = _last_learned_seq(service, champion)
    # An overall covariate drift that names no group does not say whose inputs changed.
    unknown_shift = findings.drift.get("covariate", False) and not findings.drifted_groups.get(
        "covariate"
    )
    skip = {}
    for group in {str(g) for g in batch.groups}:
        if unknown_shift:
            skip[group] = NOT_SCREENED_DRIFT
        elif eras.get(group, 0) > learned:
            skip[group] = NOT_SCREENED_NEW_ERA
    screen = screen_labels(
        batch.y,
        champion.outputs.probabilities,
        batch.groups,
        skip=skip,
        reference=reference_flags(
            reference.holdout.y,
            reference.probabilities,
            reference.holdout.groups,
            min_n=s.min_drift_group_size,
        ),
        alpha=s.label_screen_alpha,
        margin=s.label_screen_margin,
        judged_classes=judged_classes(reference.holdout.y),
        min_group_size=s.min_drift_group_size,
    )
    flags = flags_from(batch.row_ids, screen.quarantined, batch.y, screen.believed, screen.scores)
    held = {str(g): int((screen.quarantined & (batch.groups == g)).sum()) for g in screen.groups}
    with service.store.session() as session:
        hold_samples(
            session,
            inputs.stream.id,
            inputs.window.id,
            flags,
            reason=f"label screen of window {seq}: its group's labels are suspect under "
            f"v{champion.version}",
        )
        record_screen(
            session,
            stream_id=inputs.stream.id,
            stream=inputs.stream.name,
            window=seq,
            screen=screen,
            quarantined=held,
        )
    return screen


def _last_learned_seq(service: Service, champion: Champion) -> int:
    """The number of the last window the champion (or an ancestor) trained on."""
    learned = [int(w) for w in champion.loaded.manifest.get("windows", [])]
    if not learned:
        return 0
    with service.store.session() as session:
        numbers = session.scalars(select(Window.seq).where(Window.id.in_(learned))).all()
    return max(numbers, default=0)


def _hold_rejected_window(
    service: Service, inputs: WindowInputs, findings: DriftFindings, decision: Decision
) -> None:
    """A window whose candidate the gate rejected under concept or label drift is held out of
    later gates, references and training until an operator releases it."""
    kinds = [k for k in ("concept", "label") if findings.drift.get(k)]
    if decision.rejected is None or decision.gate_passed is not False or not kinds:
        return
    with service.store.session() as session:
        hold_window(
            session,
            inputs.stream.id,
            inputs.window.id,
            reason=f"candidate v{decision.rejected} rejected under {' and '.join(kinds)} drift "
            f"on window {inputs.window.seq}",
        )


def _traffic_sign(service: Service, inputs: WindowInputs) -> TrafficSign | None:
    """With ``adapt_on_traffic_drift``, the open traffic incident whose labels this window
    brings (:mod:`service.traffic.sign`)."""
    s = service.settings
    if not s.adapt_on_traffic_drift:
        return None
    with service.store.session() as session:
        return traffic_sign(
            session,
            inputs.stream.id,
            inputs.batch.sample_ids,
            inputs.batch.groups.tolist(),
            s.min_drift_group_size,
        )


def _group_gap(
    service: Service, inputs: WindowInputs, counts: Counts, before: dict[str, Any]
) -> GapCheck:
    """The champion's group gap on this window, and its ``fairness.gap`` incident."""
    s = service.settings
    check = check_gap(
        counts,
        int((before.get("group_gap") or {}).get("run", 0)),
        limit=s.champion_gap_max,
        confidence=s.gate_confidence,
        min_n=s.min_group_size,
    )
    with service.store.session() as session:
        record_gap(
            session,
            stream_id=inputs.stream.id,
            stream=inputs.stream.name,
            champion=inputs.champion_version or 0,
            window=inputs.window.seq,
            check=check,
            windows_needed=s.champion_gap_windows,
            limit=s.champion_gap_max,
        )
    return check


def _adapt(
    service: Service,
    inputs: WindowInputs,
    counts: Counts,
    findings: DriftFindings,
    before: dict[str, Any],
    history: list[Counts],
    sign: TrafficSign | None,
) -> Step:
    """The adaptive policy's step on this window, from the summaries of the windows before
    (and the traffic incident ``sign`` whose labels arrived, as drift of its groups);
    ``fairness.gap`` once when an adaptation has stayed behind for its patience."""
    s = service.settings
    if s.update_policy != "adaptive":
        return Step(None)
    previous = Adaptation.from_dict(before.get("adaptation"))
    if not history:  # the first windows after version 1: its training era is the baseline
        history = [_era_counts(service, inputs)]
    drifted_groups = {g for groups in findings.drifted_groups.values() for g in groups}
    policy = step(
        previous,
        inputs.window.seq,
        counts,
        history,
        drifted_groups | set(sign.groups if sign else []),
        findings.drifted or sign is not None,
        AdaptSettings.from_settings(s),
        first_sign=sign.reason if sign else "",
    )
    if policy.fell_behind and policy.adaptation is not None:
        notifications.adaptation_behind(
            service.store, inputs.stream, inputs.window.seq, policy.adaptation, policy.behind
        )
    return policy


def _era_counts(service: Service, inputs: WindowInputs) -> Counts:
    """The champion's (correct, n) per group on the holdout of the windows it learned."""
    champion = inputs.champion
    assert champion is not None
    learned = [int(w) for w in champion.loaded.manifest.get("windows", [])]
    with service.store.session() as session:
        holdout = load_batch(session, inputs.stream, learned, split="holdout")
    if not len(holdout.y):
        return {}
    outputs = model_outputs(champion.loaded.model, holdout.x, features=False)
    return window_counts(outputs.predictions == holdout.y, holdout.groups)


def _update(
    service: Service, inputs: WindowInputs, champion: Champion, eras: Eras, clock: Stopwatch
) -> Decision:
    """Train a candidate from the champion on the windows it has not learned (this one and
    up to ``train_windows`` in all), gate it, promote or reject it."""
    s, loaded = service.settings, champion.loaded
    run = TrainingRun.for_window(s, inputs.window.seq, epochs=s.train_epochs)
    with service.store.session() as session:
        learned = [int(w) for w in loaded.manifest.get("windows", [])]
        window_ids = training_windows(
            session, inputs.stream, learned, inputs.window, s.train_windows
        )
        samples = load_batch(session, inputs.stream, window_ids, split="train")
    candidate = None
    try:
        # Classes added to the stream since the champion was trained: its head grows.
        model = loaded.model.with_classes(len(inputs.stream.classes), seed=run.seed)
        with clock.stage("update"):
            trained = train(s, model, samples, loaded.state, run)
        written = write_candidate(
            service.registry,
            s,
            inputs.stream,
            trained,
            run,
            parent=champion.version,
            windows=window_ids,
        )
        candidate = written.version
        with clock.stage("gate"):
            holdout = gate_holdout(service.store, inputs.stream, s)
            earlier = {
                v: service.version(inputs.stream.name, v).model
                for v in recent_champions(
                    service.store, holdout, champion.version, s.gate_chain_versions
                )
            }
            report = judge(
                loaded.model,
                written.model,
                holdout,
                s,
                eras=eras,
                earlier=earlier,
                classes=list(inputs.stream.classes),
            )
    except Exception as exc:  # a crash in an update leaves the champion serving
        return update_failed(service, inputs, candidate, exc)
    return decide(service, inputs, candidate, report)


def _outcome(
    service: Service,
    inputs: WindowInputs,
    clock: Stopwatch,
    *,
    cold: Bootstrap | None = None,
    scored: Prequential | None = None,
    findings: DriftFindings | None = None,
    decision: Decision | None = None,
    counts: Counts | None = None,
    adaptation: Adaptation | None = None,
    gap: GapCheck | None = None,
    eras: Eras | None = None,
    screen: Screen | None = None,
    sign: TrafficSign | None = None,
) -> WindowOutcome:
    """The window's outcome from the stages' results."""
    if cold is not None:
        decision = cold.decision
    notes = [n for n in (cold.note if cold else "", findings.note if findings else "") if n]
    d = decision or Decision()
    return WindowOutcome(
        stream=inputs.stream.name,
        window=inputs.window.seq,
        champion_before=inputs.champion_version,
        champion_after=service.registry.champion(inputs.stream.id),
        prequential_accuracy=dict(scored.accuracy) if scored else {},
        drift=findings.drift if findings else {},
        drifted_groups=findings.drifted_groups if findings else {},
        prequential_counts=counts or {},
        adaptation=adaptation.to_dict() if adaptation else None,
        group_gap=gap.to_dict() if gap else None,
        eras=eras or {},
        screen=screen.to_dict() if screen else None,
        traffic=sign.to_dict() if sign else None,
        updated=decision is not None,
        candidate=d.candidate,
        gate_passed=d.gate_passed,
        gate_reasons=list(d.gate_reasons),
        promoted=d.promoted,
        rejected=d.rejected,
        error=d.error,
        note="; ".join(notes),
        seconds=clock.total(),
    )
