"""Request and response bodies of the HTTP API (pydantic); they are what ``/openapi.json`` shows.

Request bodies forbid unknown fields, so a typo is a 422 rather than silently ignored.
The samples of ``POST /v1/samples`` are deliberately *not* validated here: each bad
sample must be rejected at its index by :func:`service.ingest.ingest` while the good
samples of the same call are accepted, so the list is taken as it comes and only
documented with :class:`SampleIn`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from service.store.schema import STREAM_NAME_PATTERN, STREAM_NAME_RULE

StreamName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=STREAM_NAME_PATTERN,
        description=f"Stream name: {STREAM_NAME_RULE}.",
    ),
]
Who = Annotated[
    str,
    Field(min_length=1, max_length=128, description='Who acts; recorded (default "operator").'),
]
DEFAULT_STREAM_NOTE = "Stream name; default (absent or null): the setting default_stream."
Reason = Annotated[str, Field(min_length=1, max_length=2000, description="Why; recorded.")]
Version = Annotated[int, Field(ge=1, le=2**31 - 1, description="Model version number.")]
WindowNumber = Annotated[int, Field(ge=1, le=2**31 - 1, description="Window number (seq).")]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SampleIn(_Request):
    """One sample of the ingest contract (documentation; ingest validates each one itself)."""

    image: str = Field(description="Base64 of PNG, JPEG or .npy (allow_pickle=False) bytes.")
    label: int | str = Field(
        description="A class name of the stream; an int only where the class names are the "
        'integers themselves ("0", "1", ..., as the default digits are).'
    )
    group: str = Field(description="Group the sample belongs to (per-group drift and gate).")
    id: str | None = Field(
        default=None, description="Caller's id; default: sha256 of stream, image, label, group."
    )
    meta: dict[str, Any] | None = Field(default=None, description="Free JSON object.")


SampleList = Annotated[
    list[Any],
    WithJsonSchema({"type": "array", "items": SampleIn.model_json_schema()}),
]


class SamplesRequest(_Request):
    """The body of ``POST /v1/samples``: the kwargs of the ``learnstream.ingest`` task."""

    stream: StreamName | None = Field(default=None, description=DEFAULT_STREAM_NOTE)
    samples: SampleList = Field(
        description="Samples; a bad one is rejected at its index, the good ones are accepted."
    )


class Rejected(BaseModel):
    index: int | None = Field(description="Index of the sample in the call (null: whole call).")
    reason: str


class Conflict(BaseModel):
    """A sample showing a picture the stream holds under another label: not stored."""

    index: int = Field(description="Index of the sample in the call.")
    id: str = Field(description="The sample's id (sent, or its digest when none was).")
    stored_id: str = Field(description="Id of the stored sample with the same picture.")
    stored_label: str = Field(description="The stored sample's class name.")
    label: str = Field(description="The class name this call sent.")


class CreatedStream(BaseModel):
    """The stream an ingest call created, with the settings it was created with."""

    stream: str
    classes: list[str] = Field(description="Its class names; labels name one of them.")
    channels: int = Field(description="Channels its images are converted to.")
    size: int = Field(description="Side its images are resized to.")


class IngestResponse(BaseModel):
    """What one ingest call did (the ``learnstream.ingest`` contract)."""

    accepted: list[str] = Field(description="Ids of the samples stored by this call.")
    duplicates: list[str] = Field(
        description="Ids of samples already stored (by id, or the same picture under the same "
        "label), not counted twice."
    )
    rejected: list[Rejected]
    conflicts: list[Conflict] = Field(
        default_factory=list,
        description="Samples whose picture is stored under another label: not stored; "
        "recorded as rejections of their label.",
    )
    created: CreatedStream | None = Field(
        default=None,
        description="The stream, when this call created it (auto_create_streams); else null.",
    )


class PredictRequest(_Request):
    stream: StreamName | None = Field(default=None, description=DEFAULT_STREAM_NOTE)
    images: list[str] = Field(min_length=1, description="Base64 of PNG, JPEG or .npy bytes.")
    ids: list[str] | None = Field(
        default=None,
        description="Optional, one per image, distinct: the image's id in the stream's traffic; "
        "a labelled sample sent later with the same id is joined to what was served.",
    )
    groups: list[str] | None = Field(
        default=None, description="Optional, one per image: the image's group in the traffic."
    )


class Prediction(BaseModel):
    label: str = Field(description="Predicted class name.")
    scores: list[float] = Field(description="Probability of each class, in `classes` order.")


class PredictResponse(BaseModel):
    model_version: int = Field(description="Champion version that answered.")
    classes: list[str] = Field(description="The stream's class names, the order of `scores`.")
    predictions: list[Prediction]


class WindowCounts(BaseModel):
    open: int
    closed: int = Field(description="Closed, waiting for or in processing.")
    processed: int


class Backlog(BaseModel):
    """What waits for the service (as ``learnstream status --json`` prints it)."""

    ingest_rate_per_s: float = Field(description="Samples accepted per second, last minute.")
    samples_waiting: int = Field(description="Samples in the open window.")
    windows_queued: int = Field(description="Closed windows waiting for or in processing.")
    learner_lag_s: float = Field(description="Seconds since the oldest waiting window closed.")


class AdaptationOut(BaseModel):
    """An open adaptation (the adaptive update policy): what it waits for and how far it is."""

    opened: int = Field(description="Window number it opened on.")
    groups: list[str] = Field(description="Groups it waits for.")
    baseline: dict[str, float] = Field(description="Each group's accuracy before the change.")
    final: dict[str, float] = Field(description="Each group's accuracy on the latest window.")
    windows: int = Field(description="Windows trained since it opened.")
    reason: str
    behind_alerted: bool = Field(description="Whether fairness.gap was raised for it.")


class ServedTally(BaseModel):
    n: int = Field(description="Predictions joined to a late label.")
    accuracy: float | None = Field(description="Share of them served the right class.")


class LabelDelayOut(BaseModel):
    count: int
    p50: float | None = Field(description="Median seconds from prediction to label.")
    p90: float | None = Field(description="90th percentile (linear interpolation).")
    max: float | None


class ServedOut(BaseModel):
    """The accuracy of what production was served, from late labels joined to the traffic."""

    traffic: int = Field(description="Predicted images kept as traffic.")
    traffic_windows: dict[str, int] = Field(
        description="Traffic windows: open, closed (not tested for drift yet), tested."
    )
    labelled: int = Field(description="Traffic rows joined to a label.")
    accuracy: float | None = Field(description="Served accuracy over them; null: none.")
    by_group: dict[str, ServedTally]
    by_version: dict[str, ServedTally] = Field(description="By the version that served.")
    label_delay_s: LabelDelayOut


class TrafficIncidentOut(BaseModel):
    alert_id: int
    open: bool
    traffic_windows: list[int] = Field(description="The traffic windows that drifted in it.")
    groups: list[str]
    message: str


class TrafficDriftOut(BaseModel):
    """Drift on served images before their labels (each closed traffic window is tested)."""

    traffic_windows: int
    verdicts: dict[str, int] = Field(
        description="Traffic windows: drift, no_drift, untested (no champion or too few "
        "images), waiting (closed, not tested yet)."
    )
    recent: list[dict[str, Any]] = Field(
        description="The latest tested windows' verdicts, newest first: covariate and "
        "predicted-class tests, estimated class priors, the most shifted served images."
    )
    incident: TrafficIncidentOut | None = Field(
        description="The latest drift.traffic incident, open or closed; null: none yet."
    )


class StreamStatus(BaseModel):
    samples: int
    rejected: int
    windows: WindowCounts
    champion: int | None
    backlog: Backlog
    adaptation: AdaptationOut | None = Field(
        description="The open adaptation, or null when none is open."
    )
    quarantined: dict[str, int] = Field(
        description="Held in quarantine: samples (likely wrong labels) and windows."
    )
    served: ServedOut
    traffic_drift: TrafficDriftOut


class StatusResponse(BaseModel):
    streams: dict[str, StreamStatus]


class WindowOut(BaseModel):
    seq: int = Field(description="Window number within its stream, from 1.")
    state: str = Field(description="open, closed, processing or processed.")
    size: int
    opened_at: str
    closed_at: str | None
    processed_at: str | None
    champion_version: int | None = Field(description="Champion after the window was processed.")
    drifted: bool | None
    summary: dict[str, Any] | None = Field(description="What processing decided (WindowOutcome).")


class DriftOut(BaseModel):
    window: int
    kind: str = Field(description="covariate, label or concept.")
    detector: str
    statistic: float
    p_value: float | None
    threshold: float
    verdict: str = Field(description='"drift" or "no drift".')
    per_group: dict[str, Any]
    feature_space: str
    reference_version: int | None
    n_reference: int
    n_window: int
    seconds: float


class AlertOut(BaseModel):
    id: int
    kind: str
    severity: str
    subject: str
    message: str
    payload: dict[str, Any]
    time: str = Field(description="ISO 8601 time the alert was raised.")
    acknowledged: bool
    acknowledged_by: str | None
    acknowledged_at: str | None = Field(default=None, description="ISO 8601 time of the ack.")


class AckRequest(_Request):
    by: Who = "operator"


class ModelOut(BaseModel):
    version: int
    parent: int | None
    status: str = Field(description="candidate, champion, rejected or retired.")
    champion: bool
    strategy: str
    params: dict[str, Any]
    windows: list[int] = Field(description="Numbers (seq) of the windows it was trained on.")
    digests: dict[str, str]
    gate_report: dict[str, Any] | None
    created_at: str
    trained_on_deleted: list[int] = Field(
        default_factory=list,
        description="Ids of the deletions of samples it was trained on (its windows, an "
        "ancestor's, or its replay buffer); empty: none.",
    )


class PromoteRequest(_Request):
    stream: StreamName | None = Field(default=None, description=DEFAULT_STREAM_NOTE)
    reason: Reason
    by: Who = "operator"


class RollbackRequest(_Request):
    stream: StreamName | None = Field(default=None, description=DEFAULT_STREAM_NOTE)
    reason: Reason
    by: Who = "operator"
    to: Version | None = Field(
        default=None, description="Version to go back to; default: the previous champion."
    )


class QuarantineOut(BaseModel):
    id: int
    kind: str = Field(description="sample (a likely wrong label) or window (a rejected update).")
    status: str = Field(description="held, released or confirmed.")
    sample: str | None = Field(description="The sample's id (kind sample).")
    group: str | None
    split: str | None
    window: int = Field(description="The window's number (seq).")
    given: str | None = Field(description="The label the sample was sent with.")
    believed: str | None = Field(description="The class the champion believes.")
    score: float | None = Field(description="cleanlab's self-confidence in the given label.")
    reason: str
    created_at: str
    decided_by: str | None
    decided_at: str | None
    note: str | None


class QuarantineDecision(_Request):
    stream: StreamName | None = Field(default=None, description=DEFAULT_STREAM_NOTE)
    ids: list[Annotated[str, Field(min_length=1, max_length=160)]] = Field(
        default_factory=list, max_length=10_000, description="Held samples, by id."
    )
    windows: list[WindowNumber] = Field(
        default_factory=list, max_length=1000, description="Held windows, by number."
    )
    all: bool = Field(default=False, description="Everything the stream holds.")
    by: Who
    note: Reason | None = None


class QuarantineDecided(BaseModel):
    released: int | None = None
    confirmed: int | None = None
    samples: list[str]
    windows: list[int]


class DeleteSamplesRequest(_Request):
    stream: StreamName | None = Field(default=None, description=DEFAULT_STREAM_NOTE)
    ids: list[Annotated[str, Field(min_length=1, max_length=160)]] | None = Field(
        default=None, max_length=100_000, description="Sample ids to delete."
    )
    meta: dict[str, Any] | None = Field(
        default=None, description="Samples whose meta has each of these keys with that value."
    )
    group: str | None = Field(default=None, min_length=1, max_length=128, description="A group.")
    before: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Samples received before this ISO 8601 time (no zone: UTC).",
    )
    by: Who = Field(description="Who deletes; recorded.")
    reason: Reason
    retrain: bool = Field(
        default=False,
        description="Also queue a candidate trained without them (learnstream.retrain), "
        "through the gate.",
    )


class DeletionResponse(BaseModel):
    deleted: int = Field(description="Samples deleted (0 when nothing matched).")
    versions_trained_on_them: list[int] = Field(
        description="Versions trained on any of them: their windows, an ancestor's, or their "
        "replay buffer."
    )
    audit_id: int = Field(description="The deletion's audit record.")
    retrain: dict[str, Any] | None = Field(
        default=None, description="With retrain: the queued task, or why none was queued."
    )


class ChampionChange(BaseModel):
    stream: str
    champion: int = Field(description="The champion now.")
    previous: int | None = Field(description="The champion before.")


class Health(BaseModel):
    status: str


class ErrorBody(BaseModel):
    """Every error answer: a machine-readable kind and a message for people."""

    error: str = Field(description='Kind, e.g. "stream_not_found", "unauthorized".')
    detail: str
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="Each problem of a request that failed validation."
    )


class StreamCreate(_Request):
    """A stream's configuration in its form (``service.streams.catalog``): what it leaves out
    comes from the global settings."""

    name: StreamName
    classes: list[str] | None = Field(default=None, description="Class names, in order.")
    input: dict[str, Any] | None = Field(
        default=None, description="channels, size, resize, mean, std."
    )
    model: dict[str, Any] | None = Field(
        default=None, description="arch, weights (a path on the server), train, feature_space."
    )
    strategy: dict[str, Any] | None = Field(default=None, description="name, params.")
    settings: dict[str, Any] | None = Field(
        default=None, description="Any other setting a stream may set, by name."
    )


class StreamPatch(_Request):
    """Safe changes to a stream: settings by name (or in the form's sections), strategy
    parameters that keep its state valid, classes added at the end."""

    model: dict[str, Any] | None = None
    strategy: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None
    add_classes: list[str] = Field(default_factory=list, description="Classes to add.")
    classes: list[str] | None = Field(
        default=None, description="The whole class list: the current one with names appended."
    )
