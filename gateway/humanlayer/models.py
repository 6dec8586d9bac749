"""The HumanLayer agent API's bodies, as the `humanlayer` SDK (0.7.9) sends and parses them.

Read leniently: the SDK sends every optional field as `null`, its TypeScript sibling leaves
them out, and newer clients add fields; a missing key, a `null` and an unknown key are all
fine. Ids and free text are bounded, so a stored call cannot grow without limit.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_ID = Field(min_length=1, max_length=256)


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ResponseOption(_In):
    name: str = Field(min_length=1, max_length=200)
    title: str | None = Field(default=None, max_length=500)
    description: str | None = Field(default=None, max_length=2000)
    prompt_fill: str | None = Field(default=None, max_length=10_000)
    interactive: bool = False


class SlackChannel(_In):
    channel_or_user_id: str = Field(max_length=64)
    context_about_channel_or_user: str | None = Field(default=None, max_length=2000)
    allowed_responder_ids: list[str] | None = None
    experimental_slack_blocks: bool | None = None
    thread_ts: str | None = Field(default=None, max_length=64)

    @model_validator(mode="before")
    @classmethod
    def _no_bot_token(cls, value: Any) -> Any:
        # A customer's own Slack bot token: frontdesk posts as its own app and has no use for it, so it
        # is dropped before anything else reads the body — not kept, not echoed, not in a 422's detail.
        if isinstance(value, dict) and "bot_token" in value:
            value = {k: v for k, v in value.items() if k != "bot_token"}
        return value

    @field_validator("allowed_responder_ids")
    @classmethod
    def _some(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("allowed_responder_ids, when given, must name someone")
        return value


class PhoneChannel(_In):
    phone_number: str = Field(min_length=1, max_length=32)
    context_about_user: str | None = Field(default=None, max_length=2000)


class EmailRecipient(_In):
    address: str = Field(min_length=3, max_length=320)
    context_about_user: str | None = Field(default=None, max_length=2000)
    field: Literal["to", "cc", "bcc"] | None = None


class EmailChannel(_In):
    address: str = Field(min_length=3, max_length=320)
    context_about_user: str | None = Field(default=None, max_length=2000)
    additional_recipients: list[EmailRecipient] | None = Field(default=None, max_length=50)
    subject: str | None = Field(default=None, max_length=998)
    references_message_id: str | None = Field(default=None, max_length=998)
    in_reply_to_message_id: str | None = Field(default=None, max_length=998)
    # The SDK mirrors each field into its `experimental_*` twin; older servers knew only the twins.
    experimental_subject_line: str | None = Field(default=None, max_length=998)
    experimental_references_message_id: str | None = Field(default=None, max_length=998)
    experimental_in_reply_to_message_id: str | None = Field(default=None, max_length=998)
    template: str | None = Field(default=None, max_length=100_000)


class ContactChannel(_In):
    slack: SlackChannel | None = None
    sms: PhoneChannel | None = None
    whatsapp: PhoneChannel | None = None
    email: EmailChannel | None = None


class FunctionCallSpec(_In):
    fn: str = Field(min_length=1, max_length=200)
    kwargs: dict[str, Any]
    channel: ContactChannel | None = None
    reject_options: list[ResponseOption] | None = Field(default=None, max_length=20)
    state: dict[str, Any] | None = None


class HumanContactSpec(_In):
    msg: str = Field(min_length=1, max_length=100_000)
    subject: str | None = Field(default=None, max_length=998)
    channel: ContactChannel | None = None
    response_options: list[ResponseOption] | None = Field(default=None, max_length=20)
    state: dict[str, Any] | None = None


class FunctionCallIn(_In):
    run_id: str = _ID
    call_id: str = _ID
    spec: FunctionCallSpec


class HumanContactIn(_In):
    run_id: str = _ID
    call_id: str = _ID
    spec: HumanContactSpec


class FunctionCallStatusIn(_In):
    """The body of an agent-side respond; the SDK sends the datetimes as null, the server stamps them."""

    approved: bool
    comment: str | None = Field(default=None, max_length=10_000)
    reject_option_name: str | None = Field(default=None, max_length=200)


class HumanContactStatusIn(_In):
    response: str = Field(max_length=100_000)
    response_option_name: str | None = Field(default=None, max_length=200)


class EscalationIn(_In):
    escalation_msg: str = Field(min_length=1, max_length=10_000)
    additional_recipients: list[EmailRecipient] | None = Field(default=None, max_length=50)
    channel: ContactChannel | None = None
