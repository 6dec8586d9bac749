"""Settings: per-agent webhook secrets from .env and the environment; plugins' own settings."""

from __future__ import annotations

import os

import pytest
from pydantic_settings import SettingsConfigDict

from agents.deploybot import DeploybotSettings
from agents.helpdesk import HelpdeskSettings
from gateway.errors import ConfigError
from gateway.settings import WEBHOOK_SECRET_PREFIX, PluginSettings, Settings, plugin_settings


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A directory of our own with no webhook secret in the environment: .env is read from here."""
    for name in list(os.environ):
        if name.startswith("FRONTDESK_WEBHOOK_SECRET"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _secrets(settings: Settings) -> dict[str, str]:
    return {agent: secret.get_secret_value() for agent, secret in settings.webhook_secrets.items()}


def test_per_agent_secrets_are_read_from_dotenv(workdir):
    (workdir / ".env").write_text(
        "FRONTDESK_WEBHOOK_SECRET=whsec_all\n"
        f"{WEBHOOK_SECRET_PREFIX}BILLING=whsec_billing\n"
        f"{WEBHOOK_SECRET_PREFIX}SUPPORT=whsec_support\n"
    )
    settings = Settings()
    assert settings.webhook_secret is not None and settings.webhook_secret.get_secret_value() == "whsec_all"
    assert _secrets(settings) == {"billing": "whsec_billing", "support": "whsec_support"}


def test_the_environment_beats_dotenv_agent_by_agent(workdir, monkeypatch):
    (workdir / ".env").write_text(
        f"{WEBHOOK_SECRET_PREFIX}BILLING=whsec_from_file\n{WEBHOOK_SECRET_PREFIX}SUPPORT=whsec_support\n"
    )
    monkeypatch.setenv(f"{WEBHOOK_SECRET_PREFIX}BILLING", "whsec_from_env")
    monkeypatch.setenv(f"{WEBHOOK_SECRET_PREFIX}OPS", "whsec_ops")
    assert _secrets(Settings()) == {"billing": "whsec_from_env", "support": "whsec_support", "ops": "whsec_ops"}


def test_no_dotenv_file_means_the_environment_only(workdir, monkeypatch):
    (workdir / ".env").write_text(f"{WEBHOOK_SECRET_PREFIX}BILLING=whsec_from_file\n")
    monkeypatch.setenv(f"{WEBHOOK_SECRET_PREFIX}OPS", "whsec_ops")
    monkeypatch.setenv(f"{WEBHOOK_SECRET_PREFIX}EMPTY", "")  # set but empty: no secret
    assert _secrets(Settings(_env_file=None)) == {"ops": "whsec_ops"}


def test_secrets_given_in_code_win(workdir, monkeypatch):
    monkeypatch.setenv(f"{WEBHOOK_SECRET_PREFIX}BILLING", "whsec_from_env")
    settings = Settings(_env_file=None, webhook_secrets={"billing": "whsec_given"})
    assert _secrets(settings) == {"billing": "whsec_given"}


# ---------------------------------------------------------------- plugin settings


class PagerSettings(PluginSettings):
    """A plugin's own settings, as a third-party channel or agent declares them."""

    model_config = SettingsConfigDict(env_prefix="PAGER_")

    url: str | None = None
    retries: int = 3


def test_plugin_settings_read_the_same_dotenv_as_the_core(workdir, monkeypatch):
    (workdir / ".env").write_text("FRONTDESK_MODEL=demo\nPAGER_URL=https://pager.example/\nPAGER_RETRIES=5\n")
    monkeypatch.setenv("PAGER_RETRIES", "7")  # the environment beats .env here too
    pager = plugin_settings(PagerSettings, Settings())
    assert (pager.url, pager.retries) == ("https://pager.example/", 7)


def test_core_settings_without_dotenv_give_plugin_settings_without_it(workdir):
    (workdir / ".env").write_text("PAGER_URL=https://pager.example/\n")
    assert plugin_settings(PagerSettings, Settings(_env_file=None)).url is None
    other = workdir / "other.env"
    other.write_text("PAGER_URL=https://other.example/\n")
    assert plugin_settings(PagerSettings, Settings(_env_file=other)).url == "https://other.example/"


def test_a_bad_plugin_value_is_a_config_error_naming_the_variable(workdir, monkeypatch):
    monkeypatch.setenv("PAGER_RETRIES", "many")
    with pytest.raises(ConfigError, match="PAGER_RETRIES"):
        plugin_settings(PagerSettings, Settings(_env_file=None))


def test_the_sample_agents_settings_keep_their_variable_names(workdir, monkeypatch):
    (workdir / ".env").write_text("FRONTDESK_DEPLOYBOT_URL=http://deploy.test/\n")
    monkeypatch.setenv("FRONTDESK_HELPDESK_FAQ", str(workdir / "faq.yaml"))
    settings = Settings()
    assert plugin_settings(DeploybotSettings, settings).url == "http://deploy.test/"
    assert plugin_settings(HelpdeskSettings, settings).faq == workdir / "faq.yaml"
    assert "deploybot_url" not in Settings.model_fields and "helpdesk_faq" not in Settings.model_fields
