"""Deleting samples with lineage: the store, every stored buffer, the versions that saw them."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from helpers import digit_samples, make_settings
from sqlalchemy import select, update
from trained_stream import STREAM, send_window, trained_fixture, trained_sqlite_fixture  # noqa: F401 (fixtures)
from typer.testing import CliRunner

from service.api.app import create_app
from service.cli import cli
from service.context import Service, set_service
from service.errors import InvalidRequest
from service.ingest.samples import ingest
from service.models.promotion import load_checked
from service.queries.listings import list_models
from service.samples.deletion import (
    BAD_BEFORE,
    NO_BY,
    NO_CRITERIA,
    NO_REASON,
    criteria_of,
    delete_samples,
    list_deletions,
)
from service.store.schema import ModelVersion, Sample, utcnow

runner = CliRunner()


def _stored(service, sample_ids) -> set[str]:  # type: ignore[no-untyped-def]
    with service.store.session() as session:
        rows = session.scalars(select(Sample.sample_id).where(Sample.sample_id.in_(sample_ids)))
        return set(rows)


def _buffers(service) -> dict[int, set[str]]:  # type: ignore[no-untyped-def]
    """Each version's buffer ids, from its manifest on disk."""
    found = {}
    for model in list_models(service, STREAM):
        folder = service.registry.folder(STREAM, model["version"])
        manifest = json.loads((folder / "manifest.json").read_text())
        found[model["version"]] = set(manifest["state"]["buffer_ids"])
    return found


def _sha(path) -> str:  # type: ignore[no-untyped-def]
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_deletion_removes_the_sample_from_the_store_and_the_champions_buffer(trained) -> None:
    service = trained
    models = {m["version"]: m for m in list_models(service, STREAM)}
    assert [(v, m["parent"], m["windows"]) for v, m in models.items()] == [
        (1, None, [1]),
        (2, 1, [2]),
        (3, 2, [3]),
    ]
    champion = next(v for v, m in models.items() if m["champion"])
    cached = service.version(STREAM, champion)  # this process has the champion in memory
    held = list(cached.state.meta["buffer_ids"])
    target = next(sid for sid in held if sid.startswith("w1-"))
    weights = service.registry.folder(STREAM, champion) / "model.safetensors"
    weights_digest = _sha(weights)

    result = delete_samples(
        service, STREAM, criteria_of(ids=[target]), by="dpo", reason="erasure request 17"
    )

    # Window 1 trained version 1, which every later version descends from.
    assert result.to_dict() == {
        "deleted": 1,
        "versions_trained_on_them": [1, 2, 3],
        "audit_id": result.audit_id,
    }
    assert _stored(service, [target]) == set()
    assert all(target not in ids for ids in _buffers(service).values())
    # The cached champion is not reused: the rewritten manifest is a new file.
    reloaded = service.version(STREAM, champion)
    assert reloaded is not cached
    assert target not in reloaded.state.meta["buffer_ids"]
    assert reloaded.state.meta["buffer_ids"] == [sid for sid in held if sid != target]
    # Same weights, a new audited state whose digests the store knows: promotion checks pass.
    assert _sha(weights) == weights_digest
    assert champion in result.purged_versions
    assert reloaded.manifest["purged"][-1]["deletion"] == result.audit_id
    assert (
        load_checked(service, STREAM, champion).manifest["digests"] == reloaded.manifest["digests"]
    )
    marked = {m["version"]: m["trained_on_deleted"] for m in list_models(service, STREAM)}
    assert marked == {1: [result.audit_id], 2: [result.audit_id], 3: [result.audit_id]}
    (record,) = list_deletions(service, STREAM)
    assert (record["by"], record["reason"], record["deleted"], record["status"]) == (
        "dpo",
        "erasure request 17",
        1,
        "done",
    )
    assert record["criteria"] == {"ids": [target]} and record["versions"] == [1, 2, 3]

    # The learner goes on from the purged state; the deleted sample never comes back.
    send_window(service, 4)
    versions = _buffers(service)
    assert 4 in versions and all(target not in ids for ids in versions.values())


def test_lineage_names_only_the_versions_that_saw_the_samples(trained_sqlite) -> None:
    service = trained_sqlite
    buffered = set().union(*_buffers(service).values())
    with service.store.session() as session:
        rows = session.execute(
            select(Sample.sample_id, Sample.split).where(Sample.sample_id.like("w3-%"))
        ).all()
    trained_only = next(sid for sid, split in rows if split == "train" and sid not in buffered)
    held_out = next(sid for sid, split in rows if split == "holdout")

    result = delete_samples(
        service, STREAM, criteria_of(ids=[trained_only, held_out]), by="ops", reason="test"
    )

    # Window 3 trained version 3 only; a held-out sample trains no version.
    assert (result.deleted, result.versions_trained_on_them) == (2, [3])
    assert result.purged_versions == []
    alone = delete_samples(service, STREAM, criteria_of(group="nobody"), by="ops", reason="t")
    assert alone.to_dict() == {
        "deleted": 0,
        "versions_trained_on_them": [],
        "audit_id": alone.audit_id,
    }


def test_criteria_select_by_meta_group_and_time(sqlite_service) -> None:
    service = sqlite_service
    samples = digit_samples(20, prefix="m")
    for i, sample in enumerate(samples):
        sample["meta"] = {"writer": f"w{i % 4}", "n": i % 2}
    ingest(service.store, service.settings, STREAM, samples)
    with service.store.session() as session:  # the first five arrived two days ago
        session.execute(
            update(Sample)
            .where(Sample.sample_id.in_([s["id"] for s in samples[:5]]))
            .values(received_at=utcnow() - timedelta(days=2))
        )

    def delete(**criteria):  # type: ignore[no-untyped-def]
        return delete_samples(service, STREAM, criteria_of(**criteria), by="t", reason="t").deleted

    assert delete(meta={"writer": "w1", "n": "1"}) == 5  # the CLI's text matches the int
    assert delete(meta={"writer": "w1"}) == 0
    before = (utcnow() - timedelta(days=1)).isoformat()
    assert delete(before=before, group="A") == 3  # samples 0, 2 and 4 (1 went, 3 is B's)
    assert delete(before="2000-01-01") == 0
    assert len(_stored(service, [s["id"] for s in samples])) == 20 - 5 - 3


def test_mistakes_are_one_clear_line(sqlite_service) -> None:
    ingest(sqlite_service.store, sqlite_service.settings, STREAM, digit_samples(4))
    with pytest.raises(InvalidRequest) as info:
        criteria_of()
    assert str(info.value) == NO_CRITERIA
    with pytest.raises(InvalidRequest) as info:
        criteria_of(before="yesterday")
    assert str(info.value) == BAD_BEFORE.format(text="yesterday")
    for by, reason, message in (("", "why", NO_BY), ("me", " ", NO_REASON)):
        with pytest.raises(InvalidRequest) as info:
            delete_samples(sqlite_service, STREAM, criteria_of(group="A"), by=by, reason=reason)
        assert str(info.value) == message

    result = runner.invoke(cli, ["samples", "delete", "--stream", STREAM, "--group", "A"])
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {NO_BY}"
    result = runner.invoke(
        cli, ["samples", "delete", "--stream", STREAM, "--before", "soon", "--by", "a"]
    )
    assert (result.exit_code, result.output.strip()) == (
        1,
        f"error: {BAD_BEFORE.format(text='soon')}",
    )


@pytest.fixture
def token_service(tmp_path):  # type: ignore[no-untyped-def]
    service = Service.from_settings(make_settings(tmp_path, operator_token="op-token"))
    set_service(service)
    yield service
    set_service(None)


def test_the_cli_and_the_api_delete_through_the_same_path(token_service) -> None:
    service = token_service
    samples = digit_samples(6, prefix="c")
    ingest(service.store, service.settings, STREAM, samples)
    ids = f"{samples[0]['id']},{samples[1]['id']}"
    args = ["samples", "delete", "--stream", STREAM, "--ids", ids, "--by", "ops"]
    result = runner.invoke(cli, [*args, "--reason", "cli test", "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer == {"deleted": 2, "versions_trained_on_them": [], "audit_id": answer["audit_id"]}

    body = {"stream": STREAM, "ids": [samples[2]["id"]], "by": "api", "reason": "api test"}
    with TestClient(create_app(service)) as client:
        refused = client.request("DELETE", "/v1/samples", json=body)
        assert refused.status_code == 401
        done = client.request(
            "DELETE", "/v1/samples", json=body, headers={"Authorization": "Bearer op-token"}
        )
        assert done.status_code == 200, done.text
        assert done.json()["deleted"] == 1 and done.json()["versions_trained_on_them"] == []
        no_reason = client.request(
            "DELETE",
            "/v1/samples",
            json={"stream": STREAM, "group": "A", "by": "api"},
            headers={"Authorization": "Bearer op-token"},
        )
        assert no_reason.status_code == 422
    assert [d["by"] for d in list_deletions(service, STREAM)] == ["api", "ops"]
    assert len(_stored(service, [s["id"] for s in samples])) == 3


def test_a_state_changed_on_disk_stops_the_deletion_before_it_deletes(trained_sqlite) -> None:
    service = trained_sqlite
    champion = next(m["version"] for m in list_models(service, STREAM) if m["champion"])
    held = service.version(STREAM, champion).state.meta["buffer_ids"]
    with service.store.session() as session:
        session.execute(
            update(ModelVersion)
            .where(ModelVersion.version == champion)
            .values(digests={"model.safetensors": "x", "state.safetensors": "y"})
        )
    from service.samples.deletion import DeletionRefused

    with pytest.raises(DeletionRefused):
        delete_samples(service, STREAM, criteria_of(ids=[held[0]]), by="t", reason="t")
    assert _stored(service, [held[0]]) == {held[0]}
    assert list_deletions(service, STREAM) == []


def test_deleting_ids_deletes_their_traffic_and_a_stream_takes_its_traffic(service) -> None:
    from helpers import seeded_champion

    from service.models.serving import predict_images
    from service.store.removal import delete_stream
    from service.store.schema import Traffic, TrafficWindow

    def traffic() -> list[str]:
        with service.store.session() as session:
            return sorted(session.scalars(select(Traffic.traffic_id)))

    seeded_champion(service, "s")
    samples = digit_samples(4, seed=7, prefix="person")
    ids = [s["id"] for s in samples]
    predict_images(service, "s", [s["image"] for s in samples], ids=ids)
    ingest(service.store, service.settings, "s", samples[:2])  # two were labelled later
    by_group = delete_samples(
        service, "s", criteria_of(group=samples[0]["group"]), by="dpo", reason="erasure"
    )
    assert by_group.deleted == 1 and by_group.traffic == 1  # the labelled sample's prediction
    assert traffic() == sorted(ids[1:])
    # A person's predicted image that was never labelled goes by its id all the same.
    done = delete_samples(service, "s", criteria_of(ids=ids[1:3]), by="dpo", reason="erasure")
    assert done.deleted == 1 and done.traffic == 2
    assert traffic() == [ids[3]]
    assert _stored(service, ids) == set()
    assert delete_stream(service.store, service.settings.resolved_model_dir, "s")
    with service.store.session() as session:
        assert session.scalars(select(TrafficWindow)).all() == []
    assert traffic() == []
