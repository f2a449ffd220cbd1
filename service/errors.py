"""One exception hierarchy for the service; each error carries the HTTP status it maps to."""

from __future__ import annotations


class LearnstreamError(Exception):
    """Base of every error the service raises on purpose."""

    status_code = 500


class InvalidRequest(LearnstreamError):
    """A whole call could not be read (no ``samples``, wrong types, unknown arguments)."""

    status_code = 422


class InvalidSample(LearnstreamError):
    """One sample is bad; the message names the field and the problem."""

    status_code = 422


class StreamNotFound(LearnstreamError):
    """The stream does not exist and may not be created implicitly."""

    status_code = 404


class ModelNotFound(LearnstreamError):
    """No such model version, or no champion yet."""

    status_code = 404


class StoreUnavailable(LearnstreamError):
    """The database could not be reached; the caller should retry later."""

    status_code = 503


class ImageMissing(LearnstreamError):
    """A stored sample's pixels are not where its row says (a folder image store)."""

    status_code = 500


class Unauthorized(LearnstreamError):
    """A write needs the operator token."""

    status_code = 401


class AlertNotFound(LearnstreamError):
    """No alert with that id."""

    status_code = 404


class InsecureBind(LearnstreamError, ValueError):
    """The API would listen beyond loopback with no operator token configured."""


class SettingsInvalid(LearnstreamError, ValueError):
    """A setting from the environment is malformed; one line per bad variable and its form."""


class StartupCheckFailed(LearnstreamError):
    """A worker cannot serve: its store, broker or champion does not fit its settings."""
