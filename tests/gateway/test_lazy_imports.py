"""What a process that serves no HTTP leaves unimported (benchmarks/NOTES.md, "Worker memory").

`frontdesk worker` and `frontdesk smtp` load the CLI, the process roles and every
configured channel; the HTTP app, the dashboard, the ops server and Slack's bolt
app are imported only by the roles that serve them, dkimpy (and dnspython) on the
first signed message checked. Checked in a fresh interpreter,
since this test run has long since imported them all.
"""

from __future__ import annotations

import json
import subprocess
import sys

# What a worker imports at start-up: the CLI (which imports the process roles) and the channels.
WORKER_IMPORTS = "gateway.cli, gateway.serve, channels.slack.channel, channels.email, channels.sms.channel"
HTTP_ONLY = [
    "gateway.web.app",
    "gateway.web.api",
    "gateway.web.dashboard",
    "gateway.web.ops",
    "gateway.web.probes",
    "uvicorn",
    "slack_bolt",
    "dkim",
    "dns",
]


def test_a_worker_imports_neither_the_http_app_nor_bolt_nor_dkim() -> None:
    code = f"import json, sys, {WORKER_IMPORTS}; print(json.dumps([m for m in {HTTP_ONLY!r} if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
