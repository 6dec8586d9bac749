"""frontdesk's runtime: settings, events, Redis streams and stores, router, worker, outbox, HTTP, CLI."""
