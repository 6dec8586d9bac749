"""The WhatsApp channel's own settings: its sender and the Content Templates it may send.

Read like every plugin's (`gateway.settings.plugin_settings`: the environment and the same
.env). Content Templates are made and approved in the Twilio console (Messaging → Content
Template Builder, then submitted to WhatsApp); each has a `HX…` SID. One template per kind
of message, or one for every kind; its variable `{{1}}` carries the message's text.
"""

from __future__ import annotations

import re

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import SettingsConfigDict

from gateway.messages import OutboundMessage
from gateway.settings import PluginSettings

WHATSAPP = re.compile(r"^whatsapp:\+[1-9]\d{1,14}$")
_CONTENT_SID = re.compile(r"^HX[0-9a-fA-F]{32}$")


def whatsapp_address(value: str) -> str:
    """`value` as Twilio writes a WhatsApp address (`whatsapp:+15551230001`); a bare E.164 number gains the prefix."""
    value = value.strip()
    if value.startswith("+"):
        value = "whatsapp:" + value
    if not WHATSAPP.match(value):
        raise ValueError(f"not a WhatsApp number: {value!r} (the form is whatsapp:+15551230001)")
    return value


class WhatsAppSettings(PluginSettings):
    """TWILIO_WHATSAPP_FROM, and FRONTDESK_WHATSAPP_TEMPLATE[_<KIND>] for messages outside the 24-hour window."""

    model_config = SettingsConfigDict(env_prefix="FRONTDESK_WHATSAPP_", populate_by_name=True)

    # The WhatsApp sender a thread an agent starts writes from; a reply goes from the one written to.
    from_number: str | None = Field(None, validation_alias=AliasChoices("TWILIO_WHATSAPP_FROM"))
    template: str | None = None  # for every kind that has no template of its own
    template_question: str | None = None
    template_approval: str | None = None
    template_final: str | None = None
    template_notice: str | None = None
    template_receipt: str | None = None

    @field_validator("from_number")
    @classmethod
    def _sender(cls, value: str | None) -> str | None:
        return whatsapp_address(value) if value else None

    @field_validator(
        "template", "template_question", "template_approval", "template_final", "template_notice", "template_receipt"
    )
    @classmethod
    def _content_sid(cls, value: str | None) -> str | None:
        if value and not _CONTENT_SID.match(value.strip()):
            raise ValueError("not a Content Template SID (HX followed by 32 hex digits)")
        return value.strip() if value else None

    def template_for(self, message: OutboundMessage) -> str | None:
        """The Content Template SID for `message`'s kind, or the one for every kind; None if neither is set."""
        return getattr(self, f"template_{message.kind}", None) or self.template
