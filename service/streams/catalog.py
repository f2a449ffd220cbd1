"""Streams as configured objects: created with a validated configuration, listed, shown and
changed safely. The CLI (``learnstream streams``), the API (``/v1/streams``) and ingest's
auto-creation call these functions.

A configuration's form (a TOML file, the API's JSON body, ``streams show --json``)::

    classes = ["cat", "dog", "bird"]
    [input]    channels, size, resize ("stretch"), mean, std
    [model]    arch, weights, train, feature_space
    [strategy] name, params
    [settings] any other setting a stream may set, by name (window_size, gate_tolerance, ...)

What it leaves out comes from the global settings.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from service.config import Settings
from service.errors import InvalidRequest, LearnstreamError, StreamNotFound
from service.store.engine import Store
from service.store.schema import (
    STREAM_NAME_RULE,
    ModelVersion,
    Stream,
    iso,
    valid_stream_name,
)
from service.store.streams import champion_version, lock_stream
from service.streams.configuration import (
    STREAM_FIELDS,
    UNSAFE_ADVICE,
    UNSAFE_WHY,
    StreamChangeRefused,
    StreamConfigInvalid,
    check_names,
    refuse_unknown,
    settings_for,
    unsafe_change,
    validated,
)

log = logging.getLogger(__name__)

# Sections of the configuration's form whose keys are not the settings' own names.
ALIASES: dict[str, dict[str, str]] = {
    "input": {"mean": "input_mean", "std": "input_std"},
    "model": {
        "arch": "model_arch",
        "weights": "model_weights",
        "train": "train_layers",
        "feature_space": "drift_feature_space",
    },
    "strategy": {"name": "strategy", "params": "strategy_params"},
}
INPUT_KEYS = frozenset({"channels", "size", "resize", *ALIASES["input"]})
RESIZE_POLICIES = ("stretch",)  # ingest resizes every image to size x size (antialiased)
TOP_KEYS = frozenset({"name", "classes", "input", "model", "strategy", "settings"})


class StreamExists(LearnstreamError, ValueError):
    """A stream of that name exists already: a creation never changes it."""

    status_code = 409


@dataclass(frozen=True)
class StreamSpec:
    """What a new stream is created with; ``None`` and what ``settings`` leaves out come from
    the global settings."""

    classes: list[str] | None = None
    channels: int | None = None
    size: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)


def _section(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    section = data.get(name, {})
    if not isinstance(section, dict):
        raise StreamConfigInvalid(f"{name}: must be a table (an object) of settings")
    return section


def spec_from_form(data: Mapping[str, Any]) -> StreamSpec:
    """The :class:`StreamSpec` that a configuration in its form (see the module) describes."""
    refuse_unknown(data, TOP_KEYS, "unknown key; a configuration has")
    values: dict[str, Any] = dict(_section(data, "settings"))
    for section, aliases in ALIASES.items():
        table = _section(data, section)
        allowed = INPUT_KEYS if section == "input" else aliases
        refuse_unknown(table, allowed, f"unknown key; {section} has", prefix=f"{section}.")
        values.update({aliases[key]: value for key, value in table.items() if key in aliases})
    source = _section(data, "input")
    resize = source.get("resize", RESIZE_POLICIES[0])
    if resize not in RESIZE_POLICIES:
        raise StreamConfigInvalid(f"input.resize: must be one of {list(RESIZE_POLICIES)}")
    classes = data.get("classes")
    if classes is not None and not isinstance(classes, list):
        raise StreamConfigInvalid("classes: must be a list of class names")
    return StreamSpec(classes, source.get("channels"), source.get("size"), values)


def _checked_input(
    settings: Settings, classes: list[str], channels: int, size: int
) -> tuple[list[str], int, int]:
    """Classes, channels and size validated by the global settings' own rules."""
    names = {"default_classes": "classes", "input_channels": "channels", "input_size": "size"}
    try:
        checked = Settings.model_validate(
            {
                **settings.model_dump(),
                "default_classes": classes,
                "input_channels": channels,
                "input_size": size,
            }
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        where = names.get(str(error["loc"][0]) if error["loc"] else "", "input")
        message = str(error["msg"]).removeprefix("Value error, ").replace("default_classes ", "")
        raise StreamConfigInvalid(f"{where}: {message}") from None
    return list(checked.default_classes), checked.input_channels, checked.input_size


def check_model(in_force: Settings, classes: list[str], channels: int, size: int) -> None:
    """Build the stream's version-1 model and run one forward pass: the architecture is known,
    the weights load safely and fit it, the head has one output per class."""
    import torch

    from learners.architectures import ArchitectureError
    from learners.models import build_model
    from learners.weights import WeightsError

    try:
        model = build_model(
            n_classes=len(classes),
            in_channels=channels,
            input_size=size,
            seed=in_force.seed,
            name=in_force.model_arch,
            weights=in_force.model_weights,
            mean=in_force.input_mean,
            std=in_force.input_std,
            train=in_force.train_layers,
        )
    except (ArchitectureError, WeightsError) as exc:
        raise StreamConfigInvalid(str(exc)) from None
    model.eval()
    try:
        with torch.no_grad():
            logits = model(torch.zeros(2, channels, size, size))
    except Exception as exc:  # any library's failure on these shapes: say which input
        raise StreamConfigInvalid(
            f"model: one forward pass of {channels}-channel {size}x{size} images failed: {exc}"
        ) from None
    if tuple(logits.shape) != (2, len(classes)):
        raise StreamConfigInvalid(
            f"model: gives {tuple(logits.shape)[1:]} outputs for {len(classes)} classes"
        )


def _absolute_weights(values: dict[str, Any]) -> dict[str, Any]:
    """A weights path as an absolute path: learners run in other folders than the CLI."""
    weights = values.get("model_weights")
    if weights is None:
        return values
    path = Path(str(weights)).expanduser()
    if not path.is_file():
        raise StreamConfigInvalid(f"weights: no such file {str(path)!r}")
    return {**values, "model_weights": str(path.resolve())}


def insert_stream(
    store: Store,
    name: str,
    classes: list[str],
    channels: int,
    size: int,
    config: dict[str, Any] | None,
) -> tuple[Stream, bool]:
    """Insert the stream row; when another process created ``name`` first, that stream and
    ``False``."""
    try:
        with store.session() as session:
            stream = Stream(
                name=name,
                classes=list(classes),
                channels=channels,
                size=size,
                config=config or None,
                lock_ticks=0,
                sample_count=0,
            )
            session.add(stream)
    except IntegrityError:
        with store.session() as session:
            return store.stream(session, name), False
    return stream, True


def create_stream(store: Store, settings: Settings, name: str, spec: StreamSpec) -> Stream:
    """Create the stream ``name`` with ``spec``, validated in full first (the model is built
    and run once); an existing stream is refused and left as it is."""
    if not valid_stream_name(name):
        raise InvalidRequest(f"name: must be {STREAM_NAME_RULE}, got {name!r:.140}")
    with store.session() as session:
        if session.scalar(select(Stream.id).where(Stream.name == name)) is not None:
            raise StreamExists(
                f"stream {name!r} exists: change it with learnstream streams update, "
                "or choose another name"
            )
    classes, channels, size = _checked_input(
        settings,
        spec.classes if spec.classes is not None else list(settings.default_classes),
        spec.channels if spec.channels is not None else settings.input_channels,
        spec.size if spec.size is not None else settings.input_size,
    )
    # What cannot change later is fixed now, from the global settings where the spec is silent.
    pinned = {key: getattr(settings, key) for key in UNSAFE_WHY}
    values = _absolute_weights({**pinned, **spec.settings})
    config, in_force = validated(settings, values)
    check_model(in_force, classes, channels, size)
    stream, created = insert_stream(store, name, classes, channels, size, config)
    if not created:
        raise StreamExists(f"stream {name!r} was created by another caller meanwhile")
    log.info("stream configured", extra={"stream": name, "config": config})
    return stream


@dataclass(frozen=True)
class StreamChange:
    """What a change to a stream did: the settings it set and the classes it added."""

    stream: Stream
    changed: dict[str, Any]
    added_classes: list[str]


def _new_classes(old: list[str], classes: list[str] | None, add: list[str]) -> list[str]:
    """The class list after a change: ``old`` with names appended; anything else is refused."""
    if classes is not None and classes[: len(old)] != old:
        raise StreamChangeRefused(
            f"classes: {old} cannot become {classes}: classes can only be added at the end "
            "(their indices are the models' outputs); removing or reordering them is refused"
        )
    wanted = [*(classes[len(old) :] if classes is not None else []), *add]
    added: list[str] = []
    for name in wanted:
        if not isinstance(name, str) or not name.strip():
            raise StreamConfigInvalid("classes: a class name must be a non-empty string")
        if name not in old and name not in added:
            added.append(name)
    return [*old, *added]


def update_stream(
    store: Store,
    settings: Settings,
    name: str,
    values: dict[str, Any],
    *,
    classes: list[str] | None = None,
    add_classes: Sequence[str] = (),
) -> StreamChange:
    """Change the stream's settings ``values`` and add classes, where that is safe; an unsafe
    change is refused with the reason and what to do, and nothing of the stream changes."""
    check_names(values)
    with store.session() as session:
        # The row read again under its lock: two changes at once are made one after the other.
        stream_id = store.stream(session, name).id
        lock_stream(session, stream_id)
        stream = session.get(Stream, stream_id, populate_existing=True)
        if stream is None:
            raise StreamNotFound(f"unknown stream {name!r}")
        before = settings_for(settings, stream)
        if "strategy_params" in values:  # a change of some parameters keeps the others
            values = {
                **values,
                "strategy_params": {**before.strategy_params, **values["strategy_params"]},
            }
        config, after = validated(settings, {**(stream.config or {}), **values})
        for key in values:
            why = unsafe_change(key, getattr(before, key), getattr(after, key))
            if why is not None:
                raise StreamChangeRefused(
                    f"{key}: cannot change once the stream exists: {why}; {UNSAFE_ADVICE}"
                )
        old_classes = list(stream.classes)
        new_classes = _new_classes(old_classes, classes, list(add_classes))
        stream.config = config or None
        stream.classes = new_classes
    store.streams.pop(name, None)
    added = new_classes[len(old_classes) :]
    if added or values:
        log.info(
            "stream changed",
            extra={"stream": name, "changed": sorted(values), "added_classes": added},
        )
    return StreamChange(stream, {key: config[key] for key in values}, added)


def changes_from_form(data: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that a change in the configuration's form (sections ``model``,
    ``strategy``, ``settings``) sets, by name."""
    return spec_from_form({k: v for k, v in data.items() if v is not None}).settings


def _shown_value(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def describe_stream(store: Store, settings: Settings, name: str) -> dict[str, Any]:
    """The stream's whole configuration in its form (see the module), with what it holds."""
    with store.session() as session:
        stream = store.stream(session, name)
        champion = champion_version(session, stream.id)
        versions = session.scalar(
            select(func.count())
            .select_from(ModelVersion)
            .where(ModelVersion.stream_id == stream.id)
        )
    in_force = settings_for(settings, stream)
    values = {key: _shown_value(getattr(in_force, key)) for key in sorted(STREAM_FIELDS)}
    form: dict[str, Any] = {"name": stream.name, "classes": list(stream.classes)}
    form["input"] = {"channels": stream.channels, "size": stream.size, "resize": "stretch"}
    for section, aliases in ALIASES.items():
        form.setdefault(section, {})
        for key, setting in aliases.items():
            form[section][key] = values.pop(setting)
    form["settings"] = values
    form["set_by_stream"] = sorted(stream.config or {})
    form["champion"] = champion
    form["versions"] = int(versions or 0)
    form["samples"] = stream.sample_count
    form["created_at"] = iso(stream.created_at)
    return form


def list_streams(store: Store, settings: Settings) -> list[dict[str, Any]]:
    """Every stream with its classes, input, model, strategy and champion, by name; a stream
    whose configuration no longer validates against the global settings says why."""
    with store.session() as session:
        streams = list(session.scalars(select(Stream).order_by(Stream.name)))
        champions = {s.id: champion_version(session, s.id) for s in streams}
    rows = []
    for stream in streams:
        row: dict[str, Any] = {
            "name": stream.name,
            "classes": list(stream.classes),
            "input": f"{stream.channels}x{stream.size}x{stream.size}",
            "samples": stream.sample_count,
            "champion": champions[stream.id],
        }
        try:
            in_force = settings_for(settings, stream)
        except StreamConfigInvalid as exc:
            row |= {"arch": "?", "train": "?", "strategy": "?", "error": str(exc)}
        else:
            row |= {
                "arch": in_force.model_arch,
                "train": in_force.train_layers,
                "strategy": in_force.strategy,
            }
        rows.append(row)
    return rows
