"""The store upgrades a database created by an earlier version (Alembic), on both backends."""

from __future__ import annotations

import base64

import torch
from helpers import digit_samples, make_settings
from sqlalchemy import text

from service.ingest.images import encode_png
from service.ingest.samples import content_digest, ingest
from service.queries.listings import status
from service.store.engine import MIGRATIONS, Store


def _head() -> str:
    """The newest revision of service/store/migrations."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def test_upgrade_from_the_first_schema_keeps_data_and_backfills(tmp_path, database_url) -> None:
    old = Store(database_url)
    old.create_schema("0001")  # the schema of the first release
    with old.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO streams (id, name, classes, channels, size, lock_version, created_at) "
                "VALUES (1, 's', :classes, 1, 28, 0, CURRENT_TIMESTAMP)"
            ),
            {"classes": '["0","1","2","3","4","5","6","7","8","9"]'},
        )
        conn.execute(
            text(
                "INSERT INTO windows (id, stream_id, seq, state, size, opened_at) "
                "VALUES (1, 1, 1, 'open', 3, CURRENT_TIMESTAMP)"
            )
        )
        for seq in (1, 2, 3):
            conn.execute(
                text(
                    "INSERT INTO samples (stream_id, sample_id, seq, label, group_name, split, "
                    "window_id, received_at, image_digest, pixels) VALUES "
                    "(1, :sid, :seq, 1, 'A', 'train', 1, CURRENT_TIMESTAMP, 'd', :px)"
                ),
                {"sid": f"old-{seq}", "seq": seq, "px": bytes(28 * 28)},
            )
    old.dispose()

    from service.context import Service

    service = Service.from_settings(make_settings(tmp_path, database_url))  # upgrades to head
    with service.store.engine.connect() as conn:
        assert conn.execute(text("SELECT sample_count FROM streams")).scalar() == 3
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == _head()
        assert conn.execute(text("SELECT count(*) FROM alert_deliveries")).scalar() == 0
    result = ingest(service.store, service.settings, "s", digit_samples(2))
    assert len(result.accepted) == 2
    with service.store.engine.connect() as conn:
        seqs = conn.execute(text("SELECT seq FROM samples ORDER BY seq")).scalars().all()
    assert seqs == [1, 2, 3, 4, 5]
    assert status(service)["streams"]["s"]["samples"] == 5
    service.close()


def test_upgrade_gives_old_samples_their_content_digest(tmp_path, database_url) -> None:
    old = Store(database_url)
    old.create_schema("0004")  # the schema before content digests
    with old.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO streams (id, name, classes, channels, size, lock_version, "
                "sample_count, created_at) VALUES (1, 's', :classes, 1, 28, 0, 2, "
                "CURRENT_TIMESTAMP)"
            ),
            {"classes": '["0","1","2","3","4","5","6","7","8","9"]'},
        )
        conn.execute(
            text(
                "INSERT INTO windows (id, stream_id, seq, state, size, opened_at) "
                "VALUES (1, 1, 1, 'open', 2, CURRENT_TIMESTAMP)"
            )
        )
        for seq, value in ((1, 0), (2, 200)):
            conn.execute(
                text(
                    "INSERT INTO samples (stream_id, sample_id, seq, label, group_name, split, "
                    "window_id, received_at, image_digest, pixels) VALUES "
                    "(1, :sid, :seq, 1, 'A', 'train', 1, CURRENT_TIMESTAMP, 'd', :px)"
                ),
                {"sid": f"old-{seq}", "seq": seq, "px": bytes([value]) * (28 * 28)},
            )
    old.dispose()

    from service.context import Service

    service = Service.from_settings(make_settings(tmp_path, database_url))
    with service.store.engine.connect() as conn:
        digests = conn.execute(text("SELECT content_digest FROM samples ORDER BY seq")).all()
    assert [d for (d,) in digests] == [
        content_digest("s", bytes([v]) * (28 * 28)) for v in (0, 200)
    ]
    black = base64.b64encode(encode_png(torch.zeros((1, 28, 28), dtype=torch.uint8))).decode()
    answer = ingest(
        service.store,
        service.settings,
        "s",
        [
            {"id": "new-1", "image": black, "label": 1, "group": "B"},
            {"id": "new-2", "image": black, "label": 2, "group": "B"},
        ],
    )
    assert answer.accepted == [] and answer.duplicates == ["new-1"]
    assert [(c["id"], c["stored_id"]) for c in answer.conflicts] == [("new-2", "old-1")]
    service.close()
