"""`frontdesk.toml`: which agent answers which address, who may answer and approve.

    [agents.helpdesk]
    responders = ["slack:U0OPS"]            # may answer its questions, besides the origin
    approvers  = ["slack:U0LEAD"]           # only they approve (default: origin + contact)
    contacts   = { operator = "slack:C0OPS" }   # named people the agent may ask
    suggested_prompts = ["Reset my password", "Where is my order?"]   # at most 4
    unverified_answers = false              # unauthenticated mail may not answer questions (default true)

    [agents.helpdesk.routes]
    slack   = ["T0TEAM/C0SUPPORT"]          # team/channel (or just a channel id)
    sms     = ["+15550001111"]
    whatsapp = ["+15550001111"]             # a WhatsApp sender, as a plain number
    email   = ["help@example.com"]
    webhook = true                          # POST /webhooks/helpdesk

    [[cron]]
    schedule = "0 9 * * 1-5"
    agent    = "deploybot"
    text     = "Morning check: anything to ship?"
    contact  = "sms:+15550002222"

Identities are `channel:address`. A file that does not validate stops start-up
with a message naming the key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.errors import ConfigError
from gateway.events import Contact


def parse_identity(value: str) -> Contact:
    channel, sep, address = value.partition(":")
    if not sep or not channel or not address:
        raise ValueError(f"{value!r} is not of the form channel:address")
    return Contact(channel=channel, address=address)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Routes(_Strict):
    slack: list[str] = Field(default_factory=list)
    sms: list[str] = Field(default_factory=list)
    whatsapp: list[str] = Field(default_factory=list)  # our WhatsApp senders, as plain E.164 numbers
    email: list[str] = Field(default_factory=list)
    webhook: bool = True


class AgentConfig(_Strict):
    routes: Routes = Field(default_factory=Routes)
    responders: list[str] = Field(default_factory=list)
    approvers: list[str] = Field(default_factory=list)
    contacts: dict[str, str] = Field(default_factory=dict)
    model: str | None = None
    # Conversation starters a channel may offer (Slack's assistant threads show at most 4).
    suggested_prompts: list[str] = Field(default_factory=list, max_length=4)
    # Whether a message its channel cannot authenticate (unsigned or forged mail) may answer a question.
    # It never approves: that needs an authenticated message, an approval link, or the dashboard.
    unverified_answers: bool = True

    @field_validator("responders", "approvers")
    @classmethod
    def _identities(cls, values: list[str]) -> list[str]:
        for value in values:
            parse_identity(value)
        return values

    @field_validator("contacts")
    @classmethod
    def _contacts(cls, values: dict[str, str]) -> dict[str, str]:
        for value in values.values():
            parse_identity(value)
        return values


class CronConfig(_Strict):
    schedule: str
    agent: str
    text: str
    contact: str | None = None
    name: str | None = None

    @field_validator("contact")
    @classmethod
    def _contact(cls, value: str | None) -> str | None:
        if value is not None:
            parse_identity(value)
        return value


class FrontdeskConfig(_Strict):
    agents: dict[str, AgentConfig] = Field(default_factory=dict)
    cron: list[CronConfig] = Field(default_factory=list)

    def agent(self, name: str) -> AgentConfig:
        return self.agents.get(name) or AgentConfig()


def load_config(path: Path | None) -> FrontdeskConfig:
    """Read and validate the file; no path, or a default path that is absent, is an empty config."""
    if path is None:
        default = Path("frontdesk.toml")
        if not default.exists():
            return FrontdeskConfig()
        path = default
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"FRONTDESK_CONFIG: {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return FrontdeskConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"{path}: {key}: {first['msg']}") from None
