"""Settings: the per-agent webhook secrets come from .env as well as from the environment."""

from __future__ import annotations

import os

import pytest

from gateway.settings import WEBHOOK_SECRET_PREFIX, Settings


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
