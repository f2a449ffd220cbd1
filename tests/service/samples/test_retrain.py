"""--retrain: a candidate trained from scratch without the deleted samples, through the gate."""

from __future__ import annotations

import json

from trained_stream import STREAM, trained_sqlite_fixture  # noqa: F401 (fixtures)
from typer.testing import CliRunner

from service.cli import cli
from service.queries.listings import list_models
from workers.app import ROUTES

runner = CliRunner()


def test_retrain_gates_a_candidate_trained_without_the_deleted_samples(trained_sqlite) -> None:
    service = trained_sqlite
    before = {m["version"] for m in list_models(service, STREAM)}
    args = ["samples", "delete", "--stream", STREAM, "--group", "A", "--by", "ops"]
    result = runner.invoke(cli, [*args, "--reason", "group A withdrew", "--retrain", "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["versions_trained_on_them"] == [1, 2, 3]
    retrain = answer["retrain"]  # the in-process broker: run here, not queued
    candidate = retrain["candidate"]
    assert candidate not in before and retrain["deletion"] == answer["audit_id"]
    assert retrain["gate_passed"] in (True, False)
    assert (retrain["promoted"] or retrain["rejected"]) == candidate
    model = next(m for m in list_models(service, STREAM) if m["version"] == candidate)
    assert model["parent"] is None and model["trained_on_deleted"] == []
    assert model["gate_report"] is not None
    assert model["status"] == ("champion" if retrain["gate_passed"] else "rejected")
    buffer = service.version(STREAM, candidate).state.meta["buffer_groups"]
    assert buffer and "A" not in buffer


def test_retrain_runs_on_the_learners_queue() -> None:
    assert ROUTES["learnstream.retrain"] == {"queue": "learn"}
