"""WhatsApp through Twilio's Messages API.

In: the same webhook as SMS (`POST /twilio/sms`, `/twilio/status`; `channels.twilio.webhook`
checks the signature and hands on every request whose address is `whatsapp:+…`). The
conversation is (their address, ours), the sender `whatsapp:+E164` as Twilio writes it, media
as for MMS, the user's WhatsApp `ProfileName` kept as `data`. Each new message opens the
24-hour customer service window with that user (`window`).

Out: free text, in numbered segments, while the window is open; outside it only an approved
Content Template (`ContentSid`, the text in `{{1}}`) for the message's kind (`settings`); with
no template, nothing is sent and the delivery fails saying so. Twilio's 63016 ("outside the
window"), in its answer or in a status callback, closes the window the same way.

Enabled when TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are set; threads an agent starts need
TWILIO_WHATSAPP_FROM.
"""

from __future__ import annotations

from channels.twilio import missing_account
from channels.whatsapp.channel import WhatsAppChannel
from channels.whatsapp.settings import WhatsAppSettings
from gateway.protocols import ChannelContext, Unconfigured

__all__ = ["WhatsAppChannel", "WhatsAppSettings", "channel"]


def channel(context: ChannelContext) -> WhatsAppChannel | Unconfigured:
    """The WhatsApp channel, or what is missing when the Twilio credentials are not set."""
    reason = missing_account(context.settings)
    if reason:
        return Unconfigured("whatsapp", reason)
    return WhatsAppChannel(context)
