"""Evals from real threads: a thread cut at a model turn is a case; `frontdesk eval` re-runs it.

- `cases`: what a case is (the events before a turn, and the step the model took), cutting
  threads into cases, and the JSONL files beside each agent (`agents/<name>/evals/*.jsonl`);
- `run`: re-running each case's turn with today's prompt, context renderer and model, and the report;
- `cassette`: recorded model answers keyed by the request, so a suite runs without a model server;
- `command`: what `frontdesk eval` and `frontdesk eval save` run (the core finds it by name).
"""
