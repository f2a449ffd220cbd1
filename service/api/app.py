"""The HTTP API (FastAPI): the public contract of DESIGN.md over HTTP, plus ``/metrics``.

``create_app`` builds the application from its dependencies: a :class:`Service` (or,
when none is given, this process's :func:`get_service`, looked up per request) and
``on_windows_closed``, called with the ids of the windows an ingest call closed so
that the caller decides how they are processed (the CLI queues Celery's
``learnstream.process_window``; the default leaves them closed).

Every error answers ``{"error": "<kind>", "detail": "<message>"}`` with the status of
its :class:`LearnstreamError` (validation errors add ``errors``). Writes that change a
model or an alert need ``Authorization: Bearer <operator token>``; with no token
configured they are refused. Request bodies larger than ``max_samples_per_call``
encoded images (plus 1 KiB of JSON each) are refused with 413 before they are read.
"""

import hmac
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from importlib import import_module
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import DataError, OperationalError, SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.alerts.records import acknowledge_alert
from service.api.schemas import (
    AckRequest,
    AlertOut,
    ChampionChange,
    DeleteSamplesRequest,
    DeletionResponse,
    DriftOut,
    ErrorBody,
    Health,
    IngestResponse,
    ModelOut,
    PredictRequest,
    PredictResponse,
    PromoteRequest,
    QuarantineDecided,
    QuarantineDecision,
    QuarantineOut,
    RollbackRequest,
    SamplesRequest,
    StatusResponse,
    StreamCreate,
    StreamPatch,
    WindowOut,
)
from service.config import Settings
from service.context import Service, get_service
from service.errors import (
    InsecureBind,
    LearnstreamError,
    ModelNotFound,
    StoreUnavailable,
    Unauthorized,
)
from service.ingest.rejections import record_unreadable_call
from service.queries.listings import list_alerts, list_drift, list_models, list_windows, status
from service.queries.metrics import metrics_registry
from service.store.schema import MAX_INT
from service.streams.catalog import describe_stream, list_streams

log = logging.getLogger(__name__)

SAMPLES_PATH = "/v1/samples"

OnWindowsClosed = Callable[[str, list[int]], None]
OnRetrain = Callable[[str, int], str]


# ---------------------------------------------------------------------------------------------
# Errors


def error_kind(exc: Exception) -> str:
    """``StreamNotFound`` -> ``stream_not_found``: the ``error`` field of an error body."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


def error_response(
    status_code: int,
    kind: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"error": kind, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status_code, headers=headers)


_STATUS_KINDS = {413: "content_too_large", 422: "invalid_request"}


def _status_kind(status_code: int) -> str:
    if status_code in _STATUS_KINDS:
        return _STATUS_KINDS[status_code]
    try:
        return HTTPStatus(status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


async def _learnstream_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LearnstreamError)
    headers = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, StoreUnavailable):
        headers["Retry-After"] = "5"
    if exc.status_code >= 500:
        log.error("%s %s: %s", request.method, request.url.path, exc)
    return error_response(exc.status_code, error_kind(exc), str(exc), headers=headers)


def _db_reason(exc: Exception) -> str:
    """The driver's message without the statement and its parameters (images, meta)."""
    return str(getattr(exc, "orig", None) or exc).splitlines()[0]


async def _store_busy(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s: store error: %s", request.method, request.url.path, _db_reason(exc))
    return error_response(
        503,
        "store_unavailable",
        "the store could not serve this request now (busy or unreachable); retry later",
        headers={"Retry-After": "5"},
    )


async def _store_refused_value(request: Request, exc: Exception) -> JSONResponse:
    log.warning(
        "%s %s: store refused a value: %s", request.method, request.url.path, _db_reason(exc)
    )
    return error_response(
        422,
        "invalid_request",
        "the store refused a value of this request (out of range or not storable text)",
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    cause = exc.__cause__
    if exc.status_code == 400 and cause is not None:
        # FastAPI's "error parsing the body": bytes that are not UTF-8, JSON nested too deeply.
        reason = "not UTF-8" if isinstance(cause, UnicodeDecodeError) else type(cause).__name__
        if isinstance(cause, RecursionError):
            reason = "nested too deeply"
        message = f"not valid JSON ({reason})"
        if request.url.path == SAMPLES_PATH and request.method == "POST":
            await _record_unreadable_call(request, None, f"body: {message}")
        return error_response(
            422,
            "invalid_request",
            f"body: {message}",
            errors=[{"loc": ["body"], "msg": message, "type": "json_invalid"}],
        )
    return error_response(
        exc.status_code,
        _status_kind(exc.status_code),
        str(exc.detail),
        headers=dict(exc.headers) if exc.headers else None,
    )


def describe_validation_errors(
    errors: Iterable[Any], *, json_body_expected: bool = True
) -> tuple[str, list[dict[str, Any]]]:
    """A one-line summary and a JSON-safe list of pydantic/FastAPI validation errors."""
    items = []
    for error in errors:
        loc = [p if isinstance(p, int) else str(p) for p in error.get("loc", ())]
        kind = str(error.get("type", "value_error"))
        message = str(error.get("msg", "invalid"))
        if kind == "json_invalid":
            reason = (error.get("ctx") or {}).get("error")
            message = f"not valid JSON ({reason})" if reason else "not valid JSON"
            loc = loc[:1]
        elif loc == ["body"] and not json_body_expected:
            message = "expected a JSON body with Content-Type: application/json"
        items.append({"loc": loc, "msg": message, "type": kind})
    shown = [f"{'.'.join(str(p) for p in i['loc']) or 'request'}: {i['msg']}" for i in items[:10]]
    if len(items) > 10:
        shown.append(f"and {len(items) - 10} more")
    return "; ".join(shown) or "invalid request", items[:100]


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    content_type = request.headers.get("content-type", "")
    detail, items = describe_validation_errors(
        exc.errors(), json_body_expected="json" in content_type.lower()
    )
    if request.url.path == SAMPLES_PATH and request.method == "POST":
        # Like the ingest task: a whole call that cannot be read is rejected and recorded.
        body = getattr(exc, "body", None)
        stream = body.get("stream") if isinstance(body, dict) else None
        await _record_unreadable_call(request, stream, detail)
    return error_response(422, "invalid_request", detail, errors=items)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal error; see the service log")


async def _record_unreadable_call(request: Request, stream: Any, reason: str) -> None:
    """Record a call refused before the route ran; a store error is logged, the 422 stands."""

    def record() -> None:
        record_unreadable_call(_service_of(request.app).store, stream, reason)

    try:
        await run_in_threadpool(record)  # database I/O stays off the event loop
    except (LearnstreamError, SQLAlchemyError) as exc:
        log.warning("could not record a rejected ingest call: %s", exc)


# ---------------------------------------------------------------------------------------------
# Request size


def body_limit(settings: Settings) -> int:
    """Largest accepted request body (``max_request_bytes``)."""
    return settings.max_request_bytes


class BodyTooLarge(StarletteHTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large_detail(limit))


def _too_large_detail(limit: int) -> str:
    return f"request body larger than {limit} bytes (max_request_bytes)"


async def _send_error(send: Send, status_code: int, kind: str, detail: str) -> None:
    response = error_response(status_code, kind, detail, headers={"Connection": "close"})
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": response.body})


class BodyLimitMiddleware:
    """Refuses bodies over ``limit_of()`` bytes: by Content-Length before reading a byte, and
    while a body without one (chunked) streams in."""

    def __init__(self, app: ASGIApp, limit_of: Callable[[], int | None]) -> None:
        self.app = app
        self.limit_of = limit_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_of()
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if not (declared.isascii() and declared.isdigit()):
                await _send_error(send, 400, "bad_request", "invalid Content-Length header")
                return
            if int(declared) > limit:
                log.warning("refused a %s-byte body on %s", declared, scope.get("path"))
                await _send_error(send, 413, "content_too_large", _too_large_detail(limit))
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            log.warning("refused a streamed body over %d bytes on %s", limit, scope.get("path"))
            await _send_error(send, 413, "content_too_large", _too_large_detail(limit))


# ---------------------------------------------------------------------------------------------
# Dependencies


def _service_of(app: Any) -> Service:
    return app.state.service or get_service()


def request_service(request: Request) -> Service:
    """The service of this app: the one given to ``create_app``, else this process's."""
    return _service_of(request.app)


ServiceDep = Annotated[Service, Depends(request_service)]
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="OperatorToken",
    description="The operator token (LEARNSTREAM_OPERATOR_TOKEN).",
)


def require_operator(
    service: ServiceDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Writes that change a model or an alert need ``Authorization: Bearer <operator token>``."""
    token = service.settings.operator_token
    if not token:
        raise Unauthorized(
            "writes that change models or alerts are disabled: no operator token is "
            "configured (set LEARNSTREAM_OPERATOR_TOKEN)"
        )
    if credentials is None:
        raise Unauthorized("this write needs the operator token as 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
        raise Unauthorized("wrong operator token")


def request_stream(
    service: ServiceDep,
    stream: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=128,
            description="Stream name; default: the setting default_stream "
            "(LEARNSTREAM_DEFAULT_STREAM).",
        ),
    ] = None,
) -> str:
    """The ``?stream=`` of a query, else the setting ``default_stream``."""
    return stream if stream is not None else service.settings.default_stream


def body_stream(service: Service, stream: str | None) -> str:
    """The ``stream`` of a request body, else the setting ``default_stream``."""
    return stream if stream is not None else service.settings.default_stream


StreamQuery = Annotated[str, Depends(request_stream)]
VersionPath = Annotated[int, Path(ge=1, le=MAX_INT, description="Model version number.")]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody} for code in (*codes, 413, 422, 503)}


# ---------------------------------------------------------------------------------------------
# Routes

router = APIRouter()
operator = [Depends(require_operator)]


@router.post(
    SAMPLES_PATH,
    response_model=IngestResponse,
    tags=["ingest"],
    summary="Ingest labelled samples (the learnstream.ingest contract)",
    responses=_errors(404),
)
def post_samples(body: SamplesRequest, request: Request, service: ServiceDep) -> dict[str, Any]:
    """Validate and store samples; each bad sample is rejected at its index with a reason
    while the good ones are accepted. Windows this call closes are handed to
    ``on_windows_closed`` for processing."""
    from service.ingest.samples import ingest_call

    stream = body_stream(service, body.stream)
    result = ingest_call(service.store, service.settings, stream, body.samples)
    if result.closed_windows:
        try:
            request.app.state.on_windows_closed(stream, list(result.closed_windows))
        except Exception:
            # The samples are committed; the windows stay closed and the next window of
            # the stream that closes processes them too.
            log.exception("could not queue closed windows %s of %r", result.closed_windows, stream)
    return result.to_dict()


@router.delete(
    SAMPLES_PATH,
    response_model=DeletionResponse,
    dependencies=operator,
    tags=["ingest"],
    summary="Delete samples with their lineage (operator token)",
    responses=_errors(401, 404, 409),
)
def delete_samples_route(
    body: DeleteSamplesRequest, request: Request, service: ServiceDep
) -> dict[str, Any]:
    """The samples meeting every criterion given leave the store and every stored replay
    buffer and strategy state; the answer names the versions trained on them and the audit
    record. ``retrain`` queues ``learnstream.retrain`` for the stream's learner."""
    from service.samples.deletion import criteria_of, delete_samples

    stream = body_stream(service, body.stream)
    criteria = criteria_of(ids=body.ids, meta=body.meta, group=body.group, before=body.before)
    result = delete_samples(
        service, stream, criteria, by=body.by, reason=body.reason, retrain=body.retrain
    )
    answer: dict[str, Any] = result.to_dict()
    if body.retrain:
        on_retrain = request.app.state.on_retrain
        if on_retrain is None:
            answer["retrain"] = {"queued": False, "note": "this API has no learner queue"}
        else:
            answer["retrain"] = {"queued": True, "task_id": on_retrain(stream, result.audit_id)}
    return answer


@router.post(
    "/v1/predict",
    response_model=PredictResponse,
    tags=["predict"],
    summary="Predict with the stream's champion",
    responses=_errors(404),
)
def post_predict(body: PredictRequest, service: ServiceDep, request: Request) -> dict[str, Any]:
    """Labels and class scores of base64 images under the stream's current champion;
    optional ``ids`` and ``groups`` (one per image) name them in the stream's traffic. The
    traffic windows a call closes go to ``on_windows_closed`` (the learner tests them)."""
    from service.models.serving import predict_images

    stream = body_stream(service, body.stream)
    return predict_images(
        service,
        stream,
        body.images,
        ids=body.ids,
        groups=body.groups,
        on_traffic_closed=request.app.state.on_windows_closed,
    )


@router.get(
    "/v1/status",
    response_model=StatusResponse,
    tags=["operators"],
    summary="Samples, rejections, windows and champion of every stream",
    responses={503: {"model": ErrorBody}},
)
def get_status(service: ServiceDep) -> dict[str, Any]:
    return status(service)


@router.get(
    "/v1/windows",
    response_model=list[WindowOut],
    tags=["operators"],
    summary="Windows of a stream, oldest first",
    responses=_errors(404),
)
def get_windows(service: ServiceDep, stream: StreamQuery) -> list[dict[str, Any]]:
    return list_windows(service, stream)


@router.get(
    "/v1/drift",
    response_model=list[DriftOut],
    tags=["operators"],
    summary="Drift verdicts per window with statistic and p-value",
    responses=_errors(404),
)
def get_drift(service: ServiceDep, stream: StreamQuery) -> list[dict[str, Any]]:
    return list_drift(service, stream)


@router.get(
    "/v1/alerts",
    response_model=list[AlertOut],
    tags=["operators"],
    summary="Alerts, newest first",
    responses=_errors(404),
)
def get_alerts(
    service: ServiceDep,
    stream: Annotated[
        str | None, Query(min_length=1, max_length=128, description="Only this stream.")
    ] = None,
    open_only: Annotated[
        bool, Query(alias="open", description="Only unacknowledged alerts.")
    ] = False,
) -> list[dict[str, Any]]:
    return list_alerts(service, stream, include_acknowledged=not open_only)


@router.post(
    "/v1/alerts/{id}/ack",
    response_model=AlertOut,
    dependencies=operator,
    tags=["operators"],
    summary="Acknowledge an alert (operator token)",
    responses=_errors(401, 404),
)
def post_ack(
    id: Annotated[int, Path(ge=1, le=MAX_INT, description="Alert id.")],
    service: ServiceDep,
    body: Annotated[AckRequest | None, Body()] = None,
) -> dict[str, Any]:
    """Mark the alert acknowledged by ``by`` (default "operator"); acknowledging it again
    keeps the first acknowledgement."""
    by = body.by if body is not None else "operator"
    return acknowledge_alert(service.store, id, by)


@router.get(
    "/v1/quarantine",
    response_model=list[QuarantineOut],
    tags=["operators"],
    summary="Quarantined samples and windows, newest first",
    responses=_errors(404),
)
def get_quarantine(
    service: ServiceDep,
    stream: StreamQuery,
    status: Annotated[
        str, Query(description="held, released, confirmed or all.", max_length=16)
    ] = "held",
) -> list[dict[str, Any]]:
    from service.quarantine.records import list_quarantine

    return list_quarantine(service.store, stream, status)


def _decide_quarantine(
    service: Service, body: QuarantineDecision, action: Literal["released", "confirmed"]
) -> dict[str, Any]:
    from service.quarantine.records import decide

    decided = decide(
        service.store,
        body_stream(service, body.stream),
        action,
        ids=body.ids,
        windows=body.windows,
        everything=body.all,
        by=body.by,
        note=body.note,
    )
    return decided.to_dict()


@router.post(
    "/v1/quarantine/release",
    response_model=QuarantineDecided,
    response_model_exclude_none=True,
    dependencies=operator,
    tags=["operators"],
    summary="Put held samples or windows back into learning (operator token)",
    responses=_errors(401, 404),
)
def post_quarantine_release(body: QuarantineDecision, service: ServiceDep) -> dict[str, Any]:
    return _decide_quarantine(service, body, "released")


@router.post(
    "/v1/quarantine/confirm",
    response_model=QuarantineDecided,
    response_model_exclude_none=True,
    dependencies=operator,
    tags=["operators"],
    summary="Confirm held samples or windows stay out of learning (operator token)",
    responses=_errors(401, 404),
)
def post_quarantine_confirm(body: QuarantineDecision, service: ServiceDep) -> dict[str, Any]:
    return _decide_quarantine(service, body, "confirmed")


@router.get(
    "/v1/models",
    response_model=list[ModelOut],
    tags=["models"],
    summary="Model versions of a stream with lineage, status and gate report",
    responses=_errors(404),
)
def get_models(service: ServiceDep, stream: StreamQuery) -> list[dict[str, Any]]:
    return list_models(service, stream)


@router.get(
    "/v1/models/{version}",
    response_model=ModelOut,
    tags=["models"],
    summary="One model version",
    responses=_errors(404),
)
def get_model(version: VersionPath, service: ServiceDep, stream: StreamQuery) -> dict[str, Any]:
    for model in list_models(service, stream):
        if model["version"] == version:
            return model
    raise ModelNotFound(f"stream {stream!r} has no version {version}")


@router.get(
    "/v1/models/{version}/artifact",
    dependencies=operator,
    tags=["models"],
    summary="A version exported as safetensors, ONNX or TorchScript (operator token)",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {"schema": {"type": "string"}}}},
        **_errors(401, 404, 422),
    },
)
def get_artifact(
    version: VersionPath,
    service: ServiceDep,
    stream: StreamQuery,
    format: Annotated[
        Literal["safetensors", "onnx", "torchscript"], Query(description="Artifact format.")
    ] = "onnx",
) -> Response:
    """Operator token, because weights can leak training data. The preprocessing is in the
    artifact's metadata and in the ``X-Learnstream-Metadata`` header (JSON)."""
    import json
    import tempfile
    from pathlib import Path as FilePath

    from service.models.export import export_version

    with tempfile.TemporaryDirectory(prefix="learnstream-export-") as folder:
        artifact = export_version(service, stream, version, format, FilePath(folder))
        content = artifact.path.read_bytes()
    return Response(
        content,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{artifact.path.name}"',
            "X-Learnstream-Metadata": json.dumps(artifact.metadata),
        },
    )


@router.post(
    "/v1/models/rollback",
    response_model=ChampionChange,
    dependencies=operator,
    tags=["models"],
    summary="Put the previous champion (or `to`) back (operator token)",
    responses=_errors(401, 404),
)
def post_rollback(body: RollbackRequest, service: ServiceDep) -> dict[str, Any]:
    from service.models.promotion import rollback

    stream = body_stream(service, body.stream)
    return rollback(service, stream, by=body.by, reason=body.reason, to=body.to)


@router.post(
    "/v1/models/{version}/promote",
    response_model=ChampionChange,
    dependencies=operator,
    tags=["models"],
    summary="Make a version the champion (operator token)",
    responses=_errors(401, 404),
)
def post_promote(version: VersionPath, body: PromoteRequest, service: ServiceDep) -> dict[str, Any]:
    """The version's files are checked against their digests before the pointer moves."""
    from service.models.promotion import promote

    stream = body_stream(service, body.stream)
    return promote(service, stream, version, by=body.by, reason=body.reason)


@router.post(
    "/v1/streams",
    dependencies=operator,
    status_code=201,
    tags=["streams"],
    summary="Create a stream with its own configuration (operator token)",
    responses=_errors(401, 409),
)
def post_stream(body: StreamCreate, service: ServiceDep) -> dict[str, Any]:
    """Validated in full first (the model is built from its weights and run once); an
    existing stream is refused (409) and left unchanged. Answers the stream's configuration."""
    from service.streams.catalog import create_stream, spec_from_form

    form = body.model_dump(exclude={"name"}, exclude_none=True)
    create_stream(service.store, service.settings, body.name, spec_from_form(form))
    return describe_stream(service.store, service.settings, body.name)


@router.get(
    "/v1/streams",
    tags=["streams"],
    summary="Every stream with its classes, input, model, strategy and champion",
)
def get_streams(service: ServiceDep) -> list[dict[str, Any]]:
    return list_streams(service.store, service.settings)


StreamPath = Annotated[str, Path(min_length=1, max_length=128, description="Stream name.")]


@router.get(
    "/v1/streams/{name}",
    tags=["streams"],
    summary="A stream's whole configuration",
    responses=_errors(404),
)
def get_stream(name: StreamPath, service: ServiceDep) -> dict[str, Any]:
    return describe_stream(service.store, service.settings, name)


@router.patch(
    "/v1/streams/{name}",
    dependencies=operator,
    tags=["streams"],
    summary="Change what is safe to change, or add classes (operator token)",
    responses=_errors(401, 404, 409),
)
def patch_stream(name: StreamPath, body: StreamPatch, service: ServiceDep) -> dict[str, Any]:
    """An unsafe change (the architecture, the inputs, state-sizing strategy parameters) is
    refused with 409 and the reason; nothing of the stream changes then."""
    from service.streams.catalog import changes_from_form, update_stream

    values = changes_from_form(body.model_dump(include={"model", "strategy", "settings"}))
    update_stream(
        service.store,
        service.settings,
        name,
        values,
        classes=body.classes,
        add_classes=body.add_classes,
    )
    return describe_stream(service.store, service.settings, name)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    tags=["operators"],
    summary="Prometheus metrics",
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def get_metrics(request: Request) -> Response:
    return Response(
        generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST
    )


@router.get("/healthz", response_model=Health, tags=["operators"], summary="Liveness")
def get_healthz() -> dict[str, str]:
    """The process answers (liveness); the store's health is ``learnstream_store_up``."""
    return {"status": "ok"}


_HTML_PAGE = {"content": {"text/html": {"schema": {"type": "string"}}}}
# Errors stay JSON; spelled out, since ``model`` would take the route's text/html.
_JSON_ERROR = {
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
}
_DASHBOARD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The page.", **_HTML_PAGE},
    404: {"description": "Unknown stream (an HTML page naming the known ones).", **_HTML_PAGE},
    422: {"description": "Invalid stream name.", **_JSON_ERROR},
    503: {"description": "The store is unavailable.", **_JSON_ERROR},
}


def _dashboard(request: Request, service: Service, stream: str | None) -> HTMLResponse:
    from service.dashboard.views import dashboard

    page = dashboard(service, stream, root_path=request.scope.get("root_path", ""))
    return HTMLResponse(page.html, status_code=page.status)


@router.get(
    "/dashboard",
    response_class=HTMLResponse,
    tags=["operators"],
    summary="The operators' page: every stream, or one with ?stream=",
    responses=_DASHBOARD_RESPONSES,
)
def get_dashboard(
    request: Request,
    service: ServiceDep,
    stream: Annotated[
        str | None, Query(min_length=1, max_length=128, description="Show this stream.")
    ] = None,
) -> HTMLResponse:
    """Server-rendered HTML: drift timeline, per-group accuracy, gate decisions, versions,
    alerts (acknowledged with the operator token), incidents and Grad-CAM explanations."""
    return _dashboard(request, service, stream)


@router.get(
    "/dashboard/{stream}",
    response_class=HTMLResponse,
    tags=["operators"],
    summary="The operators' page of one stream",
    responses=_DASHBOARD_RESPONSES,
)
def get_stream_dashboard(
    request: Request,
    service: ServiceDep,
    stream: Annotated[str, Path(min_length=1, max_length=128, description="Stream name.")],
) -> HTMLResponse:
    return _dashboard(request, service, stream)


# ---------------------------------------------------------------------------------------------
# The application


def _leave_closed(stream: str, window_ids: list[int]) -> None:
    log.info(
        "windows %s of %r closed; no on_windows_closed configured, they stay closed",
        window_ids,
        stream,
    )


def _version() -> str:
    try:
        return package_version("learnstream")
    except PackageNotFoundError:
        return "0"


def create_app(
    service: Service | None = None,
    *,
    on_windows_closed: OnWindowsClosed | None = None,
    on_retrain: OnRetrain | None = None,
) -> FastAPI:
    """The HTTP API over ``service`` (default: :func:`get_service`, looked up per request).

    ``on_windows_closed(stream, window_ids)`` is called after an ingest call closed
    windows; the default leaves them closed for a later ``process_window``.
    ``on_retrain(stream, deletion_id)`` queues a retrain asked for with a deletion and
    returns its task id; without it such a retrain is answered as not queued.
    """
    app = FastAPI(
        title="learnstream",
        version=_version(),
        description="Continual learning for image classifiers: ingest, predict, operate.",
        generate_unique_id_function=lambda route: route.name,
    )
    app.state.service = service
    app.state.on_windows_closed = on_windows_closed or _leave_closed
    app.state.on_retrain = on_retrain
    app.state.metrics_registry = metrics_registry(lambda: _service_of(app))
    app.include_router(router)

    handlers: list[tuple[type[Exception], Callable[..., Awaitable[Response]]]] = [
        (LearnstreamError, _learnstream_error),
        (RequestValidationError, _validation_error),
        (StarletteHTTPException, _http_error),
        (DataError, _store_refused_value),
        (OperationalError, _store_busy),
        (Exception, _unexpected),
    ]
    for exc_class, handler in handlers:
        app.add_exception_handler(exc_class, handler)

    def limit_of() -> int | None:
        try:
            return body_limit(_service_of(app).settings)
        except LearnstreamError:
            return None  # the route answers 503 itself

    app.add_middleware(BodyLimitMiddleware, limit_of=limit_of)
    return app


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings, host: str) -> None:
    """Refuse a non-loopback address while no operator token is configured."""
    if not settings.operator_token and not is_loopback(host):
        raise InsecureBind(
            f"refusing to listen on {host!r} without an operator token: set "
            "LEARNSTREAM_OPERATOR_TOKEN, or listen on a loopback address (127.0.0.1)"
        )


def serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    on_windows_closed: OnWindowsClosed | None = None,
    on_retrain: OnRetrain | None = None,
    log_level: str = "info",
) -> None:
    """Run the API with uvicorn until interrupted (``learnstream api``)."""
    check_bind(settings, host)
    import uvicorn

    service = Service.from_settings(settings)
    # Load torch and the image decoders now, not on the first request.
    import_module("service.ingest.samples")
    import_module("service.models.serving")
    app = create_app(service, on_windows_closed=on_windows_closed, on_retrain=on_retrain)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False)
    finally:
        service.close()
