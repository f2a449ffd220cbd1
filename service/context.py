"""The service context: settings, store and registry shared by one process's tasks and CLI."""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from service.config import Settings
from service.store.engine import Store

if TYPE_CHECKING:
    from service.alerts.webhook import WebhookSink
    from service.models.registry import LoadedVersion, Registry
    from service.store.schema import Stream


FileIdentity = tuple[int, int, int] | None


def file_identity(path: Path) -> FileIdentity:
    """Device, inode and modification time of ``path`` (``None`` when it is missing)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_mtime_ns


class Service:
    """Everything a task or a command needs; built once per process."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        # Loaded versions by (stream, version), each with the identity of its manifest file.
        self._versions: OrderedDict[tuple[str, int], tuple[FileIdentity, LoadedVersion]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()
        self.webhook: WebhookSink | None = None
        if settings.webhook_url:  # alerts also go, signed, to the operators' webhook
            from service.alerts.webhook import install_webhook

            self.webhook = install_webhook(settings, store)

    @classmethod
    def from_settings(cls, settings: Settings) -> Service:
        from service.store.images import image_store

        store = Store(settings.resolved_database_url, images=image_store(settings.image_store))
        store.create_schema()
        return cls(settings, store)

    @cached_property
    def registry(self) -> Registry:
        """The model registry; imported on first use so read-only commands skip torch."""
        from service.models.registry import Registry

        return Registry(self.store, self.settings.resolved_model_dir, self.settings.announce_url)

    def for_stream(self, stream: Stream) -> Service:
        """This service with the settings in force for ``stream`` (its own configuration over
        the global settings), sharing the store, the registry and the loaded versions."""
        from service.streams.configuration import settings_for

        in_force = settings_for(self.settings, stream)
        if in_force is self.settings:
            return self
        self.registry  # noqa: B018 - built once here, so the view shares it
        view = copy.copy(self)
        view.settings = in_force
        return view

    def version(self, stream: str, version: int) -> LoadedVersion:
        """A loaded model version, cached: a version never changes once written, but a stream
        deleted and recreated (by any process) writes a new one of the same number, so the
        cache holds only while the version's manifest file is the one it read."""
        key = (stream, version)
        identity = file_identity(self.registry.folder(stream, version) / "manifest.json")
        with self._lock:
            cached = self._versions.get(key)
            if cached is not None and cached[0] == identity:
                self._versions.move_to_end(key)
                return cached[1]
        from learners.devices import resolve_device

        loaded = self.registry.load(stream, version)
        loaded.model.to(resolve_device(self.settings.device))
        with self._lock:
            self._versions[key] = (identity, loaded)
            self._versions.move_to_end(key)
            while len(self._versions) > self.settings.max_loaded_versions:
                self._versions.popitem(last=False)
        return loaded

    def close(self) -> None:
        if self.webhook is not None:
            self.webhook.close()
        self.store.dispose()


_current: Service | None = None
_current_lock = threading.Lock()


def get_service() -> Service:
    """This process's service, built from the environment on first use."""
    global _current
    with _current_lock:
        if _current is None:
            _current = Service.from_settings(Settings())
        return _current


def set_service(service: Service | None) -> None:
    """Install (or clear) this process's service: the embedded runner and tests use it."""
    global _current
    with _current_lock:
        if _current is not None and _current is not service:
            _current.close()
        _current = service
