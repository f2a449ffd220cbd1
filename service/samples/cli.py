"""``learnstream samples``: delete samples with their lineage, list deletions, apply retention.

``delete`` calls :func:`service.samples.deletion.delete_samples`, as ``DELETE /v1/samples``
and the retention sweep do; a mistake is one line on stderr and exit 1 (the CLI's group
turns every :class:`LearnstreamError` into that).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from service.context import Service, get_service
from service.samples.deletion import (
    criteria_of,
    delete_samples,
    list_deletions,
    parse_meta,
)

samples_cli = typer.Typer(
    help="Samples: delete them with their lineage, list deletions, apply retention.",
    no_args_is_help=True,
)
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
StreamOption = Annotated[
    str | None,
    typer.Option(
        "--stream",
        show_default=False,
        help='Stream name (default: the setting LEARNSTREAM_DEFAULT_STREAM, "default").',
    ),
]


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, default=str))


def _stream(service: Service, stream: str | None) -> str:
    return stream if stream is not None else service.settings.default_stream


def _ids(values: list[str] | None) -> list[str]:
    """``--ids a,b --ids c``: every id named."""
    return [part.strip() for value in values or [] for part in value.split(",") if part.strip()]


@samples_cli.command("delete")
def delete(
    stream: StreamOption = None,
    ids: Annotated[
        list[str] | None,
        typer.Option("--ids", help="Sample ids, comma-separated (repeatable)."),
    ] = None,
    meta: Annotated[
        list[str] | None,
        typer.Option(help="Samples whose meta has key=value (repeatable: all must hold)."),
    ] = None,
    group: Annotated[str | None, typer.Option(help="Samples of this group.")] = None,
    before: Annotated[
        str | None,
        typer.Option(help="Samples received before this ISO 8601 time (no zone: UTC)."),
    ] = None,
    by: Annotated[str | None, typer.Option(help="Who deletes (recorded; required).")] = None,
    reason: Annotated[str | None, typer.Option(help="Why (recorded; required).")] = None,
    retrain: Annotated[
        bool,
        typer.Option("--retrain", help="Queue a candidate trained without them, through the gate."),
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Delete samples from the store and from every stored replay buffer and strategy
    state, and name the model versions trained on them (all criteria given must hold)."""
    service = get_service()
    name = _stream(service, stream)
    criteria = criteria_of(ids=_ids(ids), meta=parse_meta(meta or []), group=group, before=before)
    result = delete_samples(
        service, name, criteria, by=by or "", reason=reason or "", retrain=retrain
    )
    answer = result.to_dict()
    if retrain:
        answer["retrain"] = _retrain(service, name, result.audit_id)
    if json_out:
        _echo_json(answer)
        return
    versions = ", ".join(f"v{v}" for v in result.versions_trained_on_them) or "none"
    typer.echo(
        f"{name}: deleted {result.deleted} samples (deletion #{result.audit_id}); "
        f"versions trained on them: {versions}"
        + (
            f"; states purged: {', '.join(f'v{v}' for v in result.purged_versions)}"
            if result.purged_versions
            else ""
        )
    )
    if retrain:
        typer.echo(f"{name}: retrain: {_describe(answer['retrain'])}")


def _retrain(service: Service, stream: str, audit_id: int) -> dict[str, Any]:
    """Run the retrain here on the in-process broker, else queue ``learnstream.retrain``."""
    if service.settings.broker_url.startswith("memory://"):
        from service.samples.retrain import retrain_without_deleted

        return retrain_without_deleted(service, stream, audit_id).to_dict()
    from workers.app import configure, queue_retrain

    configure(service.settings)
    task_id = queue_retrain(stream, audit_id)
    return {"queued": True, "task_id": task_id}


def _describe(retrain: dict[str, Any]) -> str:
    if retrain.get("queued"):
        return f"queued as learnstream.retrain (task {retrain['task_id']})"
    if retrain.get("candidate") is None:
        return str(retrain.get("note") or "no candidate")
    verdict = "promoted" if retrain.get("promoted") else "rejected by the gate"
    return f"candidate v{retrain['candidate']} {verdict}"


@samples_cli.command("deletions")
def deletions(stream: StreamOption = None, json_out: JsonOption = False) -> None:
    """The stream's deletions (audit records), newest first."""
    service = get_service()
    rows = list_deletions(service, _stream(service, stream))
    if json_out:
        _echo_json(rows)
        return
    for row in rows:
        kept = " (kept beyond limits)" if row["kept"] else ""
        typer.echo(
            f"#{row['id']} {row['created_at'][:19]} by {row['by']}: {row['deleted']} samples, "
            f"versions {row['versions']}{kept}: {row['reason']}"
        )


@samples_cli.command("retain")
def retain(stream: StreamOption = None, json_out: JsonOption = False) -> None:
    """Apply the stream's retention limits now (as the worker's sweep does)."""
    from service.samples.retention import apply_retention

    service = get_service()
    name = _stream(service, stream)
    done = apply_retention(service, [name])
    result = done.get(name)
    answer = None if result is None else {**result.to_dict(), "kept": result.kept}
    if json_out:
        _echo_json(answer or {"deleted": 0, "versions_trained_on_them": [], "audit_id": None})
        return
    if result is None:
        typer.echo(f"{name}: nothing beyond its retention limits to delete")
        return
    typer.echo(
        f"{name}: retention deleted {result.deleted} samples (deletion #{result.audit_id})"
        + (f"; kept beyond limits: {json.dumps(result.kept)}" if result.kept else "")
    )
