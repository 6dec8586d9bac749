"""Optional OpenTelemetry tracing: one trace from the inbound request to the outbound delivery.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set and the SDK and OTLP exporter are
installed (`pip install 'frontdesk[otel]'`); when off every helper here is a
no-op and nothing of OpenTelemetry is imported. The context crosses Redis as a
W3C `traceparent`: the `tp` field of an inbound stream entry, then the
`traceparent` of each OutboundMessage a step composes. So the spans

    HTTP request → frontdesk.inbound → frontdesk.step → frontdesk.deliver

form one trace, across processes, however long the thread waited in between.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import structlog

from gateway.settings import Settings

log = structlog.get_logger("frontdesk.tracing")

_tracer: Any = None  # an opentelemetry Tracer while tracing is on
_provider: Any = None


def configure(settings: Settings) -> bool:
    """Turn tracing on when the settings ask for it and the packages are there; idempotent."""
    if _tracer is not None:
        return True
    if not settings.otel_endpoint:
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry packages are not installed "
            "(pip install 'frontdesk[otel]'); tracing is off"
        )
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": settings.otel_service_name}))
    # The env variable names the collector's base URL; the HTTP exporter wants the traces path.
    endpoint = settings.otel_endpoint.rstrip("/") + "/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    enable(provider)
    log.info("tracing on", endpoint=endpoint)
    return True


def enable(provider: Any) -> None:
    """Send spans to `provider` (an SDK TracerProvider; tests pass one with an in-memory exporter)."""
    global _tracer, _provider
    _provider, _tracer = provider, provider.get_tracer("frontdesk")


def disable() -> None:
    global _tracer, _provider
    _tracer = _provider = None


def shutdown() -> None:
    """Export what is buffered, stop the exporter, and turn tracing off."""
    provider = _provider
    disable()
    if provider is not None:
        provider.shutdown()


def enabled() -> bool:
    return _tracer is not None


def flush() -> None:
    """Export what is buffered (a process about to exit)."""
    if _provider is not None:
        _provider.force_flush()


@contextlib.contextmanager
def span(name: str, *, parent: str | None = None, span_kind: str = "internal", **attributes: Any) -> Iterator[Any]:
    """A span named `name`, child of `parent` (a traceparent) or else of the current span."""
    if _tracer is None:
        yield None
        return
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    context = TraceContextTextMapPropagator().extract({"traceparent": parent}) if parent else None
    otel_kind = getattr(trace.SpanKind, span_kind.upper())
    clean = {k: v for k, v in attributes.items() if v is not None}
    with _tracer.start_as_current_span(name, context=context, kind=otel_kind, attributes=clean) as current:
        yield current


def annotate(**attributes: Any) -> None:
    """Set attributes on the current span (an outcome known only at the end)."""
    if _tracer is None:
        return
    from opentelemetry import trace

    trace.get_current_span().set_attributes({k: v for k, v in attributes.items() if v is not None})


def traceparent() -> str | None:
    """The current span's context as a W3C traceparent, to carry across Redis."""
    if _tracer is None:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent")


def stamp(messages: list[Any]) -> list[Any]:
    """Copies of the OutboundMessages carrying the current trace context (unchanged when off)."""
    tp = traceparent()
    if tp is None:
        return messages
    return [m.model_copy(update={"traceparent": tp}) for m in messages]


class TraceRequests:
    """ASGI middleware: a server span per HTTP request, continuing a caller's `traceparent` header."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if _tracer is None or scope["type"] != "http" or scope.get("path") in ("/healthz", "/readyz", "/metrics"):
            return await self.app(scope, receive, send)
        parent = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"traceparent"), None)
        method, path = scope.get("method", ""), scope.get("path", "")
        with span(
            f"{method} {path}", parent=parent, span_kind="server", **{"http.request.method": method, "url.path": path}
        ) as current:

            async def record(message):
                if message["type"] == "http.response.start":
                    current.set_attribute("http.response.status_code", message["status"])
                await send(message)

            await self.app(scope, receive, record)
