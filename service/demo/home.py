"""Where `learnstream run` plays: its own settings, and the marker that tells its streams apart.

The main job never shares a broker: it always runs on Celery's in-process ``memory://``
broker with an in-process worker, and announces and webhooks nothing. Its store is the
embedded default (SQLite and models in ``LEARNSTREAM_HOME``) while no production store or
broker is configured; when one is, it plays in ``.learnstream/`` of the current folder
instead, unless it is told to use the configured store. Every sample it sends carries
``{"source": "learnstream run"}`` in its meta, and it only ever deletes a stream whose
every sample does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from sqlalchemy import or_, select

from service.config import Settings, variable
from service.errors import LearnstreamError
from service.models.compatibility import champion_mismatches
from service.store.engine import Store
from service.store.schema import Sample, Stream

DEMO_SOURCE = "learnstream run"
DEMO_HOME = Path(".learnstream")
DEMO_CLASSES = [str(digit) for digit in range(10)]  # the demo's labels are the digits
# Settings that name a shared store or broker: any of them set means a production setup.
PRODUCTION_FIELDS = ("database_url", "model_dir", "broker_url", "result_backend", "redis_url")
# What the main job always runs with, whatever the environment says.
ALWAYS = {
    "broker_url": "memory://",
    "result_backend": "cache+memory://",
    "redis_url": None,
    "webhook_url": None,
    "webhook_secret": None,
    "default_classes": DEMO_CLASSES,
    "auto_create_streams": True,
}
HOME_OVERLAP = (
    "the demo's home {home} holds the configured store's {what}; run `learnstream run` "
    "from another folder"
)
Origin = Literal["absent", "demo", "empty", "other"]


class RunRefused(LearnstreamError):
    """`learnstream run` will not play where it could touch what it did not create."""


def production_fields(settings: Settings) -> list[str]:
    """The settings that point at a shared store or broker and differ from the defaults."""
    return [
        name
        for name in PRODUCTION_FIELDS
        if getattr(settings, name) not in (None, "", Settings.model_fields[name].default)
    ]


def _overlap(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def _same_database(demo_url: str, configured_url: str, home: Path) -> bool:
    """Whether the configured database is the demo's own, or a SQLite file in its home
    (relative and absolute SQLite paths compared as files)."""
    from sqlalchemy.engine import make_url

    demo, configured = make_url(demo_url), make_url(configured_url)
    if configured.get_backend_name() != "sqlite" or not configured.database:
        return demo_url == configured_url
    path = Path(configured.database).resolve()
    return path == Path(demo.database or "").resolve() or _overlap(home, path)


def demo_settings(settings: Settings, *, use_configured_store: bool = False) -> Settings:
    """The settings `learnstream run` plays on, from the configured ``settings``.

    Always the in-process broker, no announcements, no webhook, the digits as classes. The
    store is the configured one with ``use_configured_store``, else the embedded one in the
    configured home if nothing production is configured, else in ``.learnstream/``; that
    one must not hold the configured store's database or registry (:class:`RunRefused`).
    """
    overrides: dict[str, Any] = dict(ALWAYS)
    own_home = not use_configured_store and bool(production_fields(settings))
    if own_home:
        overrides |= {"home": DEMO_HOME, "database_url": None, "model_dir": None}
    demo = Settings(**(settings.model_dump() | overrides))
    if own_home:
        home = demo.home.resolve()
        if _same_database(demo.resolved_database_url, settings.resolved_database_url, home):
            raise RunRefused(HOME_OVERLAP.format(home=home, what="database"))
        if _overlap(demo.resolved_model_dir, settings.resolved_model_dir):
            raise RunRefused(HOME_OVERLAP.format(home=home, what="model registry"))
    return demo


def ignored_variables(configured: Settings, demo: Settings) -> list[str]:
    """The variables of settings whose configured value the main job does not use."""
    return [
        variable(name)
        for name in Settings.model_fields
        if getattr(configured, name) != getattr(demo, name)
    ]


def mark(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``samples`` with the demo's marker added to each one's meta."""
    return [dict(s, meta={**(s.get("meta") or {}), "source": DEMO_SOURCE}) for s in samples]


def stream_origin(store: Store, name: str) -> Origin:
    """Who made the stream ``name``: ``absent``, ``demo`` (every sample carries the marker),
    ``empty`` (no samples at all) or ``other``."""
    with store.session() as session:
        stream_id = session.scalar(select(Stream.id).where(Stream.name == name))
        if stream_id is None:
            return "absent"
        any_sample = session.scalar(select(Sample.id).where(Sample.stream_id == stream_id).limit(1))
        if any_sample is None:
            return "empty"
        source = Sample.meta["source"].as_string()
        foreign = session.scalar(
            select(Sample.id)
            .where(
                Sample.stream_id == stream_id,
                or_(Sample.meta.is_(None), source.is_(None), source != DEMO_SOURCE),
            )
            .limit(1)
        )
    return "demo" if foreign is None else "other"


def strategy_refusal(store: Store, settings: Settings, name: str) -> str | None:
    """The learner's one-line refusal when the configured strategy cannot continue the
    champion of the stream ``name`` (as ``check_champions``, for that stream only)."""
    for mismatch in champion_mismatches(store, settings):
        if mismatch.stream == name:
            return mismatch.message()
    return None
