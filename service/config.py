"""All of learnstream's settings, read from the environment with the ``LEARNSTREAM_`` prefix.

Every other module receives a :class:`Settings` instance; nothing reads the
environment on its own, so a test or the embedded runner can build one
explicitly.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from drift.names import (
    ONLINE_DETECTORS,
    ConceptDetectorName,
    CovariateDetectorName,
    FeatureSpace,
)
from service.errors import SettingsInvalid
from service.store.schema import STREAM_NAME_PATTERN

UpdatePolicy = Literal["on_drift", "every_window", "manual", "adaptive"]

ONLINE_NEEDS_METHOD = (
    "drift_mode 'online' needs drift_detector "
    + " or ".join(map(repr, ONLINE_DETECTORS))
    + ", not {name!r}"
)
ONLINE_NOT_FOR_PROPERTIES = (
    "drift_mode 'online' is not available with drift_feature_space 'properties' (tested per "
    "window with KS per property): use drift_mode 'window' or another feature space"
)
TOO_FEW_ONLINE_BOOTSTRAPS = (
    "drift_online_bootstraps={n} is too few for drift_online_ert={ert} and "
    "drift_online_window={window}: need at least {needed}, ideally 10 x the ERT"
)
CLASSES_FORM = 'a JSON list, e.g. ["cat","dog","bird"], or comma-separated names, e.g. cat,dog,bird'
BAD_CLASSES = "must be " + CLASSES_FORM
PREFIX = "LEARNSTREAM_"
# Forms of the fields that the environment source decodes as JSON before validation.
JSON_FORMS = {"strategy_params": 'a JSON object, e.g. {"mem_size": 200}'}
SECRET_FIELDS = frozenset({"operator_token", "webhook_secret"})
URL_FIELDS = frozenset({"database_url", "broker_url", "result_backend", "redis_url", "webhook_url"})
MASK = "***"
_PG_SCHEMES = ("postgres://", "postgresql://")
_URL_PASSWORD = re.compile(r"(://[^/@:]*:)[^/@]*@")
_SOURCE_FIELD = re.compile(r'field "(\w+)"')


class RuleBroken(ValueError):
    """A rule across several settings failed; it names the settings so messages can."""

    def __init__(self, message: str, *names: str) -> None:
        super().__init__(message)
        self.names = names


class Settings(BaseSettings):
    """Service settings; each field documents itself and may be set as ``LEARNSTREAM_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="LEARNSTREAM_", extra="ignore")

    home: Path = Field(
        default=Path(".learnstream"),
        description="Folder of the embedded default: SQLite database and model registry.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL (postgresql+psycopg://...; postgres:// and postgresql:// "
        "mean psycopg too). Default: SQLite in home.",
    )
    broker_url: str = Field(
        default="memory://",
        description="Celery broker; memory:// runs everything in one process.",
    )
    result_backend: str = Field(default="cache+memory://", description="Celery result backend.")
    broker_visibility_timeout: float = Field(
        default=3600.0,
        gt=0,
        description="Seconds before Redis redelivers a message whose worker died unacknowledged; "
        "longer than the slowest task.",
    )
    broker_restore_interval: int = Field(
        default=10,
        ge=1,
        description="Seconds between a worker's sweeps for messages past the visibility timeout "
        "(kombu's own default sweeps about every 100 s).",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis used to announce champion swaps; default: the broker when it is Redis.",
    )
    model_dir: Path | None = Field(
        default=None, description="Model registry folder. Default: <home>/models."
    )
    operator_token: str | None = Field(
        default=None, description="Bearer token required for writes that change models or alerts."
    )

    # Streams
    default_stream: str = Field(
        default="default",
        pattern=STREAM_NAME_PATTERN,
        description="Stream of every command, API query and task that names none "
        "(`learnstream run` plays its own demo stream).",
    )
    auto_create_streams: bool = Field(
        default=True, description="Create an unknown stream with defaults on its first sample."
    )
    default_classes: Annotated[list[str], NoDecode] = Field(
        default=[str(i) for i in range(10)],
        description="Class list of a new stream: a JSON list or comma-separated names.",
    )
    input_channels: int = Field(default=1, ge=1, le=3, description="Channels the model sees.")
    input_size: int = Field(
        default=28, ge=8, le=256, description="Height and width the model sees."
    )
    model_arch: str = Field(
        default="small_cnn",
        description="Architecture of a new stream's version 1: small_cnn, "
        "torchvision:<model> or timm:<model>.",
    )
    model_weights: Path | None = Field(
        default=None,
        description="Local weights file version 1 starts from (safetensors, or a state dict "
        "for torch.load(weights_only=True)); nothing is ever downloaded.",
    )
    train_layers: Literal["all", "last-block", "head"] = Field(
        default="all",
        description="Layers a new stream's models learn: all, last-block (and the head) or "
        "head (a frozen backbone, the sensible choice for a large model on a CPU).",
    )
    input_mean: Annotated[list[float], NoDecode] | None = Field(
        default=None,
        description="Per-channel mean the model subtracts (comma-separated; none: 0).",
    )
    input_std: Annotated[list[float], NoDecode] | None = Field(
        default=None,
        description="Per-channel std the model divides by (comma-separated; none: 1).",
    )

    # Ingest limits
    max_samples_per_call: int = Field(default=1024, ge=1, description="Samples in one ingest call.")
    max_image_bytes: int = Field(
        default=2_000_000, ge=64, description="Encoded bytes of one image."
    )
    max_image_pixels: int = Field(
        default=4_000_000, ge=64, description="Height times width of one decoded image."
    )
    max_request_bytes: int = Field(
        default=64_000_000, ge=1024, description="Bytes of one HTTP request body."
    )
    max_group_length: int = Field(default=64, ge=1, description="Characters in a group name.")
    max_id_length: int = Field(default=128, ge=1, description="Characters in a sample id.")
    max_meta_bytes: int = Field(default=4096, ge=2, description="JSON bytes of a sample's meta.")
    image_store: str = Field(
        default="database",
        description="Where new samples' pixels are stored: `database` (in their rows), or an "
        "absolute folder that every worker sees (content-addressed files, fsynced before their "
        "rows commit; for large images).",
    )

    # Windows and splits
    window_size: int = Field(default=256, ge=8, description="Accepted samples that close a window.")
    window_max_age: float = Field(
        default=3600.0, gt=0, description="Seconds after which an open window closes anyway."
    )
    window_min_size: int = Field(
        default=32, ge=1, description="Samples an open window needs to be closed by age."
    )
    sweep_interval: float = Field(
        default=60.0,
        gt=0,
        description="Seconds between sweeps that close windows by age and apply retention.",
    )
    retention_max_age: float | None = Field(
        default=None,
        gt=0,
        description="Seconds a sample is kept (by its received time); the sweep deletes older "
        "ones with their lineage. Unset: kept forever.",
    )
    retention_max_samples: int | None = Field(
        default=None,
        ge=1,
        description="Samples a stream keeps at most; the sweep deletes the oldest beyond it. "
        "Unset: unbounded.",
    )
    traffic_capture: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="Share of predicted images kept as unlabelled traffic, with the prediction "
        "and the version that served it (chosen by a hash of each image's id: an id is always "
        "kept or never); 0: none.",
    )
    traffic_capture_mode: Literal["background", "inline"] = Field(
        default="background",
        description="Where traffic is written: by a background thread after predict has "
        "answered (the default: predict's latency does not include it), or inline, before "
        "predict answers (tests and single-shot scripts).",
    )
    traffic_capture_queue: int = Field(
        default=1000,
        ge=1,
        description="Predict calls whose traffic may wait for the background writer; beyond "
        "it a call's images are not kept (counted in learnstream_traffic_dropped_total).",
    )
    traffic_p_value: float = Field(
        default=0.005,
        gt=0.0,
        lt=1.0,
        description="Significance of a traffic window's drift verdict before correction for "
        "groups, split between its two tests (served images, predicted classes): half "
        "drift_p_value by default, as traffic windows come often and each alarm pages.",
    )
    traffic_window_size: int = Field(
        default=256,
        ge=1,
        description="Traffic rows (predicted images kept) that close a traffic window.",
    )
    traffic_window_max_age: float = Field(
        default=3600.0,
        gt=0,
        description="Seconds after which an open traffic window closes anyway.",
    )
    traffic_max_rows: int = Field(
        default=50_000,
        ge=1,
        description="Traffic rows a stream keeps at most (their pixels live in the rows); the "
        "sweep deletes the oldest beyond it.",
    )
    traffic_retention: float = Field(
        default=604_800.0,
        gt=0,
        description="Seconds a traffic row is kept (by its prediction's time); the sweep "
        "deletes older ones, joined labels with them.",
    )
    holdout_fraction: float = Field(
        default=0.3,
        gt=0.0,
        lt=1.0,
        description="Share of samples kept out of training (chosen by a digest of the image).",
    )

    # Learning
    strategy: str = Field(default="replay", description="Avalanche strategy name.")
    strategy_params: dict[str, float | int | str | bool] = Field(
        default_factory=dict, description="Settings of the strategy, e.g. mem_size."
    )
    update_policy: UpdatePolicy = Field(
        default="adaptive",
        description="When a window trains: on_drift, adaptive (from a drift or a group's fall "
        "until every affected group is back; the default), every_window or manual.",
    )
    train_windows: int = Field(
        default=1,
        ge=1,
        le=50,
        description="Most windows the champion has not learned yet that a candidate trains on "
        "(the newest; above 1, a rejected candidate's windows go to the next one).",
    )
    adapt_margin: float = Field(
        default=0.03,
        gt=0.0,
        lt=1.0,
        description="How far below its baseline accuracy a group must fall (beyond chance, at "
        "adapt_alpha) to open an adaptation, or to keep one open.",
    )
    adapt_alpha: float = Field(
        default=0.01,
        gt=0.0,
        lt=1.0,
        description="Level of the one-sided test that a group fell below its baseline "
        "(Bonferroni over the groups).",
    )
    adapt_close_confidence: float = Field(
        default=0.8,
        gt=0.5,
        lt=1.0,
        description="Confidence of the lower bound on a group's accuracy over its latest "
        "adapt_baseline_windows windows that must be within adapt_margin of its baseline for "
        "an adaptation to close.",
    )
    adapt_patience: int = Field(
        default=6,
        ge=1,
        description="Windows an adaptation may stay open before fairness.gap names its groups.",
    )
    champion_gap_max: float = Field(
        default=0.10,
        gt=0.0,
        lt=1.0,
        description="Best-to-worst group accuracy gap of the champion whose lower confidence "
        "bound, champion_gap_windows windows in a row, raises fairness.gap.",
    )
    champion_gap_windows: int = Field(
        default=3, ge=1, description="Windows in a row for the champion's fairness.gap."
    )
    adapt_baseline_windows: int = Field(
        default=3,
        ge=1,
        description="Windows before an adaptation (none under one) that make a group's baseline.",
    )
    adapt_on_traffic_drift: bool = Field(
        default=False,
        description="Let an open drift.traffic incident start the adaptation of its groups at "
        "the first window with min_drift_group_size labelled samples of such a group served "
        "in its traffic windows (the traffic alarm is then the change's first sign).",
    )
    train_epochs: int = Field(default=10, ge=1, description="Epochs over a window in one update.")
    train_batch_size: int = Field(default=32, ge=1, description="Mini-batch size in training.")
    learning_rate: float = Field(default=0.05, gt=0.0, description="SGD learning rate.")
    bootstrap_samples: int = Field(
        default=300, ge=1, description="Training samples needed before version 1 is trained."
    )
    bootstrap_epochs: int = Field(default=20, ge=1, description="Epochs for version 1.")
    min_bootstrap_accuracy: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Holdout accuracy version 1 needs to serve."
    )
    seed: int = Field(default=0, description="Seed of training and statistical tests.")

    # Drift
    drift_p_value: float = Field(
        default=0.01, gt=0.0, lt=1.0, description="Significance before correction for groups."
    )
    drift_permutations: int = Field(
        default=500,
        ge=100,
        description="Permutations of the MMD and LSDD tests, at least: raised until the "
        "smallest p-value 1/(n+1) is a quarter of the most corrected threshold.",
    )
    drift_detector: CovariateDetectorName = Field(
        default="mmd",
        description="Covariate-shift test: MMD, LSDD or KS with Bonferroni (the properties "
        "feature space always tests with KS).",
    )
    drift_mode: Literal["window", "online"] = Field(
        default="window",
        description="Covariate test per closed window, or alibi-detect's online detector "
        "(method from drift_detector: mmd or lsdd) with an expected run time, fed sample by "
        "sample, for streams where alarms must be rare.",
    )
    drift_online_ert: int = Field(
        default=1000, gt=1, description="Online mode: samples to a false alarm on average."
    )
    drift_online_window: int = Field(
        default=20, ge=2, description="Online mode: samples in the sliding test window."
    )
    drift_online_bootstraps: int = Field(
        default=3000,
        ge=100,
        description="Online mode: bootstraps that set the thresholds, once per champion "
        "(seconds of CPU; ideally ten times the ERT).",
    )
    drift_feature_space: FeatureSpace = Field(
        default="penultimate",
        description="Features tested: the champion's penultimate layer, a fixed seeded "
        "untrained encoder that does not change with swaps, or image properties (brightness, "
        "contrast, sharpness, noise, saturation; KS per property, explained in the alert).",
    )
    drift_encoder_dim: int = Field(default=32, ge=2, description="Width of the untrained encoder.")
    drift_encoder_seed: int = Field(default=0, description="Seed of the untrained encoder.")
    concept_detector: ConceptDetectorName = Field(
        default="adwin", description="Detector on the champion's prequential error per group."
    )
    concept_delta: float = Field(default=0.002, gt=0, lt=1, description="ADWIN's confidence.")
    reference_size: int = Field(default=600, ge=20, description="Held-out samples in a reference.")
    min_drift_group_size: int = Field(
        default=20, ge=2, description="Samples a group needs in window and reference to be tested."
    )
    incident_samples: int = Field(
        default=8, ge=0, le=64, description="Most shifted sample ids a drift incident names."
    )

    # Label screen
    label_screen: bool = Field(
        default=True,
        description="Screen each window's labels with cleanlab before it trains, and quarantine "
        "the likely wrong ones of a group whose flagged share is beyond its running rate (the "
        "share flagged among its reference samples).",
    )
    label_screen_alpha: float = Field(
        default=0.01,
        gt=0.0,
        lt=1.0,
        description="Level of the one-sided test (Fisher's exact) that a group's flagged share "
        "is beyond its running rate (Bonferroni over the groups screened).",
    )
    label_screen_margin: float = Field(
        default=0.02,
        ge=0.0,
        lt=1.0,
        description="How far a group's flagged share must exceed its running rate, beyond "
        "chance, to be suspect.",
    )

    # Gate
    gate_tolerance: float = Field(
        default=0.02, ge=0.0, le=1.0, description="Accuracy a group may lose before it fails."
    )
    min_group_size: int = Field(
        default=30, ge=1, description="Holdout samples a group needs for its verdict to decide."
    )
    max_gap_increase: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="How much the best-to-worst group gap may widen through a loss of its "
        "worst group (a gap widened by a better group passes).",
    )
    gate_confidence: float = Field(
        default=0.95, gt=0.5, lt=1.0, description="Confidence of the per-group intervals."
    )
    gate_windows: int = Field(
        default=20,
        ge=1,
        description="Latest windows whose holdout the gate compares on (each also a slice).",
    )
    gate_max_per_window: int = Field(
        default=200, ge=10, description="Holdout samples drawn from each window for the gate."
    )
    gate_recent_windows: int = Field(
        default=3,
        ge=1,
        description="Latest windows that make each group's recent slice (decisive when big "
        "enough to see twice the tolerance).",
    )
    gate_chain_tolerance: float = Field(
        default=0.03,
        ge=0.0,
        le=1.0,
        description="Accuracy a group may lose against the best of the recent champions (the "
        "chain guard), so that small losses cannot add up across promotions.",
    )
    gate_chain_versions: int = Field(
        default=5,
        ge=0,
        description="Earlier champions (of the gate's windows) the chain guard compares with.",
    )

    # Workers
    device: str = Field(
        default="cpu",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="Where learners train and workers predict: cpu (bit-identical weights "
        "after a restart), auto (the first CUDA device if there is one, else the CPU), cuda or "
        "cuda:N (faster; training under bfloat16 autocast, not bit-identical).",
    )
    max_loaded_versions: int = Field(
        default=8,
        ge=1,
        description="Model versions a process keeps loaded (champions and candidates of the "
        "streams it serves, least recently used dropped first): a learner's memory bound.",
    )
    window_claim_timeout: float = Field(
        default=900.0,
        gt=0,
        description="Seconds after which a window stuck in processing is retried.",
    )

    submit_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds `learnstream submit` waits for an ingest worker to answer one call "
        "before it gives up and says so.",
    )

    # Alert sinks
    webhook_url: str | None = Field(
        default=None,
        description="http(s) URL that receives every alert as signed JSON; unset or empty: off.",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="Key of the HMAC-SHA256 signature of each webhook body (required with a URL).",
    )
    webhook_timeout: float = Field(
        default=5.0, gt=0, description="Seconds one webhook request may take."
    )
    webhook_max_attempts: int = Field(
        default=5, ge=1, le=20, description="Attempts per alert on connection errors, 429 and 5xx."
    )
    webhook_backoff: float = Field(
        default=1.0,
        ge=0,
        description="Seconds before the second attempt; doubles after each failure (max 300).",
    )

    @field_validator("webhook_url", "webhook_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # compose passes ${LEARNSTREAM_WEBHOOK_URL:-}: an empty variable means "off".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("webhook_url")
    @classmethod
    def _webhook_is_http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("webhook_url must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _webhook_is_signed(self) -> Settings:
        if self.webhook_url and self.webhook_secret is None:
            raise ValueError(
                "webhook_url needs webhook_secret (LEARNSTREAM_WEBHOOK_SECRET): receivers must "
                "be able to check that an alert comes from learnstream"
            )
        return self

    @model_validator(mode="after")
    def _online_method_known(self) -> Settings:
        if self.drift_mode != "online":
            return self
        if self.drift_feature_space == "properties":
            raise RuleBroken(ONLINE_NOT_FOR_PROPERTIES, "drift_mode", "drift_feature_space")
        if self.drift_detector not in ONLINE_DETECTORS:
            raise RuleBroken(
                ONLINE_NEEDS_METHOD.format(name=self.drift_detector), "drift_mode", "drift_detector"
            )
        from drift.bootstraps import min_bootstraps  # plain arithmetic: no torch

        needed = min_bootstraps(self.drift_online_ert, self.drift_online_window)
        if self.drift_online_bootstraps < needed:
            raise RuleBroken(
                TOO_FEW_ONLINE_BOOTSTRAPS.format(
                    n=self.drift_online_bootstraps,
                    ert=self.drift_online_ert,
                    window=self.drift_online_window,
                    needed=needed,
                ),
                "drift_online_bootstraps",
                "drift_online_ert",
                "drift_online_window",
            )
        return self

    @field_validator("default_classes", mode="before")
    @classmethod
    def _classes_from_text(cls, value: object) -> object:
        # The environment gives text: a JSON list, or names separated by commas.
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError:
                raise ValueError(BAD_CLASSES) from None
        return [name.strip() for name in text.split(",") if name.strip()]

    @field_validator("input_mean", "input_std", mode="before")
    @classmethod
    def _numbers_from_text(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip().strip("[]")
            return [v.strip() for v in text.split(",") if v.strip()] or None
        return value

    @field_validator("database_url", mode="before")
    @classmethod
    def _postgres_is_psycopg(cls, value: object) -> object:
        # Heroku-style and libpq URLs name no driver; SQLAlchemy would pick psycopg2 (absent).
        if isinstance(value, str):
            for scheme in _PG_SCHEMES:
                if value.startswith(scheme):
                    return "postgresql+psycopg://" + value.removeprefix(scheme)
        return value

    @field_validator("image_store")
    @classmethod
    def _image_store_form(cls, value: str) -> str:
        if value != "database" and not Path(value).is_absolute():
            raise ValueError("must be 'database' or an absolute folder path")
        return value

    @field_validator("default_classes")
    @classmethod
    def _classes_unique(cls, value: list[str]) -> list[str]:
        if len(value) < 2 or len(set(value)) != len(value):
            raise ValueError("default_classes needs at least two distinct class names")
        return value

    @model_validator(mode="after")
    def _strategy_known(self) -> Settings:
        # Imported here: the registry of names is tiny and import-safe, avalanche is not loaded.
        from learners.strategies import validate_strategy

        try:
            validate_strategy(self.strategy, dict(self.strategy_params))
        except ValueError as exc:
            raise RuleBroken(str(exc), "strategy", "strategy_params") from None
        return self

    @cached_property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL in force: the configured one or SQLite under ``home``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'learnstream.db').resolve()}"

    @cached_property
    def resolved_model_dir(self) -> Path:
        """Folder of the model registry."""
        return (self.model_dir or self.home / "models").resolve()

    @cached_property
    def announce_url(self) -> str | None:
        """Redis URL on which champion swaps are published, if any."""
        if self.redis_url:
            return self.redis_url
        if self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
        return None


def variable(name: str) -> str:
    """The environment variable of the setting ``name``."""
    return PREFIX + name.upper()


def _problem(error: Mapping[str, Any]) -> str:
    """One pydantic error as a line naming the variable, the expected form and the value."""
    message = str(error["msg"]).removeprefix("Value error, ")
    message = message.replace("Input should be", "must be", 1)
    if not error["loc"]:  # a rule across several settings
        rule = error.get("ctx", {}).get("error")
        if isinstance(rule, RuleBroken):
            return f"{', '.join(map(variable, rule.names))}: {message}"
        return message
    name = str(error["loc"][0])
    if name in SECRET_FIELDS or "input" not in error or isinstance(error["input"], dict):
        return f"{variable(name)} {message}"
    return f"{variable(name)}={error['input']!r}: {message}"


def settings_error(exc: ValidationError | SettingsError) -> SettingsInvalid:
    """The :class:`SettingsInvalid` for a failure to build :class:`Settings`."""
    if isinstance(exc, SettingsError):
        match = _SOURCE_FIELD.search(str(exc))
        name = match.group(1) if match else ""
        form = JSON_FORMS.get(name, "valid JSON")
        return SettingsInvalid(f"{variable(name)} must be {form}" if name else str(exc))
    return SettingsInvalid("\n".join(_problem(error) for error in exc.errors()))


def is_settings_error(exc: BaseException) -> bool:
    """True when ``exc`` is pydantic's failure to build :class:`Settings` (not another model)."""
    if isinstance(exc, SettingsError):
        return True
    return isinstance(exc, ValidationError) and exc.title == Settings.__name__


def load_settings() -> Settings:
    """Settings from the environment; a malformed variable raises :class:`SettingsInvalid`."""
    try:
        return Settings()
    except (ValidationError, SettingsError) as exc:
        raise settings_error(exc) from None


def mask_url(url: str) -> str:
    """``url`` with the password of its user part replaced by ``***``."""
    return _URL_PASSWORD.sub(rf"\g<1>{MASK}@", url)


def _shown(name: str, value: object) -> object:
    """A setting's value as JSON shows it, secrets masked."""
    if value is None:
        return None
    if name in SECRET_FIELDS:
        return MASK
    if name in URL_FIELDS and isinstance(value, str):
        return mask_url(value)
    if isinstance(value, Path):
        return str(value)
    return value


def effective_settings(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """Every setting's variable, value in force (secrets masked) and source."""
    names = {key.upper() for key in (os.environ if environ is None else environ)}
    return {
        name: {
            "variable": variable(name),
            "value": _shown(name, getattr(settings, name)),
            "source": "environment" if variable(name) in names else "default",
        }
        for name in Settings.model_fields
    }


def in_force(settings: Settings) -> dict[str, Any]:
    """What the defaults resolve to: the database, the registry folder, the announce channel."""
    return {
        "database_url": mask_url(settings.resolved_database_url),
        "model_dir": str(settings.resolved_model_dir),
        "announce_url": settings.announce_url and mask_url(settings.announce_url),
    }


def _default_text(name: str) -> str:
    default = Settings.model_fields[name].get_default(call_default_factory=True)
    if default is None:
        return "unset"
    if isinstance(default, Path):
        return f"`{default}`"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, list | dict):
        return f"`{json.dumps(default, separators=(',', ':'))}`"
    return f"`{default}`"


SETTINGS_TABLE_HEAD = "| Variable | Default | Meaning |\n|---|---|---|"


def settings_table() -> str:
    """The README's Markdown table of every setting, from the fields' defaults and docs."""
    rows = [SETTINGS_TABLE_HEAD]
    for name, info in Settings.model_fields.items():
        meaning = (info.description or "").replace("|", "\\|").replace("<", "&lt;")
        rows.append(f"| `{variable(name)}` | {_default_text(name)} | {meaning} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
