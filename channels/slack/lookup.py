"""Exactly once when Slack's answer is lost: every post names its outbound message, so we can ask.

`chat.postMessage` has no idempotency key. Each post carries message metadata
(`event_type` "frontdesk_outbound", `event_payload` {outbound_id, part}); when a post's
outcome is unknown (no answer, a connection cut after sending, Slack's own
`internal_error`), `posted` reads the thread back (`conversations.replies`, or
`conversations.history` for a root post) with `include_all_metadata` and looks for it:

- found: it went out; its ts is the answer Slack did not give;
- not found: Slack does not have it, so posting again cannot show it twice;
- Slack cannot be asked either: the outcome stays unknown (`ambiguous`), as before.

https://docs.slack.dev/messaging/message-metadata
"""

from __future__ import annotations

from typing import Any

from channels.slack.api import SlackApi

EVENT_TYPE = "frontdesk_outbound"
PAGES = 10  # of up to 200 messages: past 2,000 replies (or root posts since), "not found" is a guess


def tag(outbound_id: str, part: int | str) -> dict[str, Any]:
    """The metadata that names part `part` of outbound message `outbound_id`."""
    return {"event_type": EVENT_TYPE, "event_payload": {"outbound_id": outbound_id, "part": part}}


async def posted(api: SlackApi, channel: str, thread_ts: str | None, metadata: dict[str, Any]) -> str | None:
    """The ts of the message carrying `metadata` in `channel` (under `thread_ts`), None if Slack has none.

    A root post is looked for in the channel's history, newest first. Slack failing to
    answer raises DeliveryFailed: then nobody knows.
    """
    args: dict[str, Any] = {"ts": thread_ts} if thread_ts else {}
    method = "conversations.replies" if thread_ts else "conversations.history"
    cursor = None
    for _ in range(PAGES):
        data = await api.call(method, channel=channel, include_all_metadata=True, limit=200, cursor=cursor, **args)
        for message in data.get("messages") or []:
            if isinstance(message, dict) and _same(message.get("metadata"), metadata) and message.get("ts"):
                return str(message["ts"])
        cursor = (data.get("response_metadata") or {}).get("next_cursor")
        if not cursor:
            return None
    return None


def _same(found: Any, metadata: dict[str, Any]) -> bool:
    if not isinstance(found, dict) or found.get("event_type") != metadata["event_type"]:
        return False
    payload, wanted = found.get("event_payload"), metadata["event_payload"]
    return isinstance(payload, dict) and all(str(payload.get(k)) == str(v) for k, v in wanted.items())
