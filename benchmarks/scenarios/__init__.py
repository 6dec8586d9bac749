"""One module per scenario: how it is measured, and its table in RESULTS.md."""
