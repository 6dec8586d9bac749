"""deploybot: lists candidate versions, asks which to ship, deploys after approval.

Both tools call the deploy service at FRONTDESK_DEPLOYBOT_URL:
`GET  {url}/versions?service=S` → `{"versions": ["v1.4.2", ...]}` (newest first) and
`POST {url}/deploy {"service", "version", "environment"}` → any JSON result.
The deploy request carries an `Idempotency-Key` (thread id + call id), so a
retried step after a crash deploys once where the service honours the key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import httpx
from pydantic_settings import SettingsConfigDict

from agents.kit import Agent, Tool, ToolContext, parse_blocks
from agents.kit.demo import ask, done, said
from gateway.settings import PluginSettings


class DeploybotSettings(PluginSettings):
    """FRONTDESK_DEPLOYBOT_URL: the deploy service."""

    model_config = SettingsConfigDict(env_prefix="FRONTDESK_DEPLOYBOT_")

    url: str | None = None


def _url(ctx: ToolContext) -> str:
    settings = ctx.agent_settings
    if not isinstance(settings, DeploybotSettings) or not settings.url:
        raise RuntimeError("no deploy service configured (set FRONTDESK_DEPLOYBOT_URL)")
    return settings.url.rstrip("/")


class ListVersions(Tool):
    """List the versions of a service that can be deployed, newest first."""

    service: str

    async def run(self, ctx: ToolContext) -> list[str]:
        response = await ctx.http.get(f"{_url(ctx)}/versions", params={"service": self.service})
        response.raise_for_status()
        return list(response.json()["versions"])


class Deploy(Tool):
    """Deploy one version of a service. A person approves every deploy before it runs."""

    requires_approval: ClassVar[bool] = True
    service: str
    version: str
    environment: str = "production"

    async def run(self, ctx: ToolContext) -> Any:
        response = await ctx.http.post(
            f"{_url(ctx)}/deploy",
            json=self.model_dump(),
            headers={"Idempotency-Key": ctx.idempotency_key},
            timeout=httpx.Timeout(60),
        )
        response.raise_for_status()
        return response.json()


class Deploybot(Agent):
    name = "deploybot"
    description = "Ships a chosen version of a service after a person approves."
    toolbox = (ListVersions, Deploy)
    settings_class = DeploybotSettings
    prompt = Path(__file__).with_name("prompt.md.j2")

    def demo(self, context: str, tools: list[str]) -> tuple[str, dict[str, Any]]:
        blocks = parse_blocks(context)
        last = blocks[-1]
        request = said(blocks)[0].body
        service = (re.findall(r"deploy (?:the )?([\w-]+)", request.lower()) or ["web"])[0]
        calls = [b for b in blocks if b.tag in ("tool_call", "approval_requested")]
        if last.tag == "approval_decision" and last.attrs.get("approved") == "false":
            return done(f"Deployment of {service} cancelled.")
        if last.tag == "error":
            return done(f"I could not finish: {last.body}")
        if not calls:
            return "list_versions", {"service": service}
        if last.tag == "tool_result" and calls[-1].attrs.get("tool") == "list_versions":
            versions = [line.lstrip("- ").strip() for line in last.body.splitlines() if line.strip()]
            return ask(f"Which version of {service} should I deploy?", choices=versions[:5])
        if last.tag == "human_response":
            return "deploy", {"service": service, "version": last.body.strip().split()[0]}
        return done(f"Deployed {service}: {last.body}")
