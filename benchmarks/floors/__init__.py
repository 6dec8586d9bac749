"""The naive floors: the least code that does a path's essential I/O, written the obvious way."""
