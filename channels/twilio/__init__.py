"""What the Twilio channels share: SMS (`channels.sms`) and WhatsApp (`channels.whatsapp`).

Both speak Twilio's Messages API and take Twilio's webhooks on the same two URLs, so
the code for that lives here once: the REST client and its errors (`rest`), the
signature check, the form fields and the one webhook that hands each request to the
channel its address belongs to (`webhook`), media fetched on demand (`media`), plain
text in segments (`text`), and the record of which parts of a message went (`parts`).
"""

from __future__ import annotations

from gateway.settings import Settings


def missing_account(settings: Settings) -> str | None:
    """Why a Twilio channel is off (naming the settings), or None when the account is set."""
    account = {"TWILIO_ACCOUNT_SID": settings.twilio_account_sid, "TWILIO_AUTH_TOKEN": settings.twilio_auth_token}
    missing = [name for name, value in account.items() if not value]
    return f"no Twilio account: {' and '.join(missing)} not set" if missing else None
