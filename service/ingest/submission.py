"""Submitting a folder of images as a producer would (``learnstream submit``).

Samples carry no ``id``: ingest then names each by a digest of its stream, bytes, label and
group, so a file renamed or resent is a duplicate and a new image under an old name is new.
Files go out in a seeded random order (or the CSV's order when a CSV labels them), so that
a window mixes classes as production traffic does rather than holding one class after
another. Images are read one call at a time; the answers fold into one :class:`Submission`.
"""

from __future__ import annotations

import base64
import csv
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.errors import InvalidRequest
from service.ingest.rejections import reason_summary

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".npy"})
CSV_COLUMNS = ("file", "label")


@dataclass(frozen=True)
class SubmittedFile:
    """One image file to send: its path relative to the folder, its label and group."""

    path: str
    label: str
    group: str


@dataclass
class FolderPlan:
    """What a folder holds for one submit: the files in sending order, and what is left out."""

    files: list[SubmittedFile]
    missing: list[str] = field(default_factory=list)  # CSV rows naming no file
    unlabelled: int = 0  # images in the folder that the CSV does not name


@dataclass
class Submission:
    """The folded answers of a submit's ingest calls (the CLI's ``--json`` document)."""

    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    # Images the stream holds under another label: {file, stored_id, stored_label, label}
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    created: dict[str, Any] | None = None

    @property
    def failed(self) -> bool:
        """Whether anything was refused: the submit then exits non-zero."""
        return bool(self.rejected or self.conflicts)

    def by_reason(self) -> dict[str, list[str]]:
        """Rejected files grouped by reason (its parenthesised detail left out), most first."""
        groups: dict[str, list[str]] = {}
        for r in self.rejected:
            groups.setdefault(reason_summary(r["reason"]), []).append(r["file"])
        return dict(sorted(groups.items(), key=lambda item: -len(item[1])))

    def to_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "rejected_by_reason": {k: len(v) for k, v in self.by_reason().items()},
            "conflicts": self.conflicts,
            "created": self.created,
        }


def _csv_rows(labels_csv: Path, group: str) -> list[SubmittedFile]:
    with labels_csv.open(newline="", encoding="utf-8-sig") as handle:  # Excel writes a BOM
        reader = csv.DictReader(handle)
        absent = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if absent:
            raise InvalidRequest(
                f"{labels_csv}: no column {absent[0]!r}; the CSV needs a header file,label[,group]"
            )
        return [
            SubmittedFile(row["file"], row["label"], row.get("group") or group) for row in reader
        ]


def plan_folder(folder: Path, labels_csv: Path | None, group: str, seed: int) -> FolderPlan:
    """The files of ``folder`` to send, labelled by ``labels_csv`` (``file,label[,group]``,
    sent in its order) or by their subfolder's name (sent in an order shuffled by ``seed``)."""
    images = sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if labels_csv is None:
        files = [SubmittedFile(path, Path(path).parent.name, group) for path in images]
        files = [f for f in files if f.label]  # images at the top level have no label
        random.Random(seed).shuffle(files)
        return FolderPlan(files=files, unlabelled=len(images) - len(files))
    rows = _csv_rows(labels_csv, group)
    present = set(images)
    named = {row.path for row in rows}
    return FolderPlan(
        files=[row for row in rows if row.path in present],
        missing=[row.path for row in rows if row.path not in present],
        unlabelled=len(present - named),
    )


def read_samples(folder: Path, files: list[SubmittedFile]) -> list[dict[str, Any]]:
    """The ingest samples of ``files``: base64 bytes, label and group, no id."""
    return [
        {
            "image": base64.b64encode((folder / f.path).read_bytes()).decode(),
            "label": f.label,
            "group": f.group,
        }
        for f in files
    ]


Call = tuple[list[str], list[dict[str, Any]]]  # one ingest call: its samples' names, samples


def folder_calls(folder: Path, plan: FolderPlan, batch: int) -> Iterator[Call]:
    """``plan``'s files as ingest calls of at most ``batch``, each read only when due."""
    for start in range(0, len(plan.files), batch):
        files = plan.files[start : start + batch]
        yield [f.path for f in files], read_samples(folder, files)


def fold_answer(submission: Submission, names: list[str], answer: dict[str, Any]) -> None:
    """Add one ingest answer for the samples ``names`` (in the order sent) to ``submission``."""
    submission.sent += len(names)
    submission.accepted += len(answer.get("accepted", []))
    submission.duplicates += len(answer.get("duplicates", []))
    submission.created = submission.created or answer.get("created")
    submission.rejected += [
        {"file": names[r["index"]], "reason": r["reason"]} for r in answer.get("rejected", [])
    ]
    submission.conflicts += [
        {
            "file": names[c["index"]],
            "stored_id": c["stored_id"],
            "stored_label": c["stored_label"],
            "label": c["label"],
        }
        for c in answer.get("conflicts", [])
    ]


def submit_calls(
    calls: Iterable[Call],
    send: Callable[[list[dict[str, Any]]], dict[str, Any]],
    missing: Iterable[str] = (),
    on_call: Callable[[Submission], None] = lambda _: None,
) -> Submission:
    """Send each call through ``send`` and fold the answers; ``missing`` files (CSV rows
    naming no file) count as rejected."""
    submission = Submission(
        rejected=[{"file": path, "reason": "file: not found in the folder"} for path in missing]
    )
    for names, samples in calls:
        fold_answer(submission, names, send(samples))
        on_call(submission)
    return submission
