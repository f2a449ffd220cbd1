"""Grad-CAM explanations: where the champion and a candidate look on the same images.

Grad-CAM (captum's ``LayerGradCam``) weighs the last convolution's activation maps by
the gradient of a class score and keeps the positive part: the regions that speak for
that class. Each map here explains the class the model predicts, and is scaled to
[0, 1] per image so maps of two models can be compared by shape.

Two kinds of subject get explained, chosen from :func:`service.dashboard_data.stream_data`:

- a *drift incident*: its shifted samples (or, for older alerts, samples of its window
  and group) under the champion that served the window and the candidate trained on it;
- a *group regression*: a rejected candidate whose gate report names a failed or worst
  group, on that group's held-out samples that the champion gets right and the candidate
  gets wrong (the regression itself), under both.

Models are read through the registry (safetensors, digests checked); each explanation
works on a private copy of a model, because captum hooks into the module it explains and
the cached champion may be serving predictions in another thread.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from captum.attr import LayerGradCam
from torch import nn

from learners.evaluation import predict
from learners.models import to_float
from service.context import Service
from service.dashboard.data import SampleImage, incident_samples, window_samples
from service.errors import LearnstreamError

log = logging.getLogger(__name__)

SAMPLES_PER_EXPLANATION = 4
MAX_INCIDENTS = 2
MAX_REGRESSIONS = 2


@dataclass(frozen=True)
class ExplainedSample:
    """One image with each model's predicted class and Grad-CAM map (``(h, w)`` in [0, 1])."""

    image: SampleImage
    predictions: dict[str, str]
    maps: dict[str, np.ndarray]


@dataclass(frozen=True)
class Explanation:
    """Grad-CAM maps of a few samples under the models named in ``models`` (role -> version)."""

    kind: str  # "incident", "regression", or "unavailable" (no maps: ``note`` says why)
    title: str
    note: str
    models: dict[str, int]
    samples: list[ExplainedSample] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: maps at the layer's resolution, rounded to three decimals."""
        return {
            "kind": self.kind,
            "title": self.title,
            "note": self.note,
            "models": dict(self.models),
            "samples": [
                {
                    "sample_id": s.image.sample_id,
                    "label": s.image.label,
                    "group": s.image.group,
                    "window": s.image.window,
                    "predictions": dict(s.predictions),
                    "maps": {role: np.round(m, 3).tolist() for role, m in s.maps.items()},
                }
                for s in self.samples
            ],
        }


NO_CONVOLUTION = (
    "Grad-CAM maps a model's evidence at its last 2-D convolution, and {arch} has none "
    "(a transformer or an MLP, say), so this page draws no maps for this stream"
)


class NoConvolution(ValueError):
    """The model has no 2-D convolution for Grad-CAM to look at."""


def last_conv(model: nn.Module) -> nn.Conv2d:
    """The model's last 2-D convolution: Grad-CAM's layer (coarse, but still spatial)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        arch = getattr(model, "arch", {}).get("name", "this model")
        raise NoConvolution(NO_CONVOLUTION.format(arch=arch))
    return convs[-1]


def _unavailable(service: Service, data: dict[str, Any]) -> Explanation | None:
    """What the page says instead of maps when the champion has no convolution."""
    if data.get("champion") is None:
        return None
    try:
        last_conv(service.version(data["stream"], data["champion"]).model)
    except NoConvolution as exc:
        return Explanation(kind="unavailable", title="No Grad-CAM maps", note=str(exc), models={})
    return None


def grad_cam(model: nn.Module, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Predicted classes ``(N,)`` and Grad-CAM maps ``(N, h, w)`` of float images ``(N, C, H, W)``.

    Works on a copy of ``model``; each map is divided by its maximum (an all-zero map,
    where no region speaks for the class, stays zero).
    """
    private = copy.deepcopy(model).eval()
    images = images.to(next(private.parameters()).device)
    with torch.no_grad():
        predicted = private(images).argmax(dim=1)
    cam = LayerGradCam(private, last_conv(private))
    with torch.enable_grad():
        maps = cam.attribute(images, target=predicted, relu_attributions=True)
    maps_np = maps.detach().squeeze(1).cpu().numpy().astype(np.float64)
    peak = maps_np.reshape(len(maps_np), -1).max(axis=1)
    scaled = np.where(peak[:, None, None] > 0, maps_np / np.maximum(peak, 1e-12)[:, None, None], 0)
    return predicted.cpu().numpy(), scaled


def explain_samples(
    service: Service,
    stream: str,
    classes: list[str],
    samples: list[SampleImage],
    models: dict[str, int],
) -> list[ExplainedSample]:
    """Each model's prediction and Grad-CAM map on each sample."""
    if not samples:
        return []
    x = to_float(torch.from_numpy(np.stack([s.pixels for s in samples])))
    predictions: dict[str, np.ndarray] = {}
    maps: dict[str, np.ndarray] = {}
    for role, version in models.items():
        predictions[role], maps[role] = grad_cam(service.version(stream, version).model, x)
    return [
        ExplainedSample(
            image=s,
            predictions={role: _name(classes, int(predictions[role][i])) for role in models},
            maps={role: maps[role][i] for role in models},
        )
        for i, s in enumerate(samples)
    ]


def _name(classes: list[str], index: int) -> str:
    return classes[index] if 0 <= index < len(classes) else str(index)


def _window(data: dict[str, Any], seq: int) -> dict[str, Any] | None:
    return next((w for w in data["windows"] if w["seq"] == seq), None)


def _incident(service: Service, data: dict[str, Any], incident: dict[str, Any]) -> Explanation:
    window = _window(data, incident["windows"][0]) if incident["windows"] else None
    models: dict[str, int] = {}
    if window is not None and window["champion"] is not None:
        models["champion"] = window["champion"]
    if window is not None and window["candidate"] is not None:
        models["candidate"] = window["candidate"]
    samples, source = incident_samples(service, data["stream"], incident)
    samples = samples[:SAMPLES_PER_EXPLANATION]
    windows = ", ".join(str(w) for w in incident["windows"]) or "?"
    chosen = (
        "the most shifted samples the alert names"
        if source == "shifted"
        else "samples of the window and group (the alert names no shifted samples)"
    )
    return Explanation(
        kind="incident",
        title=f"{incident['title']}, window(s) {windows} (alert #{incident['alert']})",
        note=f"{chosen}, under the champion that served the window and the candidate trained on it",
        models=models,
        samples=explain_samples(service, data["stream"], data["classes"], samples, models),
    )


def _regression_samples(
    service: Service, data: dict[str, Any], version: dict[str, Any], group: str
) -> list[SampleImage]:
    """Held-out samples of ``group`` up to the rejection window, newest windows first,
    those the champion gets right and the candidate wrong first."""
    last = max(version["windows"])
    seqs = [w["seq"] for w in data["windows"] if w["seq"] <= last]
    pool = window_samples(service, data["stream"], seqs, group=group, split="holdout", limit=None)
    if not pool:
        return []
    pool = sorted(pool, key=lambda s: -s.window)
    x = to_float(torch.from_numpy(np.stack([s.pixels for s in pool])))
    champion_pred, _ = predict(service.version(data["stream"], version["parent"]).model, x)
    candidate_pred, _ = predict(service.version(data["stream"], version["version"]).model, x)
    labels = np.array([s.label_index for s in pool])
    regressed = (champion_pred.numpy() == labels) & (candidate_pred.numpy() != labels)
    order = np.argsort(~regressed, kind="stable")
    return [pool[i] for i in order[:SAMPLES_PER_EXPLANATION]]


def _regression(service: Service, data: dict[str, Any], version: dict[str, Any]) -> Explanation:
    gate = version["gate"]
    failed = [c["subject"] for c in gate["groups"] if c["verdict"] == "fail"]
    group = failed[0] if failed else gate.get("worst_group")
    models = {"champion": version["parent"], "candidate": version["version"]}
    samples = _regression_samples(service, data, version, group)
    return Explanation(
        kind="regression",
        title=f"v{version['version']} rejected: group {group} (v{version['parent']} kept serving)",
        note=f"held-out samples of group {group} that v{version['parent']} classifies right and "
        f"v{version['version']} wrong come first, newest windows first",
        models=models,
        samples=explain_samples(service, data["stream"], data["classes"], samples, models),
    )


def explanations(service: Service, data: dict[str, Any]) -> list[Explanation]:
    """Grad-CAM explanations of the newest drift incidents and rejected candidates.

    At most ``MAX_INCIDENTS`` incidents (one per drift kind, newest first) and
    ``MAX_REGRESSIONS`` rejected candidates with a gate report naming a group. A subject
    whose models cannot be read is skipped with a warning: the page still renders.
    """
    subjects: list[tuple[str, Any]] = []
    kinds: set[str] = set()
    for incident in data["incidents"]:
        if len(kinds) >= MAX_INCIDENTS or incident["kind"] in kinds or not incident["windows"]:
            continue
        kinds.add(incident["kind"])
        subjects.append(("incident", incident))
    rejected = [
        v
        for v in reversed(data["versions"])
        if v["status"] == "rejected"
        and v["parent"] is not None
        and v["windows"]
        and v["gate"]
        and v["gate"]["kind"] == "gate"
        and (any(c["verdict"] == "fail" for c in v["gate"]["groups"]) or v["gate"]["worst_group"])
    ]
    subjects += [("regression", v) for v in rejected[:MAX_REGRESSIONS]]
    if subjects:
        unavailable = _unavailable(service, data)
        if unavailable is not None:
            return [unavailable]
    out = []
    for kind, subject in subjects:
        try:
            if kind == "incident":
                out.append(_incident(service, data, subject))
            else:
                out.append(_regression(service, data, subject))
        except (LearnstreamError, OSError, ValueError) as exc:
            log.warning("no Grad-CAM for a %s of %s: %s", kind, data["stream"], exc)
    return out
