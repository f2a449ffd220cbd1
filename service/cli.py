"""The ``learnstream`` command line.

Listings print a table or, with ``--json``, one JSON document. User mistakes end
with one clear line on stderr and exit code 1, never a traceback. The commands
that start or reach the queue (``run``, ``worker``, ``submit``) import the
Celery app from ``workers`` inside the command: the CLI is the process entry
point that wires the layers together.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer
from typer import _click as click  # the Click that this Typer release vendors
from typer._click.core import ParameterSource
from typer.core import TyperGroup

from service.config import (
    Settings,
    is_settings_error,
    load_settings,
    mask_url,
    settings_error,
)
from service.context import Service, get_service, set_service
from service.errors import LearnstreamError
from service.samples.cli import samples_cli
from service.store.schema import MAX_INT
from service.streams.cli import streams_cli

if TYPE_CHECKING:
    from service.demo.stream import DemoPlan
    from service.ingest.submission import Submission


class _Commands(TyperGroup):
    """Every command's :class:`LearnstreamError`, and a malformed setting, becomes one line
    on stderr (one per bad variable) and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LearnstreamError as exc:
            _fail(str(exc))
        except Exception as exc:
            if not is_settings_error(exc):
                raise
            _fail(str(settings_error(exc)))  # type: ignore[arg-type]


cli = typer.Typer(
    cls=_Commands,
    add_completion=False,
    no_args_is_help=True,
    help="learnstream: continual learning for image classifiers.",
)
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _stream_or_default(ctx: typer.Context, param: typer.CallbackParam, value: str) -> str:
    """The ``--stream`` given, else the setting ``default_stream`` (LEARNSTREAM_DEFAULT_STREAM)."""
    if param.name and ctx.get_parameter_source(param.name) is ParameterSource.DEFAULT:
        try:
            return Settings().default_stream
        except ValueError:  # pydantic's ValidationError: the command reports bad settings itself
            return value
    return value


# Every command but ``run`` names its stream with this option; its default is a setting.
StreamOption = Annotated[
    str,
    typer.Option(
        "--stream",
        callback=_stream_or_default,
        show_default=False,
        help='Stream name (default: the setting LEARNSTREAM_DEFAULT_STREAM, "default").',
    ),
]
DEFAULT_STREAM = ""  # stands for "not given": the option's callback reads the setting


def _fail(message: str) -> NoReturn:
    for line in message.splitlines() or [""]:
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(1)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _service() -> Service:
    """This process's service (settings from the environment)."""
    return get_service()


@cli.command()
def run(
    windows: Annotated[int, typer.Option(help="Windows in the demo stream (at least 10).")] = 20,
    stream: Annotated[str, typer.Option(help="Stream name of the demo.")] = "demo",
    reset: Annotated[
        bool,
        typer.Option(help="Delete the stream of an earlier `learnstream run` of that name first."),
    ] = True,
    use_configured_store: Annotated[
        bool,
        typer.Option(
            "--use-configured-store",
            help="Play on the configured database and model folder (still on the in-process "
            "broker).",
        ),
    ] = False,
    demo: Annotated[
        str,
        typer.Option(
            help="digits (grey digits, the small CNN) or rgb (coloured shapes on photos, a "
            "torchvision ResNet-18 from a weights file the demo writes)."
        ),
    ] = "digits",
) -> None:
    """The main job: play the demo stream end to end on an in-process worker and broker.

    It plays on its own embedded home unless told --use-configured-store, deletes only a
    stream an earlier run created, and removes its stream again when it fails. The last
    line printed is one JSON object summarising what the service decided.
    """
    from service.demo.home import demo_settings, ignored_variables
    from service.demo.stream import DemoPlan

    if windows < 10:
        _fail("--windows must be at least 10 (the schedule needs a shift and a corrupted window)")
    if demo not in ("digits", "rgb"):
        _fail(f"--demo must be digits or rgb, not {demo!r}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("kombu.connection").setLevel(logging.ERROR)  # memory:// has no host
    configured = load_settings()
    settings = demo_settings(configured, use_configured_store=use_configured_store)
    service = Service.from_settings(settings)
    set_service(service)
    _make_room(service, stream, reset)
    plan = DemoPlan(
        windows=windows, window_size=settings.window_size, input_size=settings.input_size
    )
    what = "digits"
    if demo == "rgb":
        from service.demo import rgb
        from service.streams.catalog import create_stream

        weights = rgb.write_weights(settings.home.resolve() / "weights", seed=settings.seed)
        create_stream(service.store, settings, stream, rgb.stream_spec(weights))
        what = f"RGB shapes ({rgb.ARCH} from {weights}, {rgb.SHIFT} shift)"
    typer.echo(
        f"learnstream run: {windows} windows of {plan.window_size} {what}, groups A and B; "
        f"shift of group {plan.shift_group} from window {plan.shift_window}, labels of group "
        f"{plan.corrupted_group} corrupted in window {plan.corrupted_window}; "
        f"store {mask_url(settings.resolved_database_url)} "
        f"({'configured' if use_configured_store else 'its own home'}), models in "
        f"{settings.resolved_model_dir}, broker {settings.broker_url} (in-process worker)"
    )
    ignored = ignored_variables(configured, settings)
    if ignored:
        hint = (
            "" if use_configured_store else "; --use-configured-store plays on the configured store"
        )
        typer.echo(f"learnstream run: ignoring the configured {', '.join(ignored)}{hint}")
    try:
        summary = _play(service, plan, stream, demo)
    except (Exception, KeyboardInterrupt) as exc:
        _fail(_clean_up(service, stream, exc))
    typer.echo(json.dumps(summary))


def _make_room(service: Service, stream: str, reset: bool) -> None:
    """Delete an earlier run's stream ``stream`` (with ``reset``), or refuse in one line."""
    from service.demo.home import strategy_refusal, stream_origin
    from service.store.removal import delete_stream

    origin = stream_origin(service.store, stream)
    where = mask_url(service.settings.resolved_database_url)
    if origin == "absent":
        return
    if not reset:
        refusal = strategy_refusal(service.store, service.settings, stream)
        _fail(refusal or f"stream {stream!r} already exists in {where}; use --reset or --stream")
    if origin != "demo":
        _fail(
            f"stream {stream!r} in {where} was not created by `learnstream run`; it is kept: "
            "use --stream OTHER"
        )
    delete_stream(service.store, service.settings.resolved_model_dir, stream)


def _play(service: Service, plan: DemoPlan, stream: str, demo: str) -> dict[str, Any]:
    """Run the demo through the in-process broker and worker; its summary."""
    from celery.contrib.testing.worker import start_worker

    from service.demo.home import mark
    from service.demo.job import run_demo
    from workers.app import QUEUES, configure

    app = configure(service.settings)
    with app.connection_for_write() as connection:  # what an earlier run here left queued
        for queue in QUEUES:
            connection.default_channel.queue_purge(queue)

    def send_samples(name: str, samples: list[dict[str, Any]]) -> dict[str, Any]:
        kwargs = {"stream": name, "samples": mark(samples)}
        result = app.send_task("learnstream.ingest", kwargs=kwargs)
        return result.get(timeout=300, interval=0.01)

    def send_images(
        name: str, images: list[str], ids: list[str], groups: list[str]
    ) -> dict[str, Any]:
        kwargs = {"stream": name, "images": images, "ids": ids, "groups": groups}
        result = app.send_task("learnstream.predict", kwargs=kwargs)
        return result.get(timeout=120, interval=0.01)

    with start_worker(
        app,
        concurrency=1,
        pool="solo",
        loglevel="WARNING",
        perform_ping_check=False,
        queues=list(QUEUES),
        shutdown_timeout=120,
    ):
        if demo == "rgb":
            from service.demo.rgb import rgb_stream

            windows = rgb_stream(plan)
        else:
            from service.demo.stream import demo_stream

            windows = demo_stream(plan)
        return run_demo(
            service,
            send_samples,
            send_images,
            plan,
            stream=stream,
            echo=typer.echo,
            windows=windows,
        )


def _clean_up(service: Service, stream: str, exc: BaseException) -> str:
    """Remove the stream a failed run created (never another's); the one line that says so."""
    from service.demo.home import stream_origin
    from service.store.removal import delete_stream

    lines = str(exc).strip().splitlines()
    reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else type(exc).__name__
    reason += f": {lines[0]}" if lines else ""
    try:
        origin = stream_origin(service.store, stream)
        if origin in ("demo", "empty"):
            delete_stream(service.store, service.settings.resolved_model_dir, stream)
            return f"learnstream run failed ({reason}); removed the stream {stream!r} it created"
    except Exception as cleanup:  # the store may be what failed
        return (
            f"learnstream run failed ({reason}); could not remove the stream {stream!r} it "
            f"created: {cleanup}"
        )
    kept = f"; kept the stream {stream!r}, which others wrote to" if origin == "other" else ""
    return f"learnstream run failed ({reason}){kept}"


@cli.command()
def worker(
    queues: Annotated[
        str, typer.Option("-Q", "--queues", help="Comma-separated queues (default: all).")
    ] = "ingest,learn,predict",
    concurrency: Annotated[int, typer.Option("-c", "--concurrency", help="Worker processes.")] = 1,
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
    beat: Annotated[
        bool, typer.Option("-B", "--beat", help="Also run the sweep schedule (one worker only).")
    ] = False,
    hostname: Annotated[
        str | None, typer.Option("-n", "--hostname", help="Worker node name, e.g. ingest1@%h.")
    ] = None,
) -> None:
    """Start a Celery worker on the configured broker, once its store, broker and (for the
    learn queue) each stream's champion are found fit; otherwise one line says why."""
    from workers.app import QUEUES, check_broker, check_store, configure

    unknown = set(queues.split(",")) - set(QUEUES)
    if unknown:
        _fail(f"unknown queue(s) {', '.join(sorted(unknown))}; known: {', '.join(QUEUES)}")
    settings = load_settings()
    check_broker(settings)
    check_store(settings)
    _check_device(settings)
    if "learn" in queues.split(","):
        _check_learner(settings)
    app = configure(settings)
    argv = ["worker", "-Q", queues, "-c", str(concurrency), f"--loglevel={loglevel}", "-E"]
    if beat:
        settings.home.mkdir(parents=True, exist_ok=True)  # the sweep's schedule file
        argv += ["-B"]
    argv += ["-n", hostname] if hostname else []
    app.worker_main(argv)


def _check_device(settings: Settings) -> None:
    """Refuse to start on a device this machine does not have (LEARNSTREAM_DEVICE)."""
    from learners.devices import DeviceUnavailable, resolve_device

    try:
        resolve_device(settings.device)
    except DeviceUnavailable as exc:
        _fail(f"LEARNSTREAM_DEVICE: {exc}")


def _check_learner(settings: Settings) -> None:
    """Refuse to learn with a strategy that cannot continue some stream's champion."""
    from service.models.compatibility import check_champions
    from service.store.engine import Store

    store = Store(settings.resolved_database_url)
    try:
        refusal = check_champions(store, settings)
    finally:
        store.dispose()
    if refusal:
        _fail(refusal)


@cli.command("config")
def config_command(json_out: JsonOption = False) -> None:
    """The settings in force, each with its variable and source (default or environment);
    secrets and passwords in URLs are masked."""
    from service.config import effective_settings, in_force

    settings = load_settings()
    rows = effective_settings(settings)
    if json_out:
        _print_json({"settings": rows, "in_force": in_force(settings)})
        return
    width = max(len(row["variable"]) for row in rows.values())
    for row in rows.values():
        value = row["value"]
        value = "unset" if value is None else value if isinstance(value, str) else json.dumps(value)
        typer.echo(f"{row['variable']:<{width}} {value}  ({row['source']})")
    for name, value in in_force(settings).items():
        typer.echo(f"in force: {name} {value if value is not None else '-'}")


SUBMIT_NO_ANSWER = (
    "no answer from an ingest worker within {timeout:g} s (LEARNSTREAM_SUBMIT_TIMEOUT) on "
    "{broker}: is `learnstream worker -Q ingest` running with the same LEARNSTREAM_BROKER_URL? "
    "{answered} of {total} samples were answered before; sending them again stores nothing twice"
)
SUBMIT_LISTED = 5  # files shown per rejection reason; --json lists them all


class _IngestSender:
    """Sends one ingest call at a time to the configured broker and waits, at most
    ``submit_timeout`` seconds, for its answer; a broker that cannot work is refused first."""

    def __init__(self, settings: Settings, stream: str, total: int) -> None:
        from workers.app import check_broker, configure

        check_broker(settings)
        self.settings, self.stream, self.total, self.answered = settings, stream, total, 0
        self.app = configure(settings)

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        from celery.exceptions import TimeoutError as CeleryTimeout

        result = self.app.send_task(
            "learnstream.ingest", kwargs={"stream": self.stream, "samples": samples}
        )
        try:
            answer: dict[str, Any] = result.get(timeout=self.settings.submit_timeout, interval=0.05)
        except CeleryTimeout:
            _fail(
                SUBMIT_NO_ANSWER.format(
                    timeout=self.settings.submit_timeout,
                    broker=mask_url(self.settings.broker_url),
                    answered=self.answered,
                    total=self.total,
                )
            )
        self.answered += len(samples)
        return answer


@cli.command()
def submit(
    folder: Annotated[
        Path | None, typer.Argument(help="Folder of images (subfolder = label).")
    ] = None,
    stream: StreamOption = DEFAULT_STREAM,
    labels: Annotated[
        Path | None, typer.Option(help="CSV with columns file,label[,group], sent in its order.")
    ] = None,
    group: Annotated[str, typer.Option(help="Group of images without one in the CSV.")] = "default",
    seed: Annotated[int, typer.Option(help="Seed of the random sending order (no CSV).")] = 0,
    demo: Annotated[bool, typer.Option(help="Send the demo stream instead of a folder.")] = False,
    batch: Annotated[int, typer.Option(min=1, help="Samples per ingest call.")] = 64,
    json_out: JsonOption = False,
) -> None:
    """Send images to the ``learnstream.ingest`` queue as a producer would: ids are content
    digests, the order is seeded random (or the CSV's); exit 1 if any image was refused."""
    from service.ingest.submission import Call, folder_calls, plan_folder, submit_calls

    if (folder is None) == (not demo):
        _fail("give a FOLDER or --demo (not both)")
    settings = load_settings()
    if batch > settings.max_samples_per_call:
        _fail(
            f"--batch {batch} exceeds LEARNSTREAM_MAX_SAMPLES_PER_CALL "
            f"({settings.max_samples_per_call}), the most an ingest call may carry"
        )
    missing: list[str] = []
    calls: Iterable[Call]
    if demo:
        from service.demo.stream import DemoPlan, demo_stream

        # As a producer would send it: no broken samples, and no ids (content digests).
        demo_samples = [s for _, window in demo_stream(DemoPlan(bad_samples={})) for s in window]
        names = [str(s.pop("id")) for s in demo_samples]
        total = len(demo_samples)
        calls = (
            (names[i : i + batch], demo_samples[i : i + batch]) for i in range(0, total, batch)
        )
    else:
        if folder is None or not folder.is_dir():
            _fail(f"{folder} is not a folder")
        if labels is not None and not labels.is_file():
            _fail(f"{labels} is not a file")
        plan = plan_folder(folder, labels, group, seed)
        if not plan.files and not plan.missing:
            _fail(f"no labelled PNG, JPEG or .npy images found in {folder}")
        if plan.unlabelled:
            typer.echo(
                f"note: {plan.unlabelled} image(s) in {folder} are not sent: "
                + ("not named in the CSV" if labels else "not in a label subfolder"),
                err=True,
            )
        total, missing = len(plan.files), plan.missing
        calls = folder_calls(folder, plan, batch)
    send = _IngestSender(settings, stream, total)
    with typer.progressbar(length=total, label="submitting", file=sys.stderr) as bar:
        submission = submit_calls(
            calls, send, missing, on_call=lambda s: bar.update(s.sent - bar.pos)
        )
    if json_out:
        _print_json(submission.to_dict())
    else:
        _print_submission(stream, submission)
    if submission.failed:
        raise typer.Exit(1)


def _print_submission(stream: str, submission: Submission) -> None:
    created = submission.created
    if created:
        typer.echo(
            f"created stream {stream!r} with classes {created['classes']} "
            f"({created['channels']} channel(s), {created['size']}x{created['size']} pixels)"
        )
    typer.echo(
        f"{stream}: sent {submission.sent}, accepted {submission.accepted}, "
        f"duplicates {submission.duplicates}, rejected {len(submission.rejected)}, "
        f"conflicts {len(submission.conflicts)}"
    )
    for reason, files in submission.by_reason().items():
        shown = ", ".join(files[:SUBMIT_LISTED])
        more = f" and {len(files) - SUBMIT_LISTED} more" if len(files) > SUBMIT_LISTED else ""
        typer.echo(f"  {len(files)} x {reason}: {shown}{more}", err=True)
    for c in submission.conflicts[:SUBMIT_LISTED]:
        typer.echo(
            f"  conflict: {c['file']} labelled {c['label']!r} is stored as "
            f"{c['stored_id']} labelled {c['stored_label']!r}",
            err=True,
        )
    if len(submission.conflicts) > SUBMIT_LISTED:
        typer.echo(f"  and {len(submission.conflicts) - SUBMIT_LISTED} more conflicts", err=True)


def served_line(served: dict[str, Any]) -> str:
    """One line of a stream's served accuracy (``status``'s ``served``).

    >>> served_line({"traffic": 9, "labelled": 0, "accuracy": None, "by_group": {},
    ...     "label_delay_s": {"count": 0, "p50": None, "p90": None, "max": None}})
    'traffic 9 kept; served accuracy: no late label yet'
    >>> line = served_line({"traffic": 9, "labelled": 4, "accuracy": 0.75,
    ...     "by_group": {"A": {"n": 2, "accuracy": 1.0}, "B": {"n": 2, "accuracy": 0.5}},
    ...     "label_delay_s": {"count": 4, "p50": 30.0, "p90": 95.5, "max": 120.0}})
    >>> for part in line.split("; "):
    ...     print(part)
    traffic 9 kept
    served accuracy 0.75 on 4 labelled (A 1, B 0.5)
    label delay p50 30.0 s, p90 95.5 s, max 120.0 s
    """
    head = f"traffic {served['traffic']} kept; served accuracy"
    if not served["labelled"]:
        return head + ": no late label yet"
    groups = ", ".join(f"{g} {t['accuracy']:.3g}" for g, t in served["by_group"].items() if t["n"])
    d = served["label_delay_s"]
    return (
        f"{head} {served['accuracy']:.3g} on {served['labelled']} labelled ({groups}); "
        f"label delay p50 {d['p50']} s, p90 {d['p90']} s, max {d['max']} s"
    )


@cli.command()
def status(json_out: JsonOption = False) -> None:
    """Samples, rejections, windows and the champion of every stream."""
    from service.queries.listings import status as query

    data = query(_service())
    if json_out:
        _print_json(data)
        return
    if not data["streams"]:
        typer.echo("no streams yet")
    for name, s in data["streams"].items():
        w, b = s["windows"], s["backlog"]
        typer.echo(
            f"{name}: {s['samples']} samples, {s['rejected']} rejected; windows open {w['open']}, "
            f"closed {w['closed']}, processed {w['processed']}; champion "
            f"{'v' + str(s['champion']) if s['champion'] else 'none'}; "
            f"ingest {b['ingest_rate_per_s']}/s, {b['samples_waiting']} samples waiting, "
            f"{b['windows_queued']} windows queued, learner lag {b['learner_lag_s']} s"
        )
        a = s["adaptation"]
        if a:
            progress = ", ".join(
                f"{g} {a['final'].get(g, '-')} of {a['baseline'][g]}" for g in a["groups"]
            )
            typer.echo(
                f"  adapting since window {a['opened']} ({a['windows']} windows): {progress}"
            )
        served = s["served"]
        if served["traffic"] or served["labelled"]:
            typer.echo(f"  {served_line(served)}")


cli.add_typer(streams_cli, name="streams")
cli.add_typer(samples_cli, name="samples")

alerts_cli = typer.Typer(
    help="Drift, fairness, update and ingest alerts, newest first; `alerts ack ID` acknowledges."
)
cli.add_typer(alerts_cli, name="alerts")


@alerts_cli.callback(invoke_without_command=True)
def alerts(
    ctx: typer.Context,
    stream: Annotated[str | None, typer.Option(help="Only this stream.")] = None,
    open_only: Annotated[bool, typer.Option("--open", help="Only unacknowledged alerts.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Drift, fairness, update and ingest alerts, newest first; `alerts ack ID` acknowledges."""
    from service.queries.listings import list_alerts

    if ctx.invoked_subcommand is not None:
        return
    rows = list_alerts(_service(), stream, include_acknowledged=not open_only)
    if json_out:
        _print_json(rows)
        return
    for a in rows:
        ack = " (acknowledged)" if a["acknowledged"] else ""
        typer.echo(
            f"#{a['id']} {a['time'][:19]} {a['severity']:<8} {a['kind']:<20} "
            f"{_short(a['message'])}{ack}"
        )


LISTING_WIDTH = 100  # characters of a message in a listing; --json has the whole of it


def _short(message: str, more: int = 0) -> str:
    """``message`` as one short line of a listing: its first line, cut with an ellipsis,
    and ``(+N more)`` when ``more`` further reasons were left out."""
    lines = message.strip().splitlines()
    text = lines[0] if lines else ""
    suffix = f" (+{more} more)" if more else ""
    if len(text) + len(suffix) > LISTING_WIDTH or len(lines) > 1:
        text = text[: LISTING_WIDTH - len(suffix) - 1].rstrip() + "\u2026"
    return text + suffix


@alerts_cli.command("ack")
def alerts_ack(
    alert_id: Annotated[
        int, typer.Argument(metavar="ID", min=1, max=MAX_INT, help="Alert id (see `alerts`).")
    ],
    by: Annotated[str, typer.Option(help="Who acknowledges.")] = "operator",
    json_out: JsonOption = False,
) -> None:
    """Acknowledge an alert, recording who and when (as POST /v1/alerts/{id}/ack does)."""
    from service.alerts.records import acknowledge_alert

    if not 1 <= len(by) <= 128:
        _fail("--by must be 1 to 128 characters")
    alert = acknowledge_alert(_service().store, alert_id, by)
    if json_out:
        _print_json(alert)
        return
    typer.echo(
        f"#{alert['id']} {alert['kind']} acknowledged by {alert['acknowledged_by']} "
        f"at {alert['acknowledged_at'][:19]}"
    )


quarantine_cli = typer.Typer(
    help="Samples and windows held out of learning: list, release (back in), confirm (out).",
    no_args_is_help=True,
)
cli.add_typer(quarantine_cli, name="quarantine")
IdsOption = Annotated[
    str | None, typer.Option("--ids", help="Held sample ids, comma-separated.", show_default=False)
]
WindowsOption = Annotated[
    str | None,
    typer.Option("--windows", help="Held window numbers, comma-separated.", show_default=False),
]
AllOption = Annotated[bool, typer.Option("--all", help="Everything the stream holds.")]
ByOption = Annotated[
    str, typer.Option("--by", help="Who decides (recorded; required).", show_default=False)
]
NoteOption = Annotated[str | None, typer.Option("--note", help="Why (recorded).")]
NOTHING_NAMED = "name the samples (--ids) or windows (--windows) to decide on, or --all"


@quarantine_cli.command("list")
def quarantine_list(
    stream: StreamOption = DEFAULT_STREAM,
    status: Annotated[
        str, typer.Option(help="held, released, confirmed or all.", show_default=True)
    ] = "held",
    json_out: JsonOption = False,
) -> None:
    """Quarantined samples (given and suspected label, score) and windows, newest first."""
    from service.quarantine.records import ALL, list_quarantine, score_text

    rows = list_quarantine(_service().store, stream, status)
    if json_out:
        _print_json(rows)
        return
    for q in rows:
        if q["kind"] == "sample":
            score = score_text(q["score"])
            what = (
                f"sample {q['sample']} (group {q['group']}) labelled {q['given']}, "
                f"believed {q['believed']} (score {score})"
            )
        else:
            what = f"whole window: {q['reason']}"
        by = f" by {q['decided_by']}" if q["decided_by"] else ""
        typer.echo(f"#{q['id']} window {q['window']:<4} {q['status'] + by:<9} {what}")
    typer.echo(f"{len(rows)}{'' if status == ALL else ' ' + status} record(s)")


def _listed(text: str | None) -> list[str]:
    """A comma-separated option's items, stripped, empty ones left out."""
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def _window_numbers(text: str | None) -> list[int]:
    numbers = []
    for item in _listed(text):
        if not item.isdigit() or not 1 <= int(item) <= MAX_INT:
            _fail(f"--windows: expected window numbers (1, 2, ...), got {item!r}")
        numbers.append(int(item))
    return numbers


def _decide(
    action: Literal["released", "confirmed"],
    *,
    stream: str,
    ids: str | None,
    windows: str | None,
    everything: bool,
    by: str,
    note: str | None,
    json_out: bool,
) -> None:
    """Release or confirm what the options name (as POST /v1/quarantine/release|confirm)."""
    from service.quarantine.records import decide

    names, numbers = _listed(ids), _window_numbers(windows)
    if not by.strip():
        _fail("--by: say who decides (an operator's name)")
    if not (names or numbers or everything):
        _fail(NOTHING_NAMED)
    decided = decide(
        _service().store,
        stream,
        action,
        ids=names,
        windows=numbers,
        everything=everything,
        by=by,
        note=note or None,
    )
    if json_out:
        _print_json(decided.to_dict())
        return
    typer.echo(
        f"{action} {len(decided.samples)} sample(s) and {len(decided.windows)} window(s) "
        f"of stream {stream!r}"
    )


def _decision_command(action: Literal["released", "confirmed"], doc: str) -> Callable[..., None]:
    """The ``quarantine release`` or ``confirm`` command: the same options, one action."""

    def command(
        stream: StreamOption = DEFAULT_STREAM,
        ids: IdsOption = None,
        windows: WindowsOption = None,
        everything: AllOption = False,
        by: ByOption = "",
        note: NoteOption = None,
        json_out: JsonOption = False,
    ) -> None:
        _decide(
            action, stream=stream, ids=ids, windows=windows, everything=everything, by=by,
            note=note, json_out=json_out,
        )  # fmt: skip

    command.__doc__ = doc
    return command


quarantine_cli.command("release")(
    _decision_command(
        "released",
        "Put held samples or windows back into training, replay, the gate and references.",
    )
)
quarantine_cli.command("confirm")(
    _decision_command(
        "confirmed",
        "Confirm that held samples' labels (or windows) are wrong: they stay out for good.",
    )
)


@cli.command()
def models(
    stream: StreamOption = DEFAULT_STREAM,
    json_out: JsonOption = False,
) -> None:
    """Model versions of a stream with lineage, status and gate decisions."""
    from service.queries.listings import list_models

    rows = list_models(_service(), stream)
    if json_out:
        _print_json(rows)
        return
    for m in rows:
        star = "*" if m["champion"] else " "
        reasons = (m["gate_report"] or {}).get("reasons", [])
        gate = _short(reasons[0], more=len(reasons) - 1) if reasons else ""
        deleted = m["trained_on_deleted"]
        marker = (
            f"[trained on deleted samples: #{', #'.join(map(str, deleted))}] " if deleted else ""
        )
        typer.echo(
            f"{star} v{m['version']:<4} {m['status']:<9} parent {m['parent'] or '-':<4} "
            f"{m['strategy']:<7} windows {m['windows']} {marker}{gate}"
        )


@cli.command()
def drift(
    stream: StreamOption = DEFAULT_STREAM,
    json_out: JsonOption = False,
) -> None:
    """Drift verdicts per window: detector, statistic, p-value, per-group verdicts."""
    from service.queries.listings import list_drift

    rows = list_drift(_service(), stream)
    if json_out:
        _print_json(rows)
        return
    for r in rows:
        p = f"p={r['p_value']:.4g}" if r["p_value"] is not None else f"stat={r['statistic']:.3g}"
        groups = [g for g, v in r["per_group"].items() if v.get("is_drift")]
        typer.echo(
            f"window {r['window']:>3} {r['kind']:<9} {r['detector']:<6} {p:<14} "
            f"{r['verdict']}{' in ' + ','.join(groups) if groups else ''}"
        )


@cli.command()
def windows(
    stream: StreamOption = DEFAULT_STREAM,
    json_out: JsonOption = False,
) -> None:
    """Windows of a stream, oldest first, with what processing decided (as GET /v1/windows)."""
    from service.queries.listings import list_windows

    rows = list_windows(_service(), stream)
    if json_out:
        _print_json(rows)
        return
    for w in rows:
        champion = f"v{w['champion_version']}" if w["champion_version"] else "-"
        drifted = " drifted" if w["drifted"] else ""
        typer.echo(
            f"window {w['seq']:>3} {w['state']:<10} {w['size']:>5} samples {champion}{drifted}"
        )


@cli.command()
def promote(
    version: Annotated[int, typer.Argument(help="Version to make champion.")],
    stream: StreamOption = DEFAULT_STREAM,
    by: Annotated[str, typer.Option(help="Who decides.")] = "operator",
    reason: Annotated[str, typer.Option(help="Why.")] = "manual promotion",
) -> None:
    """Make a version the champion once its files match their digests (recorded with who
    and why), as POST /v1/models/{version}/promote does."""
    from service.models.promotion import promote as make_champion

    result = make_champion(_service(), stream, version, by=by, reason=reason)
    typer.echo(f"{stream}: champion v{version} (was v{result['previous']})")


@cli.command()
def rollback(
    stream: StreamOption = DEFAULT_STREAM,
    to: Annotated[
        int | None, typer.Option(help="Version to return to (default: the previous).")
    ] = None,
    by: Annotated[str, typer.Option(help="Who decides.")] = "operator",
    reason: Annotated[str, typer.Option(help="Why.")] = "manual rollback",
) -> None:
    """Give the champion back to the previous version (recorded with who and why), as
    POST /v1/models/rollback does."""
    from service.models.promotion import rollback as roll_back

    result = roll_back(_service(), stream, by=by, reason=reason, to=to)
    typer.echo(f"{stream}: champion v{result['champion']} (was v{result['previous']})")


@cli.command()
def export(
    version: Annotated[int, typer.Argument(help="Version to export.")],
    out: Annotated[Path, typer.Option(help="File (or folder) to write.")],
    stream: StreamOption = DEFAULT_STREAM,
    format: Annotated[str, typer.Option(help="safetensors, onnx or torchscript.")] = "onnx",
    json_out: JsonOption = False,
) -> None:
    """Write a version for production (its files checked first), as
    GET /v1/models/{version}/artifact does; the preprocessing goes in its metadata."""
    from service.models.export import export_version

    artifact = export_version(_service(), stream, version, format, out)
    if json_out:
        _print_json(artifact.to_dict())
        return
    typer.echo(f"{stream}: v{version} written as {format} to {artifact.path}")


REPORT_TWO_STREAMS = "report names two streams, {positional!r} and --stream {option!r}: give one"


@cli.command()
def report(
    ctx: typer.Context,
    positional: Annotated[
        str | None,
        typer.Argument(
            metavar="STREAM",
            show_default=False,
            help="Stream name (as --stream; kept for compatibility).",
        ),
    ] = None,
    stream: StreamOption = DEFAULT_STREAM,
    out: Annotated[
        Path | None,
        typer.Option(
            help="HTML file (or folder) to write; default learnstream-report-STREAM.html."
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the figures' data as one JSON line instead.")
    ] = False,
) -> None:
    """Write one stream's self-contained HTML report (drift, accuracy, gate, versions,
    alerts, incidents, Grad-CAM) and print its path; with --json print its data."""
    from service.dashboard.views import report_data, write_report

    if positional is not None:
        if ctx.get_parameter_source("stream") is not ParameterSource.DEFAULT and (
            positional != stream
        ):
            _fail(REPORT_TWO_STREAMS.format(positional=positional, option=stream))
        stream = positional
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    service = _service()
    try:
        if json_out:
            if out is not None:
                typer.echo(write_report(service, stream, out))
            typer.echo(json.dumps(report_data(service, stream), default=str))
            return
        typer.echo(write_report(service, stream, out))
    except OSError as exc:
        _fail(f"cannot write the report: {exc}")


@cli.command()
def api(
    host: Annotated[
        str, typer.Option(help="Address; beyond loopback needs LEARNSTREAM_OPERATOR_TOKEN.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
) -> None:
    """Serve the HTTP API (OpenAPI at /openapi.json, Prometheus at /metrics)."""
    from service.api.app import serve
    from workers.app import configure, queue_retrain, queue_windows

    settings = Settings()
    configure(settings)
    if settings.broker_url.startswith("memory://"):
        typer.echo(
            "warning: memory:// broker: windows closed through the API are processed only by "
            "a worker sharing a real broker",
            err=True,
        )

    serve(settings, host, port, on_windows_closed=queue_windows, on_retrain=queue_retrain)


def main() -> None:
    """Console-script entry point."""
    cli()


if __name__ == "__main__":
    main()
