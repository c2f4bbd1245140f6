"""compose.yaml can start from a fresh clone: every host file it mounts is tracked by git (an
ignored or forgotten one is missing after `git clone`), and the routing config it mounts is
valid. `make image-test` checks the same mounts before it builds."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from deskbell.cli import app

ROOT = Path(__file__).parent.parent.parent


def mounted_host_files() -> list[str]:
    """The `./path:/container/path[:mode]` volumes of every service in compose.yaml."""
    compose: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    found: set[str] = set()
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith((".", "/")):
                found.add(source)
    return sorted(found)


def test_compose_mounts_a_config_file() -> None:
    assert "./deploy/deskbell.yaml" in mounted_host_files()


def test_every_file_compose_mounts_is_tracked() -> None:
    inside = subprocess.run(
        ["git", "rev-parse", "--is-inside-work-tree"], cwd=ROOT, capture_output=True, check=False
    )
    if inside.returncode != 0:
        pytest.skip("not a git checkout")
    for path in mounted_host_files():
        tracked = subprocess.run(
            ["git", "ls-files", "--error-unmatch", path], cwd=ROOT, capture_output=True, check=False
        )
        assert tracked.returncode == 0, f"compose.yaml mounts {path}, which git does not track"


def test_the_mounted_config_is_valid() -> None:
    result = CliRunner().invoke(app, ["config", "check", str(ROOT / "deploy" / "deskbell.yaml")])
    assert result.exit_code == 0, result.output
