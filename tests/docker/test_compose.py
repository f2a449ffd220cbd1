"""docker/compose.yaml cannot run here (no Docker engine): check it against the code instead."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from service.cli import cli
from service.config import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "docker" / "compose.yaml"
runner = CliRunner()


def _services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_every_learnstream_service_runs_a_real_command_with_real_options() -> None:
    checked = 0
    for name, service in _services().items():
        if service.get("image") != "learnstream:latest":
            continue
        command = service["command"]
        help_text = runner.invoke(cli, [command[0], "--help"])
        assert help_text.exit_code == 0, (name, help_text.output)
        for option in (part for part in command[1:] if part.startswith("-")):
            assert option in help_text.output, f"{name}: {option} is not an option of {command[0]}"
        checked += 1
    assert checked == 5  # api, ingest, learner (with the sweep), learners, predict


def test_every_setting_passed_is_one_the_service_reads() -> None:
    fields = {f"LEARNSTREAM_{name.upper()}" for name in Settings.model_fields}
    for name, service in _services().items():
        for variable in service.get("environment", {}):
            if variable.startswith("LEARNSTREAM_"):
                assert variable in fields, f"{name}: {variable} is not a setting"


def test_learners_scale_out_and_exactly_one_runs_the_sweep() -> None:
    services = _services()
    learners = [s for s in services.values() if "learn" in s.get("command", [])]
    sweeping = [s for s in learners if "--beat" in s["command"]]
    assert len(sweeping) == 1 and sweeping[0]["deploy"]["replicas"] == 1
    assert sum(s["deploy"]["replicas"] for s in learners) >= 2


def test_optional_settings_default_to_values_the_service_accepts() -> None:
    """``${VAR:-default}`` passes the default when the operator sets nothing (an empty
    webhook URL and secret: the webhook is off), and the service must start with it."""
    import re

    environment = _services()["api"]["environment"]
    defaults = {}
    for variable, value in environment.items():
        match = re.fullmatch(r"\$\{\w+:-(.*)\}", str(value))
        if variable.startswith("LEARNSTREAM_") and match:
            defaults[variable.removeprefix("LEARNSTREAM_").lower()] = match.group(1)
    assert {"webhook_url", "webhook_secret"} <= set(defaults)
    settings = Settings(home=Path("/tmp/compose-check"), **defaults)
    assert settings.webhook_url is None and settings.webhook_secret is None
