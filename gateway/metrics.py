"""Prometheus metrics, named and documented in one place (README: Metrics)."""

from __future__ import annotations

import prometheus_client


class _Children:
    """`labels(...)` answered from a dict after the first call for those values.

    prometheus_client checks, formats and takes a lock on every `labels()` call: a few
    percent of an ingest request's and an agent step's CPU (benchmarks/, scenarios 1 and 3).
    Nothing here ever removes a child, so the one it made first stays the one to use.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._known: dict[tuple, object] = {}

    def labels(self, *values, **named):
        if named:
            return super().labels(*values, **named)
        child = self._known.get(values)
        if child is None:
            child = self._known[values] = super().labels(*values)
        return child


class Counter(_Children, prometheus_client.Counter):
    pass


class Gauge(_Children, prometheus_client.Gauge):
    pass


class Histogram(_Children, prometheus_client.Histogram):
    pass


INBOUND = Counter("frontdesk_inbound_total", "Inbound messages accepted onto the stream", ["channel"])
DUPLICATES = Counter("frontdesk_inbound_duplicates_total", "Inbound messages dropped as provider retries", ["channel"])
REJECTED = Counter("frontdesk_inbound_rejected_total", "Inbound requests refused", ["channel", "reason"])
LOOPS_AVOIDED = Counter(
    "frontdesk_inbound_ignored_total",
    "Inbound messages deliberately not answered (bots, auto-replies)",
    ["channel", "reason"],
)
STEPS = Counter("frontdesk_steps_total", "Entries applied to threads", ["kind"])
STEP_SECONDS = Histogram("frontdesk_step_seconds", "Time to apply one entry (agent turn included)", ["agent"])
MODEL_SECONDS = Histogram("frontdesk_model_seconds", "Model call latency", ["model"])
MODEL_TOKENS = Counter("frontdesk_model_tokens_total", "Model tokens used", ["model", "direction"])
DELIVERIES = Counter("frontdesk_deliveries_total", "Outbound delivery outcomes", ["channel", "status"])
DEAD_LETTERS = Counter("frontdesk_dead_letters_total", "Entries moved to a dead-letter stream", ["source"])
LOOP_ERRORS = Counter(
    "frontdesk_loop_errors_total", "Unexpected errors a background loop survived (a bug to look at)", ["loop"]
)
IN_FLIGHT = Gauge("frontdesk_threads_in_flight", "Threads a worker is applying entries to right now")
QUEUE_LAG = Gauge("frontdesk_queue_lag", "Entries not yet delivered to a consumer group", ["stream", "partition"])
QUEUE_PENDING = Gauge(
    "frontdesk_queue_pending", "Entries a consumer group has read and not yet acknowledged", ["stream", "partition"]
)
