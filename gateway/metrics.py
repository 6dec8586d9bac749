"""Prometheus metrics, named and documented in one place (README: Metrics)."""

from __future__ import annotations

# prometheus_client's own classes: a cache of label children in front of `labels()` saved 2-4 % of a
# request and no bar needed it (REVIEW, further findings). A call site with fixed label values binds
# its child once (prometheus_client's documented pattern).
from prometheus_client import Counter, Gauge, Histogram

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
