"""The operators' page (``GET /dashboard``) and the self-contained stream report, as HTML.

Both render ``service/dashboard/templates/`` (Jinja2, autoescaped) from one view of a stream:
:func:`service.dashboard_data.stream_data` for the numbers, :mod:`service.figures`
for the plots and thumbnails (PNG data URIs) and :mod:`service.explain` for Grad-CAM.
The live page adds acknowledge buttons: a few lines of JavaScript ask for the operator
token once, keep it in ``sessionStorage`` and call ``POST /v1/alerts/{id}/ack``. The
report is one file with every picture embedded and no script, link or external
resource, so it can be mailed or archived as it is.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, Template, select_autoescape

from service.context import Service
from service.dashboard import figures
from service.dashboard.data import (
    SampleImage,
    incident_samples,
    load_samples,
    stream_data,
    streams_overview,
)
from service.dashboard.explain import explanations
from service.errors import StreamNotFound
from service.quarantine.records import score_text

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
_environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class Rendered:
    """An HTML page and its HTTP status."""

    status: int
    html: str


def _template(name: str) -> Template:
    return _environment.get_template(name)


def stream_view(service: Service, stream: str) -> dict[str, Any]:
    """The data, figures, thumbnails and Grad-CAM explanations of one stream.

    Raises :class:`StreamNotFound` for an unknown stream.
    """
    started = time.perf_counter()
    data = stream_data(service, stream)
    incidents = []
    for incident in data["incidents"]:
        samples, source = incident_samples(service, stream, incident)
        incidents.append(
            {
                **incident,
                "source": source,
                "thumbnails": [
                    {
                        "uri": figures.thumbnail(s),
                        "title": f"{s.sample_id}: label {s.label}, group {s.group}, "
                        f"window {s.window}",
                    }
                    for s in samples
                ],
            }
        )
    explained = explanations(service, data)
    held = data["quarantine"]
    images = {
        s.sample_id: s
        for s in load_samples(service, stream, [q["sample"] for q in held["samples"]])
    }
    view = {
        "data": data,
        "incidents": incidents,
        "open_alerts": [a for a in data["alerts"] if not a["acknowledged"]],
        "acknowledged_alerts": [a for a in data["alerts"] if a["acknowledged"]],
        "quarantined": [_held_sample(q, images.get(q["sample"])) for q in held["samples"]],
        "summary": _summary(data),
        "figures": {
            "drift": figures.drift_timeline(data),
            "accuracy": figures.accuracy_timeline(data),
            "gate": figures.gate_differences(data),
        },
        "explanations": [{"explanation": e, "cells": figures.grad_cam_cells(e)} for e in explained],
    }
    log.info(
        "stream view rendered",
        extra={"stream": stream, "seconds": round(time.perf_counter() - started, 3)},
    )
    return view


def _held_sample(held: dict[str, Any], image: SampleImage | None) -> dict[str, Any]:
    """A held sample of the quarantine section: its record, thumbnail (None when its pixels
    are gone) and a one-line title."""
    score = score_text(held["score"])
    return {
        **held,
        "score_text": score,
        "uri": figures.thumbnail(image) if image is not None else None,
        "title": f"{held['sample']}: group {held['group']}, window {held['window']}, labelled "
        f"{held['given']}, believed {held['believed']} (score {score})",
    }


def _summary(data: dict[str, Any]) -> dict[str, Any]:
    processed = [w for w in data["windows"] if w["state"] == "processed"]
    last = processed[-1]["accuracy"] if processed else {}
    return {
        "champion": data["champion"],
        "windows": len(data["windows"]),
        "processed": len(processed),
        "drift_windows": [w["seq"] for w in data["windows"] if w["drifted"]],
        "promoted": [
            v["version"] for v in data["versions"] if v["status"] in ("champion", "retired")
        ],
        "rejected": [v["version"] for v in data["versions"] if v["status"] == "rejected"],
        "open_alerts": sum(not a["acknowledged"] for a in data["alerts"]),
        "last_accuracy": last,
    }


def render_stream(service: Service, stream: str, *, live: bool, root_path: str = "") -> str:
    """One stream's page: ``live`` for the dashboard (buttons, script), else the report."""
    view = stream_view(service, stream)
    streams = [s["stream"] for s in streams_overview(service)] if live else []
    return _template("stream.html").render(
        **view, live=live, root=root_path.rstrip("/"), streams=streams
    )


def render_index(service: Service, root_path: str = "") -> str:
    """The overview: every stream with its champion, windows and open alerts."""
    return _template("index.html").render(
        streams=streams_overview(service), root=root_path.rstrip("/")
    )


def dashboard(service: Service, stream: str | None, *, root_path: str = "") -> Rendered:
    """``GET /dashboard``: the overview, or one stream's page (404 page when unknown)."""
    if stream is None:
        return Rendered(200, render_index(service, root_path))
    try:
        return Rendered(200, render_stream(service, stream, live=True, root_path=root_path))
    except StreamNotFound as exc:
        html = _template("not_found.html").render(
            message=str(exc), streams=streams_overview(service), root=root_path.rstrip("/")
        )
        return Rendered(404, html)


def report_path(stream: str) -> Path:
    """Default file of ``learnstream report``: ``learnstream-report-<stream>.html`` here."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", stream).strip("._") or "stream"
    return Path(f"learnstream-report-{safe}.html")


def write_report(service: Service, stream: str, out: Path | None = None) -> Path:
    """Write one stream's self-contained HTML report; returns its path."""
    html = render_stream(service, stream, live=False)
    path = out if out is not None else report_path(stream)
    if path.is_dir():
        path = path / report_path(stream).name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path.resolve()


def report_data(service: Service, stream: str) -> dict[str, Any]:
    """What the report's figures show, as data: :func:`stream_data` plus Grad-CAM maps."""
    data = stream_data(service, stream)
    data["explanations"] = [e.to_dict() for e in explanations(service, data)]
    return data
