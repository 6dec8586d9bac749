"""Load generators, each run as a process of its own so its CPU is never the server's."""
