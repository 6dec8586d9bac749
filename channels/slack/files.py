"""Files both ways: what people attach, fetched for the agent; long answers, uploaded as files.

In. A message's `files` carry `url_private`, which needs the bot token (an
`Authorization: Bearer` header; docs.slack.dev/messaging/working-with-files). The
worker fetches them (`complete`, off the request path) up to FRONTDESK_SLACK_FILE_MAX_BYTES
each, into the channel's own keys by content hash, and the agent sees them as
attachments whose `ref` names those keys. A larger file, or one Slack would not give
(refused, unreachable), is listed with an empty `ref`, so the agent knows it exists; the
message is never held back for its file. The token is only ever sent
to Slack's file host or the host of FRONTDESK_SLACK_API_URL (a proxy, the test fake).

Out. An answer longer than FRONTDESK_SLACK_UPLOAD_OVER characters goes up as a Markdown
file in its thread, with its opening as the comment, instead of many messages:
`files.getUploadURLExternal`, the bytes POSTed to the URL it gives, then
`files.completeUploadExternal`, which shares it (the old `files.upload` is retired).
The share is the post: recorded under `upload:<outbound id>` once done, so a retry
never shares twice; an answer lost after sending is `ambiguous`, as for chat.postMessage.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import aiohttp
import structlog

from channels.email.store import BlobStore
from channels.slack.api import SlackApi
from channels.slack.mrkdwn import mentions, to_mrkdwn
from channels.slack.settings import SlackAgentSettings
from gateway.errors import DeliveryFailed, Unavailable
from gateway.messages import Attachment, InboundMessage, OutboundMessage, Sent
from gateway.protocols import ChannelState

log = structlog.get_logger("frontdesk.slack")
SLACK_FILE_HOSTS = frozenset({"files.slack.com"})
COMMENT = 1500  # characters of the answer shown above the file


class Files:
    """Fetches inbound files with the bot token; uploads long answers."""

    def __init__(
        self,
        api: SlackApi,
        session: aiohttp.ClientSession,
        token: str | None,
        state: ChannelState,
        settings: SlackAgentSettings,
        *,
        api_url: str,
        ttl: int,
    ) -> None:
        self.api = api
        self.session = session
        self.token = token
        self.state = state
        self.blobs = BlobStore(state, ttl)
        self.settings = settings
        self.ttl = ttl
        self.hosts = SLACK_FILE_HOSTS | {urlsplit(api_url).hostname or ""}

    # ------------------------------------------------------------ in
    async def fetched(self, message: InboundMessage) -> InboundMessage:
        """`message` with each attachment fetched and stored, or listed without a ref."""
        if not message.attachments:
            return message
        return message.model_copy(update={"attachments": [await self._fetch(a) for a in message.attachments]})

    async def _fetch(self, attachment: Attachment) -> Attachment:
        url, cap = attachment.ref, self.settings.file_max_bytes
        if self.state.name_of(url) is not None:
            return attachment  # already ours (the entry is being applied again)
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or parts.hostname not in self.hosts:
            return attachment.model_copy(update={"ref": ""})  # never send the token elsewhere
        if attachment.size is not None and attachment.size > cap:
            log.info("slack file over the size cap; not fetched", size=attachment.size, cap=cap)
            return attachment.model_copy(update={"ref": ""})
        try:
            data = await self._download(url, cap)
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The message matters more than its file: it goes on, the file listed without its bytes.
            log.warning("slack file not fetched", filename=attachment.filename, error=f"{type(exc).__name__}: {exc}")
            data = None
        if data is None:
            return attachment.model_copy(update={"ref": ""})
        ref, digest = await self.blobs.put("file", data)
        return attachment.model_copy(update={"ref": ref, "sha256": digest, "size": len(data)})

    async def _download(self, url: str, cap: int) -> bytes | None:
        """The file's bytes; None when it is over `cap` or Slack refuses it for good."""
        # The workspace's own token where the app was installed by OAuth, else SLACK_BOT_TOKEN.
        headers = {"Authorization": f"Bearer {await self.api.bearer() or self.token}"}
        async with self.session.get(url, headers=headers, allow_redirects=False) as response:
            if response.status != 200 or response.content_type == "text/html":
                # Slack answers a request without a valid token with its sign-in page (HTML).
                log.info("slack file refused", status=response.status, content_type=response.content_type)
                return None
            if (response.content_length or 0) > cap:
                return None
            data = await response.content.read(cap + 1)
            return None if len(data) > cap else data

    # ------------------------------------------------------------ out
    def wants(self, message: OutboundMessage, thread_ts: str | None) -> bool:
        over = self.settings.upload_over
        # Choices and buttons belong in a message, not in a file's comment.
        return bool(over and thread_ts and len(message.text) > over and not message.actions and not message.choices)

    async def upload(self, message: OutboundMessage, channel: str, thread_ts: str) -> Sent:
        key = f"upload:{message.id}"
        done = await self.state.get(key)
        if done:
            return Sent(detail=done)
        text = mentions(message.text)
        data = text.encode()
        filename = f"{message.kind}-{message.id}.md"
        ticket = await self.api.call("files.getUploadURLExternal", form=True, filename=filename, length=str(len(data)))
        upload_url, file_id = ticket.get("upload_url"), ticket.get("file_id")
        if not upload_url or not file_id:
            raise DeliveryFailed("files.getUploadURLExternal: no upload_url or file_id in Slack's answer")
        if urlsplit(upload_url).hostname not in self.hosts:
            raise DeliveryFailed(f"files.getUploadURLExternal: an upload URL off Slack's hosts: {upload_url!r}")
        await self._put(upload_url, data, filename)
        comment = to_mrkdwn(_opening(text))
        await self.api.call(
            "files.completeUploadExternal",
            posts=True,
            form=True,
            files=json.dumps([{"id": file_id, "title": f"{message.agent or 'frontdesk'}: full answer"}]),
            channel_id=channel,
            thread_ts=thread_ts,
            initial_comment=comment,
        )
        try:
            await self.state.set(key, file_id, ttl=self.ttl)
        except Unavailable as exc:  # shared already: failing now would share it twice
            log.warning("could not record an upload", outbound_id=message.id, error=str(exc))
        return Sent(detail=file_id)

    async def _put(self, url: str, data: bytes, filename: str) -> None:
        """POST the bytes where Slack said; nothing is shown until completeUploadExternal, so a retry is safe."""
        form = aiohttp.FormData()
        form.add_field("file", data, filename=filename, content_type="text/markdown")
        try:
            async with self.session.post(url, data=form) as response:
                if response.status != 200:
                    raise DeliveryFailed(f"file upload: HTTP {response.status}", status=response.status, retryable=True)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryFailed(f"file upload: {type(exc).__name__}: {exc}", retryable=True) from exc


def _opening(text: str) -> str:
    if len(text) <= COMMENT:
        return text
    cut = text.rfind("\n", 0, COMMENT)
    return text[: cut if cut > COMMENT // 2 else COMMENT].rstrip() + "\n\n…the whole answer is in the file."
