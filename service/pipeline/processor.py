"""Processing a closed window: prequential check, drift, update, gate, swap, reports and alerts.

Windows of a stream are processed one at a time in arrival order: a worker
claims the oldest closed window only while no other window of the stream is
being processed, so at most one learner works on a stream even when several
``process_window`` tasks run at once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import torch
from sqlalchemy import delete, select, update

from drift.concept import concept_drift
from drift.detectors import make_covariate_detector
from drift.features import penultimate_features
from drift.label import label_shift
from drift.online import OnlineCovariateDetector
from drift.result import DriftResult
from drift.witness import most_shifted
from learners.evaluation import evaluate_by_group, predict
from learners.models import build_model, to_float
from learners.update import train_update
from service.alerts import incidents
from service.alerts import records as alerts
from service.context import Service
from service.models.registry import LoadedVersion
from service.pipeline.gate import GateReport, GateSettings, run_gate
from service.store.batches import Batch, concat, load_batch
from service.store.schema import DriftReport, Window, utcnow
from service.store.streams import lock_stream

log = logging.getLogger(__name__)


@dataclass
class WindowOutcome:
    """What processing one window decided; stored as the window's summary."""

    stream: str
    window: int
    champion_before: int | None
    champion_after: int | None = None
    prequential_accuracy: dict[str, float] = field(default_factory=dict)
    drift: dict[str, bool] = field(default_factory=dict)
    drifted_groups: dict[str, list[str]] = field(default_factory=dict)
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


def _shares(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Each class's share of ``labels``."""
    return np.bincount(labels, minlength=n_classes) / max(len(labels), 1)


@dataclass
class Reference:
    """What a window is compared with, all from windows the champion knows.

    ``holdout``: held-out samples (covariate reference); ``labels``: every sample of those
    windows (label reference); ``unseen``: the samples the champion never trained on
    (its error history for the concept detector).
    """

    holdout: Batch
    labels: Batch
    unseen: Batch


def claim_next_window(service: Service, stream_id: int) -> int | None:
    """Claim the oldest closed window of a stream unless another is being processed."""
    stale = utcnow() - timedelta(seconds=service.settings.window_claim_timeout)
    with service.store.session() as session:
        lock_stream(session, stream_id)
        busy = session.scalar(
            select(Window.id).where(
                Window.stream_id == stream_id,
                Window.state == "processing",
                Window.claimed_at > stale,
            )
        )
        if busy is not None:
            return None
        window = session.scalar(
            select(Window)
            .where(Window.stream_id == stream_id, Window.state.in_(("closed", "processing")))
            .order_by(Window.seq)
            .limit(1)
        )
        if window is None:
            return None
        window.state, window.claimed_at = "processing", utcnow()
        return window.id


def release_window(service: Service, window_id: int) -> None:
    """Give a claimed window back (after an error outside the update) so a retry can take it."""
    with service.store.session() as session:
        session.execute(
            update(Window)
            .where(Window.id == window_id, Window.state == "processing")
            .values(state="closed", claimed_at=None)
        )


def process_pending(service: Service, stream_name: str) -> list[WindowOutcome]:
    """Process every closed window of a stream, oldest first; returns what each decided."""
    with service.store.session() as session:
        stream_id = service.store.stream(session, stream_name).id
    outcomes = []
    while (window_id := claim_next_window(service, stream_id)) is not None:
        try:
            outcomes.append(WindowProcessor(service, stream_name, window_id).run())
        except BaseException:
            release_window(service, window_id)
            raise
    return outcomes


class WindowProcessor:
    """Runs the steps of DESIGN.md's "Processing a window" on one claimed window."""

    def __init__(self, service: Service, stream_name: str, window_id: int) -> None:
        self.service = service
        self.settings = service.settings
        self.store = service.store
        with self.store.session() as session:
            self.stream = self.store.stream(session, stream_name)
            self.window = session.get(Window, window_id)
            self.batch = load_batch(session, self.stream, [window_id])
        self.champion_version = service.registry.champion(self.stream.id)
        self.outcome = WindowOutcome(stream_name, self.window.seq, self.champion_version)
        self.correct: np.ndarray = np.zeros(len(self.batch), dtype=bool)
        # Set by ``_drift`` for naming the most shifted samples of an incident.
        self._covariate_features: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._label_reference: Batch | None = None

    # -- orchestration ---------------------------------------------------------------------

    def run(self) -> WindowOutcome:
        started = time.perf_counter()
        self._discard_dead_attempt()
        if self.champion_version is None:
            self._bootstrap()
        else:
            champion = self.service.version(self.stream.name, self.champion_version)
            self._timed("prequential", self._prequential, champion)
            results = self._timed("drift", self._drift, champion)
            self._record_drift(results)
            if self._should_update():
                self._update(champion)
        self.outcome.champion_after = self.service.registry.champion(self.stream.id)
        self.outcome.seconds["total"] = time.perf_counter() - started
        self._finish()
        return self.outcome

    def _timed(self, stage: str, fn, *args):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.outcome.seconds[stage] = round(time.perf_counter() - started, 4)

    def _discard_dead_attempt(self) -> None:
        """Undo what an earlier attempt at this window left when its learner died.

        A window becomes ``processed`` only at the end of its processing, so drift reports
        or an undecided candidate of this window can only come from an attempt that died
        (kill -9, power loss) or failed (the store went away) after its claim; the retry
        removes them, so that the window ends with one set of reports and one decided
        candidate. Alerts, being notifications already sent, stay.
        """
        with self.store.session() as session:
            session.execute(delete(DriftReport).where(DriftReport.window_id == self.window.id))
        self.service.registry.discard_unfinished(self.stream, self.window.id)

    def _finish(self) -> None:
        with self.store.session() as session:
            window = session.get(Window, self.window.id)
            window.state, window.processed_at = "processed", utcnow()
            window.served_by = self.champion_version
            window.drifted = self.outcome.drifted
            window.summary = self.outcome.to_dict()
        log.info(
            "window processed",
            extra={"stream": self.stream.name, "window": self.window.seq, **self._log_fields()},
        )

    def _log_fields(self) -> dict[str, Any]:
        o = self.outcome
        return {
            "drift": o.drift,
            "candidate": o.candidate,
            "gate_passed": o.gate_passed,
            "promoted": o.promoted,
            "error": o.error,
        }

    # -- cold start --------------------------------------------------------------------------

    def _bootstrap(self) -> None:
        """Train version 1 from scratch once enough samples arrived; it serves if accurate."""
        with self.store.session() as session:
            earlier = list(
                session.scalars(
                    select(Window.id).where(
                        Window.stream_id == self.stream.id,
                        Window.state == "processed",
                        Window.served_by.is_(None),
                    )
                )
            )
            data = load_batch(session, self.stream, [*earlier, self.window.id])
        train, holdout = data.where(data.splits == "train"), data.where(data.splits == "holdout")
        if len(train) < self.settings.bootstrap_samples:
            self.outcome.note = (
                f"waiting for {self.settings.bootstrap_samples} training samples "
                f"to train version 1 ({len(train)} so far)"
            )
            return
        self.outcome.updated = True
        model = build_model(
            n_classes=len(self.stream.classes),
            in_channels=self.stream.channels,
            input_size=self.stream.size,
            seed=self.settings.seed,
        )
        try:
            result = self._timed(
                "update", self._train, model, train, None, self.settings.bootstrap_epochs
            )
            version = self._write_candidate(result, parent=None, windows=sorted(set(data.windows)))
            pred, _ = predict(result.model, to_float(holdout.x))
            accuracy = float((pred.numpy() == holdout.y).mean()) if len(holdout) else 0.0
        except Exception as exc:  # the champion (none yet) keeps serving; the error is reported
            self._update_failed(exc)
            return
        report = {"bootstrap": True, "accuracy": accuracy, "n": len(holdout)}
        if accuracy >= self.settings.min_bootstrap_accuracy:
            self.service.registry.promote(
                self.stream.id, version, by="learner", reason="bootstrap", report=report
            )
            self.outcome.promoted, self.outcome.gate_passed = version, True
        else:
            self.service.registry.set_status(self.stream.id, version, "rejected", report)
            self.outcome.rejected, self.outcome.gate_passed = version, False
            self.outcome.gate_reasons = [
                f"bootstrap accuracy {accuracy:.3f} below {self.settings.min_bootstrap_accuracy}"
            ]
            with self.store.session() as session:
                alerts.raise_alert(
                    session,
                    stream_id=self.stream.id,
                    kind="update.failed",
                    severity="warning",
                    subject=f"{self.stream.name} v{version}",
                    message=f"version {version} not served: {self.outcome.gate_reasons[0]}",
                    payload=report,
                )

    # -- 1. prequential check ------------------------------------------------------------------

    def _prequential(self, champion: LoadedVersion) -> None:
        pred, _ = predict(champion.model, to_float(self.batch.x))
        correct = pred.numpy() == self.batch.y
        self.correct = correct
        metrics = evaluate_by_group(self.batch.y, pred.numpy(), self.batch.groups)
        self.outcome.prequential_accuracy = {
            "overall": round(metrics.overall["accuracy"], 4),
            **{g: round(m["accuracy"], 4) for g, m in metrics.by_group.items()},
        }

    # -- 2. drift -------------------------------------------------------------------------------

    def _reference_windows(self, session, champion: LoadedVersion) -> list[int]:  # type: ignore[no-untyped-def]
        """Windows whose held-out samples describe the champion's world, newest first.

        The windows it was trained on, then the later windows it scored without drift.
        """
        quiet = list(
            session.scalars(
                select(Window.id)
                .where(
                    Window.stream_id == self.stream.id,
                    Window.state == "processed",
                    Window.served_by == champion.version,
                    Window.drifted.is_(False),
                )
                .order_by(Window.seq.desc())
            )
        )
        return quiet + sorted(champion.manifest["windows"], reverse=True)

    def _reference(self, champion: LoadedVersion) -> Reference:
        """The champion's reference, newest windows first, bounded by ``reference_size``."""
        limit = self.settings.reference_size
        trained = set(champion.manifest["windows"])
        held_out, everything, unseen, n = [], [], [], 0
        with self.store.session() as session:
            for window_id in self._reference_windows(session, champion):
                batch = load_batch(session, self.stream, [window_id])
                everything.append(batch)
                held_out.append(batch.where(batch.splits == "holdout"))
                unseen.append(held_out[-1] if window_id in trained else batch)
                n += len(held_out[-1])
                if n >= limit:
                    break
        holdout = concat(held_out)
        if len(holdout) > limit:
            holdout = holdout.where(np.arange(len(holdout)) < limit)
        return Reference(holdout, concat(everything), concat(unseen))

    def _drift(self, champion: LoadedVersion) -> list[DriftResult]:
        s = self.settings
        ref = self._reference(champion)
        reference, label_reference = ref.holdout, ref.labels
        self._label_reference = label_reference
        results = []
        needed = s.min_drift_group_size
        if s.drift_mode == "online":
            needed = max(needed, 2 * s.drift_online_window + 1)
        if len(reference) >= needed:
            results.append(self._covariate(champion, reference))
        else:
            self.outcome.note = f"reference too small for the covariate test ({len(reference)})"
        results.append(
            label_shift(
                label_reference.y,
                label_reference.groups.tolist(),
                self.batch.y,
                self.batch.groups.tolist(),
                n_classes=len(self.stream.classes),
                p_value=s.drift_p_value,
                min_group_size=s.min_drift_group_size,
            )
        )
        results.append(
            concept_drift(
                self._error_history(champion, ref.unseen),
                self._errors(),
                delta=s.concept_delta,
                detector=s.concept_detector,
            )
        )
        return results

    def _covariate(self, champion: LoadedVersion, reference: Batch) -> DriftResult:
        """The covariate test of this window against the champion's held-out reference."""
        s = self.settings
        reference_features = self._features(champion, reference.x)
        window_features = self._features(champion, self.batch.x)
        self._covariate_features = (reference_features, reference.groups, window_features)
        if s.drift_mode == "online":
            return self._online_detector(reference_features).test_window(window_features).result
        detector = make_covariate_detector(
            s.drift_detector,
            reference_features,
            reference.groups.tolist(),
            p_value=s.drift_p_value,
            n_permutations=s.drift_permutations,
            min_group_size=s.min_drift_group_size,
            seed=s.seed + self.window.seq,
            feature_space=s.drift_feature_space,
        )
        return detector.test(window_features, self.batch.groups.tolist())

    def _online_detector(self, reference_features: np.ndarray) -> OnlineCovariateDetector:
        """The stream's online detector, configured once per champion (seconds of CPU)."""
        s = self.settings
        key = (
            self.champion_version,
            s.drift_feature_space,
            s.drift_detector,
            s.drift_online_ert,
            s.drift_online_window,
            s.drift_online_bootstraps,
        )

        def build() -> OnlineCovariateDetector:
            log.info("configuring the online drift detector", extra=self._log_fields())
            # Thousands of tiny torch ops: on a shared machine, extra intra-op threads only
            # wait for busy cores (15-70x slower measured; see drift.online).
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                return OnlineCovariateDetector(
                    reference_features,
                    ert=s.drift_online_ert,
                    window_size=s.drift_online_window,
                    n_bootstraps=s.drift_online_bootstraps,
                    method=s.drift_detector,  # type: ignore[arg-type]
                    seed=s.seed,
                    feature_space=s.drift_feature_space,
                )
            finally:
                torch.set_num_threads(threads)

        return self.service.online_detector(self.stream.name, key, build)

    def _features(self, champion: LoadedVersion, x: torch.Tensor) -> np.ndarray:
        """Drift features of uint8 images in the configured feature space."""
        s = self.settings
        if s.drift_feature_space == "penultimate":
            return penultimate_features(champion.model, to_float(x))
        encoder = self.service.encoder(s.drift_encoder_dim, s.drift_encoder_seed, x.shape[1])
        return encoder.encode(to_float(x))

    def _errors(self) -> dict[str, list[bool]]:
        current: dict[str, list[bool]] = {}
        for group, ok in zip(self.batch.groups, self.correct, strict=True):
            current.setdefault(group, []).append(not ok)
        return current

    @staticmethod
    def _error_history(champion: LoadedVersion, reference: Batch) -> dict[str, list[bool]]:
        """The champion's errors on reference samples it never trained on, oldest first, per group.

        These give an unbiased error history from the first window after a swap, before the
        champion has scored any window of its own.
        """
        order = np.argsort(reference.row_ids)
        pred, _ = predict(champion.model, to_float(reference.x[torch.from_numpy(order)]))
        wrong = pred.numpy() != reference.y[order]
        history: dict[str, list[bool]] = {}
        for group, err in zip(reference.groups[order], wrong, strict=True):
            history.setdefault(group, []).append(bool(err))
        return history

    def _record_drift(self, results: list[DriftResult]) -> None:
        with self.store.session() as session:
            for r in results:
                self.outcome.drift[r.kind] = r.is_drift
                if r.is_drift:
                    self.outcome.drifted_groups[r.kind] = r.drifted_groups
                session.add(
                    DriftReport(
                        stream_id=self.stream.id,
                        window_id=self.window.id,
                        kind=r.kind,
                        detector=r.detector,
                        statistic=r.statistic,
                        p_value=r.p_value,
                        threshold=r.threshold,
                        is_drift=r.is_drift,
                        per_group={g: asdict(v) for g, v in r.per_group.items()},
                        feature_space=r.feature_space,
                        reference_version=self.champion_version,
                        n_reference=r.n_reference,
                        n_window=r.n_window,
                        seconds=r.seconds,
                    )
                )
                self._drift_alert(session, r)

    def _drift_alert(self, session, r: DriftResult) -> None:  # type: ignore[no-untyped-def]
        """Open, extend or close this kind's incident (one alert per run of drifted windows)."""
        shifted = self._shifted_samples(r) if r.is_drift else []
        incidents.record_window(
            session,
            incidents.WindowDrift(self.stream.id, self.stream.name, self.window.seq, r, shifted),
        )

    def _shifted_samples(self, r: DriftResult) -> list[str]:
        """Ids of the window's samples that carry the alarm, for operators to look at.

        Covariate: the largest MMD witness in the drifted groups' feature space; label: the
        samples of the class whose share rose most; concept: the champion's errors.
        """
        k = self.settings.incident_samples
        batch, groups = self.batch, r.drifted_groups
        in_groups = np.isin(batch.groups, groups) if groups else np.ones(len(batch), dtype=bool)
        if r.kind == "covariate" and self._covariate_features is not None:
            ref_features, ref_groups, window_features = self._covariate_features
            ref_mask = np.isin(ref_groups, groups) if groups else np.ones(len(ref_groups), bool)
            index = np.flatnonzero(in_groups)
            chosen = most_shifted(ref_features[ref_mask], window_features[index], k)
            return [batch.sample_ids[index[i]] for i in chosen]
        if r.kind == "label" and self._label_reference is not None:
            ref, n = self._label_reference, len(self.stream.classes)
            ref_in = np.isin(ref.groups, groups) if groups else np.ones(len(ref), dtype=bool)
            rise = _shares(batch.y[in_groups], n) - _shares(ref.y[ref_in], n)
            mask = in_groups & (batch.y == int(np.argmax(rise)))
        else:
            mask = in_groups & ~np.asarray(self.correct, dtype=bool)
        return [batch.sample_ids[i] for i in np.flatnonzero(mask)[:k]]

    # -- 3-6. policy, update, gate, swap ---------------------------------------------------------

    def _should_update(self) -> bool:
        policy = self.settings.update_policy
        if policy == "every_window":
            return True
        if policy == "on_drift":
            return self.outcome.drifted
        return False

    def _train(self, model, train: Batch, state, epochs: int):  # type: ignore[no-untyped-def]
        s = self.settings
        return train_update(
            model,
            to_float(train.x),
            train.y_tensor,
            sample_ids=train.sample_ids,
            groups=[str(g) for g in train.groups],
            strategy=s.strategy,
            params=dict(s.strategy_params),
            state=state,
            epochs=epochs,
            batch_size=s.train_batch_size,
            lr=s.learning_rate,
            seed=s.seed + self.window.seq,
        )

    def _write_candidate(self, result, *, parent: int | None, windows: list[int]) -> int:  # type: ignore[no-untyped-def]
        version = self.service.registry.create_version(
            self.stream,
            result.model,
            result.state,
            parent=parent,
            strategy=self.settings.strategy,
            params={
                **self.settings.strategy_params,
                "epochs": self.settings.train_epochs,
                "lr": self.settings.learning_rate,
            },
            windows=[int(w) for w in windows],
            arch={
                "n_classes": len(self.stream.classes),
                "in_channels": self.stream.channels,
                "input_size": self.stream.size,
            },
        )
        self.outcome.candidate = version
        return version

    def _update(self, champion: LoadedVersion) -> None:
        self.outcome.updated = True
        train = self.batch.where(self.batch.splits == "train")
        try:
            result = self._timed(
                "update",
                self._train,
                champion.model,
                train,
                champion.state,
                self.settings.train_epochs,
            )
            version = self._write_candidate(
                result, parent=champion.version, windows=[self.window.id]
            )
            report = self._timed("gate", self._gate, champion, result.model)
        except Exception as exc:  # a crash in an update leaves the champion serving
            self._update_failed(exc)
            return
        self.outcome.gate_passed = report.passed
        self.outcome.gate_reasons = report.reasons
        if report.passed:
            self.service.registry.promote(
                self.stream.id,
                version,
                by="learner",
                reason=f"gate passed on window {self.window.seq}",
                report=report.to_dict(),
            )
            self.outcome.promoted = version
        else:
            self.service.registry.set_status(self.stream.id, version, "rejected", report.to_dict())
            self.outcome.rejected = version
            self._regression_alert(version, report)

    def _gate_holdout(self) -> Batch:
        """Held-out samples of the latest ``gate_windows`` windows (bounded per window,
        stratified by group): memory and the gate's Holm family stay bounded as a stream ages."""
        s = self.settings
        with self.store.session() as session:
            window_ids = list(
                session.scalars(
                    select(Window.id)
                    .where(
                        Window.stream_id == self.stream.id,
                        Window.state.in_(("processed", "processing")),
                    )
                    .order_by(Window.seq.desc())
                    .limit(s.gate_windows)
                )
            )[::-1]
            holdout = load_batch(session, self.stream, window_ids, split="holdout")
        keep = np.zeros(len(holdout), dtype=bool)
        rng = np.random.default_rng(s.seed)
        for w in np.unique(holdout.windows):
            index = np.flatnonzero(holdout.windows == w)
            share = min(1.0, s.gate_max_per_window / len(index))
            for g in np.unique(holdout.groups[index]):
                members = index[holdout.groups[index] == g]
                take = max(1, round(share * len(members)))
                keep[rng.choice(members, size=min(take, len(members)), replace=False)] = True
        return holdout.where(keep)

    def _gate(self, champion: LoadedVersion, candidate: torch.nn.Module) -> GateReport:
        s = self.settings
        holdout = self._gate_holdout()
        x = to_float(holdout.x)
        champion_pred, champion_proba = predict(champion.model, x)
        candidate_pred, candidate_proba = predict(candidate, x)
        with self.store.session() as session:
            seqs = dict(
                session.execute(
                    select(Window.id, Window.seq).where(Window.stream_id == self.stream.id)
                ).all()
            )
        return run_gate(
            holdout.y,
            champion_pred.numpy(),
            candidate_pred.numpy(),
            holdout.groups,
            np.array([seqs[int(w)] for w in holdout.windows]),
            GateSettings(
                tolerance=s.gate_tolerance,
                min_group_size=s.min_group_size,
                max_gap_increase=s.max_gap_increase,
                confidence=s.gate_confidence,
            ),
            champion_proba=champion_proba.numpy(),
            candidate_proba=candidate_proba.numpy(),
        )

    def _regression_alert(self, version: int, report: GateReport) -> None:
        groups = report.failed_groups
        regressed = report.regressed
        kind = "fairness.regression" if regressed else "fairness.gap"
        with self.store.session() as session:
            alerts.raise_alert(
                session,
                stream_id=self.stream.id,
                kind=kind,
                severity="critical",
                subject=f"{self.stream.name} v{version}",
                message=(
                    f"candidate v{version} rejected on window {self.window.seq}; "
                    f"v{self.champion_version} keeps serving: {'; '.join(report.reasons)}"
                ),
                payload={
                    "window": self.window.seq,
                    "candidate": version,
                    "champion": self.champion_version,
                    "groups": groups,
                    "windows": report.failed_windows,
                    "reasons": report.reasons,
                },
            )

    def _update_failed(self, exc: Exception) -> None:
        log.exception("update failed", extra={"stream": self.stream.name})
        self.outcome.error = f"{type(exc).__name__}: {exc}"
        if self.outcome.candidate is not None:
            self.service.registry.set_status(
                self.stream.id, self.outcome.candidate, "rejected", {"error": self.outcome.error}
            )
        with self.store.session() as session:
            alerts.raise_alert(
                session,
                stream_id=self.stream.id,
                kind="update.failed",
                severity="critical",
                subject=f"{self.stream.name} window {self.window.seq}",
                message=f"update on window {self.window.seq} failed; the champion keeps serving: "
                f"{self.outcome.error}",
                payload={"window": self.window.seq, "error": self.outcome.error},
            )
