"""SMS through Twilio.

In: `POST /twilio/sms` checks X-Twilio-Signature against FRONTDESK_PUBLIC_URL,
answers opt-out keywords itself (STOP ... START, HELP: `optout`), and enqueues
everything else keyed by MessageSid in the conversation `their/our` numbers.
`POST /twilio/status` turns status callbacks into `delivery` events.

Out: plain text in numbered segments (`text`), from the number the person wrote
to (or TWILIO_FROM_NUMBER for a contact; TWILIO_MESSAGING_SERVICE_SID when set),
with a StatusCallback naming the thread; Twilio's errors become DeliveryFailed.
The webhook, REST client, text and media code is shared with WhatsApp
(`channels.twilio`); a `whatsapp:` address on the same webhook is WhatsApp's.

Enabled when TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are set.
"""

from __future__ import annotations

from channels.sms.channel import SmsChannel
from channels.twilio import missing_account
from channels.twilio.media import Media
from gateway.protocols import ChannelContext, Unconfigured

__all__ = ["Media", "SmsChannel", "channel"]


def channel(context: ChannelContext) -> SmsChannel | Unconfigured:
    """The SMS channel, or what is missing when the Twilio credentials are not set."""
    reason = missing_account(context.settings)
    if reason:
        return Unconfigured("sms", reason)
    return SmsChannel(context)
