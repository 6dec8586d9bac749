"""Every setting frontdesk reads, in one place.

Settings come from the environment (and `.env`); nothing else in the code reads
`os.environ`. Names are the documented ones, so most fields carry an explicit alias.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from gateway.errors import ConfigError

WEBHOOK_SECRET_PREFIX = "FRONTDESK_WEBHOOK_SECRET_"


def secret_values(secret: SecretStr | None) -> list[str]:
    """A secret's accepted values, the one that signs first: comma-separated during a rotation.

    Used for every secret a provider or caller signs with (webhook secrets,
    SLACK_SIGNING_SECRET, TWILIO_AUTH_TOKEN): inbound checks accept any of them,
    anything outbound uses the first.
    """
    if secret is None:
        return []
    return [value.strip() for value in secret.get_secret_value().split(",") if value.strip()]


def _env(name: str, default=None, **kw):
    return Field(default, validation_alias=AliasChoices(name), **kw)


class Settings(BaseSettings):
    """The process configuration. Built once by the CLI and passed down."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    # --- storage and work distribution
    # redis://, redis+sentinel:// or redis+cluster:// (the forms: gateway/store/connection.py)
    redis_url: str | None = _env("FRONTDESK_REDIS_URL")
    data_dir: Path = _env("FRONTDESK_DATA_DIR", Path(".frontdesk"))
    key_prefix: str = _env("FRONTDESK_KEY_PREFIX", "frontdesk")
    partitions: int = _env("FRONTDESK_PARTITIONS", 1, ge=1, le=1024)
    redis_max_connections: int = _env("FRONTDESK_REDIS_MAX_CONNECTIONS", 64, ge=2)
    claim_timeout: float = _env("FRONTDESK_CLAIM_TIMEOUT", 30.0, gt=0)
    max_attempts: int = _env("FRONTDESK_MAX_ATTEMPTS", 5, ge=1)
    delivery_attempts: int = _env("FRONTDESK_DELIVERY_ATTEMPTS", 6, ge=1)
    retry_base: float = _env("FRONTDESK_RETRY_BASE", 1.0, gt=0)
    retry_max: float = _env("FRONTDESK_RETRY_MAX", 300.0, gt=0)
    dedupe_ttl: int = _env("FRONTDESK_DEDUPE_TTL", 7 * 24 * 3600, ge=60)
    worker_concurrency: int = _env("FRONTDESK_WORKER_CONCURRENCY", 2000, ge=1)
    sender_concurrency: int = _env("FRONTDESK_SENDER_CONCURRENCY", 200, ge=1)
    shutdown_grace: float = _env("FRONTDESK_SHUTDOWN_GRACE", 20.0, ge=0)
    max_steps: int = _env("FRONTDESK_MAX_STEPS", 25, ge=1)

    # --- model
    model: str = _env("FRONTDESK_MODEL", "demo")
    openai_base_url: str | None = _env("OPENAI_BASE_URL")
    openai_api_key: SecretStr | None = _env("OPENAI_API_KEY")
    anthropic_base_url: str | None = _env("ANTHROPIC_BASE_URL")
    anthropic_api_key: SecretStr | None = _env("ANTHROPIC_API_KEY")
    model_timeout: float = _env("FRONTDESK_MODEL_TIMEOUT", 60.0, gt=0)
    model_retries: int = _env("FRONTDESK_MODEL_RETRIES", 2, ge=0)
    context_budget: int = _env("FRONTDESK_CONTEXT_BUDGET", 24_000, ge=500)

    # --- agents, channels, routing
    config_path: Path | None = _env("FRONTDESK_CONFIG")
    agents: str = _env("FRONTDESK_AGENTS", "")
    channels: str = _env("FRONTDESK_CHANNELS", "")
    default_agent: str = _env("FRONTDESK_DEFAULT_AGENT", "helpdesk")
    cron_grace: float = _env("FRONTDESK_CRON_GRACE", 300.0, ge=0)
    email_domain: str = _env("FRONTDESK_EMAIL_DOMAIN", "frontdesk.localhost")

    # --- HTTP, SMTP
    http_host: str = _env("FRONTDESK_HTTP_HOST", "127.0.0.1")
    http_port: int = _env("FRONTDESK_HTTP_PORT", 8000)
    # `frontdesk serve`: HTTP processes sharing the port, one per core to give it (gateway.prefork).
    http_workers: int = _env("FRONTDESK_HTTP_WORKERS", 1, ge=1, le=256)
    smtp_host: str = _env("FRONTDESK_SMTP_HOST", "127.0.0.1")
    smtp_port: int = _env("FRONTDESK_SMTP_PORT", 2525)
    smtp_relay: str | None = _env("FRONTDESK_SMTP_RELAY")
    smtp_max_bytes: int = _env("FRONTDESK_SMTP_MAX_BYTES", 10 * 1024 * 1024, ge=1024)
    smtp_tls_cert: Path | None = _env("FRONTDESK_SMTP_TLS_CERT")  # with _KEY: offer STARTTLS
    smtp_tls_key: Path | None = _env("FRONTDESK_SMTP_TLS_KEY")
    smtp_client_connections: int = _env("FRONTDESK_SMTP_CLIENT_CONNECTIONS", 50, ge=1)  # per client IP
    smtp_client_rate: int = _env("FRONTDESK_SMTP_CLIENT_RATE", 0, ge=0)  # messages/minute per client IP; 0: no limit
    # Idle time between commands, and the whole DATA transfer, before a session is closed (aiosmtpd's default: 300).
    smtp_timeout: float = _env("FRONTDESK_SMTP_TIMEOUT", 60.0, gt=0)
    smtp_relay_starttls: bool | None = _env("FRONTDESK_SMTP_RELAY_STARTTLS")  # unset: upgrade when offered
    smtp_relay_user: str | None = _env("FRONTDESK_SMTP_RELAY_USER")
    smtp_relay_password: SecretStr | None = _env("FRONTDESK_SMTP_RELAY_PASSWORD")
    smtp_relay_ca_file: Path | None = _env("FRONTDESK_SMTP_RELAY_CA_FILE")
    smtp_relay_timeout: float = _env("FRONTDESK_SMTP_RELAY_TIMEOUT", 30.0, gt=0)
    email_token_secret: SecretStr | None = _env("FRONTDESK_EMAIL_TOKEN_SECRET")
    email_attachment_max_bytes: int = _env("FRONTDESK_EMAIL_ATTACHMENT_MAX_BYTES", 5 * 1024 * 1024, ge=0)
    email_retention: int = _env("FRONTDESK_EMAIL_RETENTION", 14 * 24 * 3600, ge=3600)  # raw mail, attachments
    # The authserv-id of the relay whose Authentication-Results (RFC 8601) we believe; unset: we believe none.
    email_trusted_authserv_id: str | None = _env("FRONTDESK_EMAIL_TRUSTED_AUTHSERV_ID")
    # The relay's addresses (comma-separated IPs or CIDRs): its header counts only on mail from them; empty: any.
    email_trusted_relays: str = _env("FRONTDESK_EMAIL_TRUSTED_RELAYS", "")
    public_url: str | None = _env("FRONTDESK_PUBLIC_URL")
    api_token: SecretStr | None = _env("FRONTDESK_API_TOKEN")
    max_body_bytes: int = _env("FRONTDESK_MAX_BODY_BYTES", 1024 * 1024, ge=1024)
    # Inbound messages per sender (channel identity) per window, on every channel; 0: no limit.
    rate_limit: int = _env("FRONTDESK_RATE_LIMIT", 30, ge=0)
    rate_window: int = _env("FRONTDESK_RATE_WINDOW", 60, ge=1)  # seconds
    log_level: str = _env("FRONTDESK_LOG_LEVEL", "info")
    # auto: readable lines on a terminal, JSON lines otherwise (what log collectors read).
    log_format: Literal["auto", "json", "console"] = _env("FRONTDESK_LOG_FORMAT", "auto")
    # One log line per HTTP request; off by default (the ingress usually keeps one, and it costs CPU on every request).
    access_log: bool = _env("FRONTDESK_ACCESS_LOG", False)
    # /healthz, /readyz and /metrics on this port in a process without the HTTP app (worker, smtp); unset: none.
    ops_port: int | None = _env("FRONTDESK_OPS_PORT", None, ge=0, le=65535)
    # OpenTelemetry: traces go to this OTLP/HTTP collector (e.g. http://collector:4318); unset: tracing is off.
    otel_endpoint: str | None = _env("OTEL_EXPORTER_OTLP_ENDPOINT")
    otel_service_name: str = _env("OTEL_SERVICE_NAME", "frontdesk")

    # --- providers
    slack_bot_token: SecretStr | None = _env("SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr | None = _env("SLACK_SIGNING_SECRET")
    slack_app_token: SecretStr | None = _env("SLACK_APP_TOKEN")
    slack_api_url: str = _env("FRONTDESK_SLACK_API_URL", "https://slack.com/api/")
    # The emoji put on a message once it is queued; empty: none.
    slack_ack_reaction: str = _env("FRONTDESK_SLACK_ACK_REACTION", "eyes")
    slack_timeout: float = _env("FRONTDESK_SLACK_TIMEOUT", 10.0, gt=0)
    twilio_account_sid: str | None = _env("TWILIO_ACCOUNT_SID")
    twilio_auth_token: SecretStr | None = _env("TWILIO_AUTH_TOKEN")
    twilio_api_url: str | None = _env("FRONTDESK_TWILIO_API_URL")
    twilio_from_number: str | None = _env("TWILIO_FROM_NUMBER")
    twilio_messaging_service_sid: str | None = _env("TWILIO_MESSAGING_SERVICE_SID")
    twilio_timeout: float = _env("FRONTDESK_TWILIO_TIMEOUT", 10.0, gt=0)
    sms_help_text: str = _env(
        "FRONTDESK_SMS_HELP_TEXT", "Reply to this number to continue. Reply STOP to unsubscribe, START to resubscribe."
    )
    sms_media_max_bytes: int = _env("FRONTDESK_SMS_MEDIA_MAX_BYTES", 5 * 1024 * 1024, ge=1)
    webhook_secret: SecretStr | None = _env("FRONTDESK_WEBHOOK_SECRET")
    callback_allow_private: bool = _env("FRONTDESK_CALLBACK_ALLOW_PRIVATE", False)
    # Hosts callbacks may reach (exact, or ".example.com" for a domain and its subdomains); empty: any public host.
    callback_allowlist: str = _env("FRONTDESK_CALLBACK_ALLOWLIST", "")
    webhook_tolerance: int = _env("FRONTDESK_WEBHOOK_TOLERANCE", 300, ge=1)
    # The HumanLayer API (gateway/humanlayer): where a call with a null channel goes ("slack:C123",
    # "email:ops@example.com"), and the URLs told of every finished call (comma-separated).
    humanlayer_default_contact: str | None = _env("FRONTDESK_HUMANLAYER_DEFAULT_CONTACT")
    humanlayer_webhook_urls: str = _env("FRONTDESK_HUMANLAYER_WEBHOOK_URLS", "")

    # FRONTDESK_WEBHOOK_SECRET_<AGENT>, keyed by lower-case agent name: no field can name every agent,
    # so `_AgentSecrets` collects them from the environment and from .env (the sources below).
    webhook_secrets: dict[str, SecretStr] = Field(default_factory=dict)

    # The .env file(s) these settings read, so that plugin settings read the same (None: none).
    _env_file: Any = PrivateAttr(default=None)

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self._env_file = values.get("_env_file", self.model_config.get("env_file"))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win, key by key in a dict: an agent's secret in the environment
        # beats the same agent's in .env, and .env still adds the agents the environment lacks.
        assert isinstance(env_settings, EnvSettingsSource) and isinstance(dotenv_settings, DotEnvSettingsSource)
        return (
            init_settings,
            env_settings,
            _AgentSecrets(settings_cls, env_settings.env_vars),
            dotenv_settings,
            _AgentSecrets(settings_cls, dotenv_settings.env_vars),
            file_secret_settings,
        )

    @property
    def http_on_loopback(self) -> bool:
        """Whether only this machine can reach the HTTP port (then the API may run without a token)."""
        host = self.http_host.strip("[]").lower()
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @property
    def embedded_redis(self) -> bool:
        return not self.redis_url

    def agent_modules(self) -> list[str]:
        return [m.strip() for m in self.agents.split(",") if m.strip()]

    def channel_modules(self) -> list[str]:
        return [m.strip() for m in self.channels.split(",") if m.strip()]

    @property
    def lease_ms(self) -> int:
        """How long a worker owns a thread without renewing: well under the claim timeout."""
        return max(200, int(self.claim_timeout * 1000 / 3))


class _AgentSecrets(PydanticBaseSettingsSource):
    """`webhook_secrets` from the FRONTDESK_WEBHOOK_SECRET_<AGENT> variables of one source."""

    def __init__(self, settings_cls: type[BaseSettings], variables: Mapping[str, str | None]) -> None:
        super().__init__(settings_cls)
        self.variables = variables

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # one field only, filled by __call__

    def __call__(self) -> dict[str, Any]:
        prefix = WEBHOOK_SECRET_PREFIX.lower()
        secrets = {
            name[len(prefix) :].lower(): value
            for name, value in self.variables.items()
            if name.lower().startswith(prefix) and name[len(prefix) :] and value
        }
        return {"webhook_secrets": secrets} if secrets else {}


class PluginSettings(BaseSettings):
    """Base of a channel's or an agent's own settings: subclass it with an `env_prefix` and fields.

    Built by `plugin_settings`, from the same environment and .env as the core settings.
    """

    # .env holds every other component's variables too: ignore what is not ours.
    model_config = SettingsConfigDict(extra="ignore")


P = TypeVar("P", bound=BaseSettings)


def plugin_settings(cls: type[P], settings: Settings) -> P:
    """A plugin's settings class, read as `settings` were (same .env); a bad value is a ConfigError naming it."""
    try:
        return cls(_env_file=settings._env_file)
    except ValidationError as exc:
        first = exc.errors()[0]
        # A field is read as <env_prefix><name>; one with an alias as the alias alone, which is what `loc` holds then.
        loc = [str(part) for part in first["loc"]]
        prefix = str(cls.model_config.get("env_prefix", "")) if loc and loc[0] in cls.model_fields else ""
        name = (prefix + ".".join(loc)).upper() or cls.__name__
        raise ConfigError(f"{name}: {first['msg']} (got {first.get('input')!r})") from None
