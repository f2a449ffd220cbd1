"""Property-based checks of the API against its own OpenAPI document (schemathesis).

Every operation gets a few generated requests, with the operator token, against a
service that has a stream with a champion and an alert; no answer may be a 5xx, and
every answer must match its documented status codes, content types and schemas.
Bounded and seeded (derandomized, no example database) so it stays fast and repeatable.

The app is built without a service (it looks up this process's service per request,
installed by the fixture below), because schemathesis 4.32's fixture-based loader does
not work with pytest 9 and the eager one needs the app at import time.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis.configuration import set_hypothesis_home_dir  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from test_app import AUTH, TOKEN, good_samples, write_version  # noqa: E402

from service.api.app import create_app  # noqa: E402
from service.config import Settings  # noqa: E402
from service.context import Service, set_service  # noqa: E402
from service.ingest.samples import get_or_create_stream, ingest  # noqa: E402

# Hypothesis caches (even with database=None) go to the temp folder, not the checkout.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "learnstream-hypothesis")

APP = create_app()
schema = schemathesis.openapi.from_dict(APP.openapi())
schema.app = APP


@pytest.fixture(scope="module", autouse=True)
def seeded_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    home: Path = tmp_path_factory.mktemp("schema") / "home"
    service = Service.from_settings(
        Settings(home=home, operator_token=TOKEN, window_size=8, max_samples_per_call=8)
    )
    ingest(service.store, service.settings, "default", good_samples(3))
    ingest(service.store, service.settings, "default", [{"image": "%", "label": 1, "group": "A"}])
    stream = get_or_create_stream(service.store, "default", service.settings).stream
    version = write_version(service, "default", seed=1)
    service.registry.promote(stream.id, version, by="test", reason="seed")
    set_service(service)
    yield service
    set_service(None)


@schema.parametrize()
@settings(
    max_examples=4,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors_and_answers_match_the_schema(case: schemathesis.Case) -> None:
    case.call_and_validate(
        headers=AUTH,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
