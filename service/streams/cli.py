"""``learnstream streams``: create, list, show and change configured streams.

Each command calls :mod:`service.streams.catalog`, as ``/v1/streams`` does; a mistake is
one line on stderr and exit 1 (the CLI's group turns every :class:`LearnstreamError` into
that).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer

from service.context import get_service
from service.errors import InvalidRequest
from service.streams.catalog import (
    ALIASES,
    StreamSpec,
    create_stream,
    describe_stream,
    list_streams,
    spec_from_form,
    update_stream,
)
from service.streams.configuration import StreamConfigInvalid

streams_cli = typer.Typer(
    help="Streams as configured objects: create, list, show NAME, update NAME.",
    no_args_is_help=True,
)
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
# ``streams update NAME --gate-tolerance 0.02``: any stream setting by its name, or the
# short names of the configuration's form (--arch, --weights, --train, --mean, ...).
SHORT_NAMES = {key: setting for aliases in ALIASES.values() for key, setting in aliases.items()}


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _value(text: str) -> Any:
    """A value typed on the command line: JSON where it reads as JSON (numbers, true,
    lists), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _pairs(option: str, items: list[str]) -> dict[str, Any]:
    """``key=value`` items of ``option`` as a mapping."""
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidRequest(f"{option}: expected key=value, got {item!r}")
        pairs[key.strip()] = _value(value)
    return pairs


def _names(text: str | None) -> list[str] | None:
    """Comma-separated names (``cat,dog``), or a JSON list of them."""
    if text is None:
        return None
    value = _value(text)
    if isinstance(value, list):
        return [str(v) for v in value]
    return [name.strip() for name in text.split(",") if name.strip()]


def _read_form(path: Path) -> dict[str, Any]:
    """A configuration file: TOML, or JSON when it ends in ``.json``."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise StreamConfigInvalid(
            f"--from-file: cannot read {str(path)!r}: {exc.strerror}"
        ) from None
    try:
        return json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise StreamConfigInvalid(f"--from-file: {path.name} is not valid: {exc}") from None


@streams_cli.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Stream name.")],
    from_file: Annotated[
        Path | None, typer.Option("--from-file", help="Configuration file (TOML, or JSON).")
    ] = None,
    classes: Annotated[str | None, typer.Option(help="Class names in order: cat,dog,bird.")] = None,
    arch: Annotated[
        str | None, typer.Option(help="small_cnn, torchvision:<model> or timm:<model>.")
    ] = None,
    weights: Annotated[Path | None, typer.Option(help="Local weights file.")] = None,
    input_size: Annotated[int | None, typer.Option(help="Height and width the model sees.")] = None,
    channels: Annotated[int | None, typer.Option(help="1 (grey) or 3 (RGB).")] = None,
    mean: Annotated[str | None, typer.Option(help="Per-channel mean: 0.485,0.456,0.406.")] = None,
    std: Annotated[str | None, typer.Option(help="Per-channel std: 0.229,0.224,0.225.")] = None,
    train: Annotated[str | None, typer.Option(help="all, last-block or head.")] = None,
    strategy: Annotated[str | None, typer.Option(help="Avalanche strategy name.")] = None,
    param: Annotated[
        list[str] | None, typer.Option(help="Strategy parameter key=value (repeatable).")
    ] = None,
    setting: Annotated[
        list[str] | None,
        typer.Option("--set", help="Any stream setting name=value (repeatable)."),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Create a stream with its own configuration, validated in full first: the model is built
    from its weights and run once. What is not given comes from the global settings."""
    base = spec_from_form(_read_form(from_file)) if from_file is not None else StreamSpec()
    values = {**base.settings, **_pairs("--set", setting or [])}
    if from_file is not None and "model_weights" in values:  # relative to the file's folder
        values["model_weights"] = str(from_file.parent / str(values["model_weights"]))
    given = {
        "model_arch": arch,
        "model_weights": str(weights) if weights is not None else None,
        "train_layers": train,
        "input_mean": mean,
        "input_std": std,
        "strategy": strategy,
    }
    values.update({key: value for key, value in given.items() if value is not None})
    if param:
        values["strategy_params"] = {
            **values.get("strategy_params", {}),
            **_pairs("--param", param),
        }
    spec = StreamSpec(
        classes=_names(classes) if classes is not None else base.classes,
        channels=channels if channels is not None else base.channels,
        size=input_size if input_size is not None else base.size,
        settings=values,
    )
    service = get_service()
    create_stream(service.store, service.settings, name, spec)
    shown = describe_stream(service.store, service.settings, name)
    if json_out:
        _echo_json(shown)
        return
    typer.echo(_summary(shown))


def _summary(shown: dict[str, Any]) -> str:
    model, source = shown["model"], shown["input"]
    return (
        f"{shown['name']}: {len(shown['classes'])} classes {','.join(shown['classes'])}; "
        f"{source['channels']}x{source['size']}x{source['size']}; {model['arch']} "
        f"(train {model['train']}); strategy {shown['strategy']['name']}; "
        f"champion {shown['champion'] or 'none yet'}"
    )


@streams_cli.command("list")
def list_command(json_out: JsonOption = False) -> None:
    """Every stream with its classes, input, model, strategy and champion."""
    service = get_service()
    rows = list_streams(service.store, service.settings)
    if json_out:
        _echo_json(rows)
        return
    for row in rows:
        typer.echo(
            f"{row['name']:<20} {len(row['classes']):>3} classes  {row['input']:<10} "
            f"{row['arch']:<28} {row['train']:<10} {row['strategy']:<8} "
            f"{row['samples']:>7} samples  champion {row['champion'] or '-'}"
        )


@streams_cli.command("show")
def show(
    name: Annotated[str, typer.Argument(help="Stream name.")], json_out: JsonOption = False
) -> None:
    """The stream's whole configuration (--json: one JSON object in the form a configuration
    file takes, with what it holds)."""
    service = get_service()
    shown = describe_stream(service.store, service.settings, name)
    if json_out:
        _echo_json(shown)
        return
    typer.echo(_summary(shown))
    for section in ("input", "model", "strategy", "settings"):
        for key, value in shown[section].items():
            typer.echo(f"  {section}.{key} = {json.dumps(value, default=str)}")
    typer.echo(f"  set by the stream: {', '.join(shown['set_by_stream']) or 'nothing'}")


def _changes(extra: list[str]) -> dict[str, Any]:
    """``--field value`` (or ``--field=value``) pairs as settings by name."""
    values: dict[str, Any] = {}
    items = iter(extra)
    for item in items:
        if not item.startswith("--"):
            raise InvalidRequest(f"expected --field value, got {item!r}")
        key, sep, text = item[2:].partition("=")
        if not sep:
            following = next(items, None)
            if following is None:
                raise InvalidRequest(f"--{key}: needs a value")
            text = following
        field = key.replace("-", "_")
        setting = SHORT_NAMES.get(field, field)
        # Means and stds stay text ("0.5" or "0.5,0.5,0.5"): the setting reads lists from text.
        values[setting] = text if setting in ("input_mean", "input_std") else _value(text)
    return values


@streams_cli.command(
    "update", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def update(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Stream name.")],
    add_class: Annotated[
        list[str] | None, typer.Option("--add-class", help="A class to add (repeatable).")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option(help="Strategy parameter key=value (repeatable).")
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Change what is safe to change (gate, drift, window and learning settings, strategy
    parameters that keep its state valid, new classes) as --field value, e.g.
    --gate-tolerance 0.02; an unsafe change is refused with the reason."""
    service = get_service()
    values = _changes(list(ctx.args))
    if param:
        values["strategy_params"] = _pairs("--param", param)
    raw = values.pop("classes", None)
    classes = raw if isinstance(raw, list) or raw is None else _names(str(raw))
    change = update_stream(
        service.store,
        service.settings,
        name,
        values,
        classes=classes,
        add_classes=add_class or [],
    )
    if json_out:
        _echo_json({"changed": change.changed, "added_classes": change.added_classes})
        return
    done = [f"{key} = {json.dumps(value)}" for key, value in change.changed.items()]
    done += [f"class {c!r} added" for c in change.added_classes]
    typer.echo(f"{name}: " + ("; ".join(done) if done else "nothing changed"))
