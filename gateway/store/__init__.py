"""Everything that knows Redis: the client and its errors, keys, scripts, streams, threads, ingest.

Nothing here imports gateway.web; the HTTP surfaces and the workers reach Redis through these modules.
"""
