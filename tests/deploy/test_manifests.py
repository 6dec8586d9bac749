"""The deployment files, checked without a cluster or a Docker engine.

Kubernetes manifests are validated against the API's own JSON schemas (bundled
by `kubernetes-validate`, strict: an unknown field fails), the KEDA ScaledObject
against a schema of its documented fields, and all of them against each other
and the code: probes name ports that exist, every Deployment has a budget, the
scaler watches the streams `gateway.store.keys` names, and every FRONTDESK_* variable
is a setting. The Dockerfile and the compose file get a structural reading.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from gateway.settings import WEBHOOK_SECRET_PREFIX, Settings
from gateway.store.keys import Keys
from gateway.store.threads import GROUP

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="pip install -e '.[test]' (kubernetes-validate)"
)
jsonschema = pytest.importorskip("jsonschema")

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.30"  # the oldest release these manifests promise to fit
ROLES = {"serve", "worker", "smtp"}
# Read by KEDA's scaler from the worker's environment, not by frontdesk.
SCALER_ENV = {"REDIS_ADDRESS", "REDIS_PASSWORD"}


def _known_env() -> set[str]:
    names = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        names.update(getattr(alias, "choices", [alias] if isinstance(alias, str) else []))
    return names


KNOWN_ENV = _known_env()


def _is_setting(name: str) -> bool:
    return name in KNOWN_ENV or name.startswith(WEBHOOK_SECRET_PREFIX)


# ---------------------------------------------------------------- Kubernetes


def _kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def _documents() -> list[dict]:
    """Every manifest, the Secret example included (it is applied by hand, not by kustomize)."""
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _of(kind: str) -> list[dict]:
    return [d for d in _documents() if d["kind"] == kind]


def _one(kind: str, name: str) -> dict:
    [doc] = [d for d in _of(kind) if d["metadata"]["name"] == name]
    return doc


def _config() -> dict[str, str]:
    return _one("ConfigMap", "frontdesk-config")["data"]


def test_kustomize_applies_every_manifest_but_the_secret_example():
    listed = set(_kustomization()["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present - {"secret.example.yaml"}


BUILT_IN = [d for d in _documents() if d["apiVersion"] != "keda.sh/v1alpha1"]


@pytest.mark.parametrize("doc", BUILT_IN, ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_manifest_fits_the_kubernetes_schema(doc):
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_manifests_hold_every_part():
    kinds = {(d["kind"], d["metadata"]["name"]) for d in _documents()}
    for part in ("gateway", "worker", "smtp"):
        assert ("Deployment", f"frontdesk-{part}") in kinds
        assert ("Service", f"frontdesk-{part}") in kinds
        assert ("PodDisruptionBudget", f"frontdesk-{part}") in kinds
    assert ("HorizontalPodAutoscaler", "frontdesk-gateway") in kinds
    assert ("ScaledObject", "frontdesk-worker") in kinds
    assert ("ConfigMap", "frontdesk-config") in kinds
    assert ("Secret", "frontdesk-secrets") in kinds


def _container(deployment: dict) -> dict:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("name", ["frontdesk-gateway", "frontdesk-worker", "frontdesk-smtp"])
def test_each_deployment_is_probed_sized_and_drained(name):
    deployment = _one("Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    assert container["args"][0] in ROLES
    ports = {p["name"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in ports
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    # The process must get its whole shutdown grace (plus a preStop pause) before SIGKILL.
    pause = int(container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", ["sleep", "0"])[1])
    assert pod["terminationGracePeriodSeconds"] > float(_config()["FRONTDESK_SHUTDOWN_GRACE"]) + pause
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    sources = {s.get("configMapRef", s.get("secretRef"))["name"] for s in container["envFrom"]}
    assert sources == {"frontdesk-config", "frontdesk-secrets"}
    image = container["image"]
    assert ":" in image and not image.endswith(":latest")
    assert image.split(":")[0] in {i["name"] for i in _kustomization()["images"]}
    assert _kustomization()["images"][0]["newTag"] != "latest"


def test_probe_ports_match_the_settings():
    config = _config()
    ports = {
        "frontdesk-gateway": int(config["FRONTDESK_HTTP_PORT"]),
        "frontdesk-worker": int(config["FRONTDESK_OPS_PORT"]),
        "frontdesk-smtp": int(config["FRONTDESK_OPS_PORT"]),
    }
    for name, port in ports.items():
        container = _container(_one("Deployment", name))
        named = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert named[container["livenessProbe"]["httpGet"]["port"]] == port
    smtp = {p["name"]: p["containerPort"] for p in _container(_one("Deployment", "frontdesk-smtp"))["ports"]}
    assert smtp["smtp"] == int(config["FRONTDESK_SMTP_PORT"])


def _selects(selector: dict, deployment: dict) -> bool:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(k) == v for k, v in selector.items())


def test_budgets_and_services_select_their_pods():
    for kind in ("PodDisruptionBudget", "Service"):
        for doc in _of(kind):
            target = _one("Deployment", doc["metadata"]["name"])
            selector = doc["spec"]["selector"]
            assert _selects(selector.get("matchLabels", selector), target)
            assert target["spec"]["selector"]["matchLabels"] == {
                k: v
                for k, v in target["spec"]["template"]["metadata"]["labels"].items()
                if k in target["spec"]["selector"]["matchLabels"]
            }
    for service in _of("Service"):
        ports = {p["name"] for p in _container(_one("Deployment", service["metadata"]["name"]))["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports


def test_autoscalers_own_the_replica_counts():
    hpa = _one("HorizontalPodAutoscaler", "frontdesk-gateway")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "frontdesk-gateway"}
    assert hpa["spec"]["minReplicas"] >= 2
    scaled = _one("ScaledObject", "frontdesk-worker")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "frontdesk-worker"
    # Two autoscalers on one Deployment fight; a `replicas` field would reset the count on every apply.
    assert all(h["spec"]["scaleTargetRef"]["name"] != "frontdesk-worker" for h in _of("HorizontalPodAutoscaler"))
    assert "replicas" not in _one("Deployment", "frontdesk-gateway")["spec"]
    assert "replicas" not in _one("Deployment", "frontdesk-worker")["spec"]
    # Budgets leave room to drain a node: more pods than the budget must keep.
    assert scaled["spec"]["minReplicaCount"] > 1


def test_config_and_secret_name_only_settings():
    config, secret = _config(), _one("Secret", "frontdesk-secrets")["stringData"]
    for name in [*config, *secret]:
        assert _is_setting(name) or name in SCALER_ENV, f"{name} is not a frontdesk setting"
    # And the values are ones the settings accept.
    Settings(_env_file=None, **config, **{k: v for k, v in secret.items() if k not in SCALER_ENV})


# KEDA's ScaledObject (a CRD: no schema ships with Kubernetes). Its documented fields,
# https://keda.sh/docs/latest/reference/scaledobject-spec/ and .../scalers/redis-streams/.
_REDIS_STREAMS_METADATA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["stream"],
    "properties": {
        name: {"type": "string"}
        for name in (
            "address", "addressFromEnv", "host", "hostFromEnv", "port", "portFromEnv",
            "usernameFromEnv", "passwordFromEnv", "stream", "consumerGroup", "pendingEntriesCount",
            "streamLength", "lagCount", "activationLagCount", "enableTLS", "unsafeSsl", "databaseIndex",
        )
    },
    "anyOf": [{"required": ["address"]}, {"required": ["addressFromEnv"]}, {"required": ["host"]}, {"required": ["hostFromEnv"]}],
    "dependentRequired": {"lagCount": ["activationLagCount", "consumerGroup"], "pendingEntriesCount": ["consumerGroup"]},
}  # fmt: skip
SCALED_OBJECT_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        k: {"type": "string"} for k in ("name", "kind", "apiVersion", "envSourceContainerName")
                    },
                },
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {"type": "object", "required": ["failureThreshold", "replicas"]},
                "advanced": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {"name": {"type": "string"}, "behavior": {"type": "object"}},
                        },
                        "scalingModifiers": {"type": "object"},
                    },
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metadata": {"type": "object"},
                            "authenticationRef": {"type": "object", "required": ["name"]},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                        },
                        "if": {"properties": {"type": {"const": "redis-streams"}}},
                        "then": {"properties": {"metadata": _REDIS_STREAMS_METADATA}},
                    },
                },
            },
        },
    },
}


def test_scaled_object_fits_keda_documented_fields():
    scaled = _one("ScaledObject", "frontdesk-worker")
    jsonschema.Draft202012Validator(SCALED_OBJECT_SCHEMA).validate(scaled)
    spec = scaled["spec"]
    assert spec["minReplicaCount"] <= spec["maxReplicaCount"]


def test_scaled_object_catches_a_misspelt_field():
    """The schema is strict enough to matter."""
    scaled = json.loads(json.dumps(_one("ScaledObject", "frontdesk-worker")))
    scaled["spec"]["triggers"][0]["metadata"]["consumergroup"] = "workers"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCALED_OBJECT_SCHEMA).validate(scaled)


def test_scaler_watches_every_inbound_stream_of_the_workers_group():
    config = _config()
    keys = Keys(config["FRONTDESK_KEY_PREFIX"], int(config["FRONTDESK_PARTITIONS"]))
    triggers = _one("ScaledObject", "frontdesk-worker")["spec"]["triggers"]
    assert all(t["type"] == "redis-streams" for t in triggers)
    assert sorted(t["metadata"]["stream"] for t in triggers) == sorted(keys.inbound(p) for p in range(keys.partitions))
    assert {t["metadata"]["consumerGroup"] for t in triggers} == {GROUP}
    assert all("pendingEntriesCount" in t["metadata"] or "lagCount" in t["metadata"] for t in triggers)
    # The scaler reads the address and password from the worker's own environment.
    secret = _one("Secret", "frontdesk-secrets")["stringData"]
    for trigger in triggers:
        assert trigger["metadata"]["addressFromEnv"] in config
        assert trigger["metadata"]["passwordFromEnv"] in secret


# ---------------------------------------------------------------- Dockerfile


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        word, _, rest = text.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in instructions:
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def test_dockerfile_is_multi_stage_slim_and_pinned():
    stages = _stages(_instructions(DEPLOY / "Dockerfile"))
    assert len(stages) >= 2
    names = []
    for stage in stages:
        image, _, name = stage[0][1].partition(" AS ")
        image = image.replace(" as ", " ").split()[-1]
        assert ":" in image and not image.endswith(":latest"), f"{image}: pin a tag"
        assert "slim" in image or "distroless" in image
        names.append(name.strip())
    final = stages[-1]
    assert any(i == "COPY" and f"--from={names[0]}" in a for i, a in final), (
        "the runtime stage takes the build's output"
    )


def test_dockerfile_runs_frontdesk_unprivileged_with_a_healthcheck():
    final = _stages(_instructions(DEPLOY / "Dockerfile"))[-1]
    args = {}
    for instruction, rest in final:
        args.setdefault(instruction, []).append(rest)
    user = args["USER"][-1].split(":")[0]
    assert user not in ("root", "0")
    assert json.loads(args["ENTRYPOINT"][-1]) == ["frontdesk"]
    assert json.loads(args["CMD"][-1])[0] in ROLES
    [healthcheck] = args["HEALTHCHECK"]
    assert " CMD " in f" {healthcheck} "
    assert {"8000", "2525", "9090"} <= set(" ".join(args["EXPOSE"]).split())
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(args["ENV"])))
    for name in env:
        if name.startswith("FRONTDESK_"):
            assert _is_setting(name), name


def test_dockerfile_installs_the_project_from_the_repository():
    instructions = _instructions(DEPLOY / "Dockerfile")
    build = _stages(instructions)[0]
    assert any(i == "RUN" and re.search(r"pip install [\"']?\.(\[|[\"']?\s|$)", a + " ") for i, a in build)
    repo = DEPLOY.parent
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for instruction, rest in instructions:
        if instruction == "COPY" and "--from=" not in rest:
            *sources, _ = rest.split()
            for source in sources:
                assert (repo / source).exists(), f"COPY {source}: not in the repository"
                # Everything is ignored but what is re-included: each source must be.
                assert f"!{source.rstrip('/')}" in ignored or f"!{source.rstrip('/')}/" in ignored, source


def test_image_healthcheck_script_is_stdlib_only():
    source = (DEPLOY / "healthcheck.py").read_text()
    imports = set(re.findall(r"^(?:import|from) (\w+)", source, re.M))
    assert imports <= {"os", "sys", "urllib", "__future__"}


# ---------------------------------------------------------------- docker compose


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def _interpolate(value: str) -> str:
    """What compose makes of ${VAR:-default} and ${VAR:?message} with nothing set."""
    return re.sub(
        r"\$\{(\w+)(?::?[-?]([^}]*))?\}", lambda m: "secret" if "?" in m.group(0) else (m.group(2) or ""), str(value)
    )


def test_compose_has_redis_with_an_append_only_file():
    redis = _compose()["services"]["redis"]
    command = [str(part) for part in redis["command"]]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    assert ":latest" not in redis["image"] and ":" in redis["image"]
    assert redis["healthcheck"]["test"]


@pytest.mark.parametrize("service, role", [("gateway", "serve"), ("worker", "worker"), ("smtp", "smtp")])
def test_compose_runs_each_role_with_the_settings(service, role):
    compose = _compose()
    spec = compose["services"][service]
    assert spec["command"] == [role]
    assert spec["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / spec["build"]["context"] / spec["build"]["dockerfile"]).resolve() == (
        DEPLOY / "Dockerfile"
    ).resolve()
    env = {k: _interpolate(v) for k, v in spec["environment"].items()}
    assert env["FRONTDESK_REDIS_URL"].startswith("redis://") and "@redis:6379" in env["FRONTDESK_REDIS_URL"]
    for name in env:
        assert _is_setting(name), f"{name} is not a frontdesk setting"
    Settings(_env_file=None, **env)
    assert spec["depends_on"]["redis"]["condition"] == "service_healthy"
    assert spec["healthcheck"]["test"]
    grace = int(str(spec["stop_grace_period"]).rstrip("s"))
    assert grace > float(env["FRONTDESK_SHUTDOWN_GRACE"])


def test_compose_runs_two_workers():
    services = _compose()["services"]
    workers = [name for name, spec in services.items() if spec.get("command") == ["worker"]]
    count = sum(services[name].get("deploy", {}).get("replicas", 1) for name in workers)
    assert count >= 2


def test_env_example_names_only_settings():
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        name = line.lstrip("# ").partition("=")[0]
        if "=" in line and name.isupper():
            assert _is_setting(name) or name == "REDIS_PASSWORD", name
