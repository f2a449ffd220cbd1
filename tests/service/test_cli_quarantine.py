"""`learnstream quarantine list|release|confirm` on a real SQLite store, with samples and a
window held by hand as the label screen and the gate would hold them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import CLASS_NAMES, held_stream, make_settings
from typer.testing import CliRunner

from service.cli import cli
from service.context import Service, set_service
from service.quarantine.records import list_quarantine

runner = CliRunner()
Rows = dict[int, list[tuple[int, str, int, str]]]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = Service.from_settings(make_settings(tmp_path, window_size=8, default_classes=CLASS_NAMES))
    set_service(svc)
    yield svc
    set_service(None)
    svc.close()


@pytest.fixture
def held(service: Service) -> Rows:
    """Stream ``s``: the first two samples of window 1 held, and window 2 as a whole."""
    return held_stream(service)


def _cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(cli, ["quarantine", *args])
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_list_as_text_and_json(service: Service, held: Rows) -> None:
    (_, first, label1, group1), (_, second, label2, group2) = held[1][:2]
    code, text = _cli("list", "--stream", "s")
    assert code == 0, text
    assert text.splitlines() == [
        "#3 window 2    held      whole window: candidate v2 rejected under label drift",
        f"#2 window 1    held      sample {second} (group {group2}) labelled "
        f"{CLASS_NAMES[label2]}, believed {CLASS_NAMES[(label2 + 1) % 10]} (score 0.020)",
        f"#1 window 1    held      sample {first} (group {group1}) labelled "
        f"{CLASS_NAMES[label1]}, believed {CLASS_NAMES[(label1 + 1) % 10]} (score 0.010)",
        "3 held record(s)",
    ]
    code, out = _cli("list", "--stream", "s", "--json")
    assert code == 0 and json.loads(out) == list_quarantine(service.store, "s")
    assert _cli("list", "--stream", "s", "--status", "released") == (0, "0 released record(s)\n")
    code, text = _cli("list", "--stream", "s", "--status", "all")
    assert code == 0 and text.splitlines()[-1] == "3 record(s)"


def test_release_and_confirm_record_who_and_why(service: Service, held: Rows) -> None:
    first, second = held[1][0][1], held[1][1][1]
    code, out = _cli("release", "--stream", "s", "--ids", f" {first}, ,", "--by", "alice",
                     "--note", "the label was right")  # fmt: skip
    assert (code, out) == (0, "released 1 sample(s) and 0 window(s) of stream 's'\n")
    code, out = _cli("confirm", "--stream", "s", "--windows", "2", "--by", "bob", "--json")
    assert code == 0 and json.loads(out) == {"confirmed": 1, "samples": [], "windows": [2]}

    (released,) = list_quarantine(service.store, "s", "released")
    assert (released["sample"], released["decided_by"]) == (first, "alice")
    assert released["note"] == "the label was right"
    (confirmed,) = list_quarantine(service.store, "s", "confirmed")
    assert (confirmed["window"], confirmed["decided_by"], confirmed["note"]) == (2, "bob", None)
    code, text = _cli("list", "--stream", "s", "--status", "all")
    assert "released by alice" in text and "confirmed by bob" in text

    code, out = _cli("confirm", "--stream", "s", "--all", "--by", "carol", "--json")
    assert code == 0 and json.loads(out) == {"confirmed": 1, "samples": [second], "windows": []}
    assert list_quarantine(service.store, "s") == []
    code, out = _cli("release", "--stream", "s", "--all", "--by", "carol")
    assert (code, out) == (0, "released 0 sample(s) and 0 window(s) of stream 's'\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["release", "--ids", "x"], "--by: say who decides (an operator's name)"),
        (["confirm", "--all", "--by", "  "], "--by: say who decides (an operator's name)"),
        (["release", "--by", "alice"],
         "name the samples (--ids) or windows (--windows) to decide on, or --all"),
        (["release", "--ids", " , ", "--by", "alice"],
         "name the samples (--ids) or windows (--windows) to decide on, or --all"),
        (["confirm", "--windows", "2,x", "--by", "alice"],
         "--windows: expected window numbers (1, 2, ...), got 'x'"),
        (["confirm", "--windows", "-1", "--by", "alice"],
         "--windows: expected window numbers (1, 2, ...), got '-1'"),
        (["release", "--all", "--by", "o" * 129], "by: at most 128 characters"),
        (["list", "--status", "pending"],
         "status: must be one of held, released, confirmed or all, got 'pending'"),
    ],
)  # fmt: skip
def test_mistakes_are_one_error_line_and_exit_1(
    service: Service, held: Rows, args: list[str], message: str
) -> None:
    code, out = _cli(*args, "--stream", "s")
    assert (code, out.strip()) == (1, f"error: {message}")
    assert len(list_quarantine(service.store, "s")) == 3  # nothing was decided


def test_an_unknown_stream_is_one_error_line(service: Service) -> None:
    assert _cli("list", "--stream", "nope") == (1, "error: unknown stream 'nope'\n")
    code, out = _cli("release", "--stream", "nope", "--all", "--by", "alice")
    assert (code, out) == (1, "error: unknown stream 'nope'\n")
