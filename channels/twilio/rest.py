"""Twilio's Messages API through the twilio package, its errors turned into ours.

The package's async path (`AsyncTwilioHttpClient`, aiohttp) has no base-URL
option, but each API domain keeps its root in `Domain.base_url`, which every
request is built from; FRONTDESK_TWILIO_API_URL replaces it. The client's
edge/region rewriting is switched off so that the setting is the one way to
choose a regional endpoint (`https://api.dublin.ie1.twilio.com`).
"""

from __future__ import annotations

import base64
import contextvars
from dataclasses import dataclass

import aiohttp
from twilio.base.exceptions import TwilioException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from gateway.errors import DeliveryFailed
from gateway.retry import retry_after
from gateway.settings import Settings, secret_values

API_URL = "https://api.twilio.com"
UNSUBSCRIBED = 21610  # "Attempt to send to unsubscribed recipient"

# The package raises from the response body alone; Retry-After travels beside it.
# Each send runs in its own task, so a context variable keeps sends apart.
_retry_after: contextvars.ContextVar[float | None] = contextvars.ContextVar("twilio_retry_after", default=None)


@dataclass(frozen=True)
class Created:
    """What Twilio answered to one Messages create."""

    sid: str
    sender: str | None
    status: str | None


class TwilioRejected(DeliveryFailed):
    """Twilio answered with an error; `code` is Twilio's (https://www.twilio.com/docs/api/errors)."""

    def __init__(self, message: str, *, code: int | None, **kw) -> None:
        super().__init__(message, **kw)
        self.code = code


class _HttpClient(AsyncTwilioHttpClient):
    """The package's aiohttp client, with a real default timeout and Retry-After kept."""

    session: aiohttp.ClientSession | None  # the package's own attribute, left unannotated there

    def __init__(self, timeout: float) -> None:
        # No session yet: aiohttp wants one made inside the running loop, on first use.
        super().__init__(pool_connections=False, timeout=timeout)

    async def request(
        self, method, url, params=None, data=None, headers=None, auth=None, timeout=None, allow_redirects=False
    ) -> Response:
        if self.session is None:
            self.session = aiohttp.ClientSession()
        if auth is not None:
            # The package would wrap it in aiohttp.BasicAuth, deprecated since aiohttp 3.14.
            headers = {**(headers or {}), "Authorization": _basic(*auth)}
        # Without a timeout the package passes None, which aiohttp reads as "wait forever".
        response = await super().request(
            method, url, params, data, headers, None, timeout or self.timeout, allow_redirects
        )
        _retry_after.set(retry_after(response.headers) if response.status_code >= 400 else None)
        return response


class TwilioRest:
    """Sends one message per call; closes its HTTP session in `aclose`."""

    def __init__(self, settings: Settings) -> None:
        token = next(iter(secret_values(settings.twilio_auth_token)), None)  # the first of a rotation
        self._http = _HttpClient(settings.twilio_timeout)
        self.client = Client(settings.twilio_account_sid, token, http_client=self._http)
        self.client.edge = self.client.region = None  # read from TWILIO_EDGE/REGION otherwise
        self.client.api.base_url = (settings.twilio_api_url or API_URL).rstrip("/")

    async def create(
        self,
        *,
        to: str,
        sender: str | None,
        service: str | None,
        status_callback: str | None,
        body: str | None = None,
        content_sid: str | None = None,
        content_variables: str | None = None,
    ) -> Created:
        """POST /2010-04-01/Accounts/{sid}/Messages.json; every failure is a DeliveryFailed.

        Either `body` (free text) or `content_sid` (a Content Template, `HX…`, with its
        `content_variables` as a JSON object string): Twilio refuses a template sent with a Body.
        """
        params = {"to": to}
        if content_sid:
            params["content_sid"] = content_sid
            if content_variables:
                params["content_variables"] = content_variables
        else:
            params["body"] = body or ""
        if sender:
            params["from_"] = sender
        if service:
            params["messaging_service_sid"] = service
        if status_callback:
            params["status_callback"] = status_callback
        try:
            message = await self.client.messages.create_async(**params)
        except TwilioException as exc:
            raise _rejected(exc) from exc
        except aiohttp.ClientConnectorError as exc:
            raise DeliveryFailed(f"cannot reach Twilio: {exc}", retryable=True) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            # The request may have reached Twilio: a message sent twice reaches the person twice.
            raise DeliveryFailed(f"no answer from Twilio: {type(exc).__name__} {exc}", ambiguous=True) from exc
        return Created(sid=message.sid, sender=message.from_, status=message.status)

    async def aclose(self) -> None:
        await self._http.close()


def _rejected(exc: TwilioException) -> DeliveryFailed:
    status = getattr(exc, "status", None)
    code = getattr(exc, "code", None)
    text = getattr(exc, "msg", None) or getattr(exc, "detail", None) or str(exc)
    retryable = status is not None and (status == 429 or status >= 500)
    retry_after = _retry_after.get() if retryable else None
    return TwilioRejected(
        f"Twilio error {code}: {text}", code=code, status=status, retryable=retryable, retry_after=retry_after
    )


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
