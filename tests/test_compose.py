"""docker-compose.yml and the Dockerfile cannot run here (no Docker, no GPU); this checks what can go wrong
without running them: the services and their order, the settings every COLDLABEL_* variable sets, and the
pieces the brief pins (noeviction, GPU reservation, model, prefix caching, one-shot migration)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from coldlabel.config import _parse_scalar, load_settings
from coldlabel.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_services_and_start_order(compose):
    services = compose["services"]
    assert set(services) == {"redis", "postgres", "migrate", "vllm", "worker", "flower"}
    worker = services["worker"]
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert worker["depends_on"]["vllm"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"
    assert services["flower"]["depends_on"]["redis"]["condition"] == "service_healthy"
    for name in ("redis", "postgres", "vllm"):
        assert "healthcheck" in services[name], f"{name} needs a healthcheck for depends_on: service_healthy"


def test_commands(compose):
    s = compose["services"]
    assert s["migrate"]["command"] == ["coldlabel", "db", "upgrade"]
    assert s["worker"]["command"][:2] == ["coldlabel", "worker"]
    assert s["flower"]["command"][:4] == ["celery", "-A", "workers.app", "flower"]
    redis_cmd = s["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--maxmemory-policy") + 1] == "noeviction"
    vllm = s["vllm"]
    assert vllm["image"].startswith("vllm/vllm-openai")
    args = vllm["command"]
    assert args[0] == "Qwen/Qwen3-4B-Instruct-2507" and "--enable-prefix-caching" in args
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] for d in devices)
    # The image that builds the coldlabel code is the one the other services run.
    assert s["migrate"]["image"] == s["worker"]["image"] == s["flower"]["image"]
    assert s["migrate"]["build"] == "."


@pytest.mark.parametrize("service", ["migrate", "worker", "flower"])
def test_every_coldlabel_variable_is_a_real_setting(compose, service):
    env = {k: v for k, v in _env(compose["services"][service]).items() if k.startswith("COLDLABEL_")}
    assert env, f"{service} gets no COLDLABEL_* settings"
    settings = load_settings(environ=env)  # unknown keys and wrong types raise ConfigError
    dump = settings.model_dump()
    for name, raw in env.items():
        node = dump
        for part in name[len("COLDLABEL_"):].lower().split("__"):
            node = node[part]
        assert node == _parse_scalar(raw), f"{name}={raw!r} did not set its setting"
    assert settings.workers.broker_url.startswith("redis://redis:")
    assert settings.store_url().startswith("postgresql+psycopg://")
    assert settings.endpoint().base_url == "http://vllm:8000/v1"
    assert settings.endpoint().model == compose["services"]["vllm"]["command"][0]


def test_a_misspelt_variable_would_be_caught():
    """The check above can fail: a typo in a variable name is a ConfigError."""
    with pytest.raises(ConfigError, match="brokerurl"):
        load_settings(environ={"COLDLABEL_WORKERS__BROKERURL": "redis://redis:6379/0"})


def test_dockerfile():
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    torch_line = next(line for line in text.splitlines() if "torch==" in line)
    assert "torch==2.13.0" in torch_line and "download.pytorch.org/whl/cpu" in torch_line
    assert "pip install '.[monitor]'" in text
    assert text.index("torch==2.13.0") < text.index(".[monitor]")
