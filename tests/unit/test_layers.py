"""The layers import inwards only, read from the source (every import, `TYPE_CHECKING` ones
too): process start-up (`deskbell.cli`, and the server and command libraries it runs on) is
the outermost layer and nothing in the service imports it; routing knows no channel; a channel
knows nothing of delivery (it reports, `delivery/` retries)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
SERVICE = ("api", "delivery", "storage", "channels", "routing", "config")


def module_name(path: Path, root: Path = SRC) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, root: Path = SRC) -> set[str]:
    """Every module `path` imports, relative imports resolved; for `from a import b`, both `a`
    and `a.b` (b may be a submodule)."""
    package = module_name(path if path.name == "__init__.py" else path.parent, root)
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = parts[: len(parts) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def modules_under(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (SRC / "deskbell" / package).rglob("*.py"))


def offenders(
    paths: list[Path], forbidden: tuple[str, ...], root: Path = SRC
) -> dict[str, list[str]]:
    """{module: the forbidden modules it imports} for every path that imports one."""
    found = {
        module_name(path, root): sorted(
            name for name in imported(path, root) if any(_within(name, f) for f in forbidden)
        )
        for path in paths
    }
    return {module: names for module, names in found.items() if names}


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@pytest.mark.parametrize(
    ("source", "caught"),
    [
        ("from ..cli import serving", True),
        ("from .. import cli", True),
        ("from deskbell import cli", True),
        ("import deskbell.cli.serving", True),
        ("from deskbell.cli.serving import settle_heap", True),
        ("if TYPE_CHECKING:\n    from deskbell.cli import app", True),
        ("from . import cli", False),  # deskbell.api.cli, not the start-up package
        ("from ..clinic import x", False),
        ("from deskbell.client import x", False),
    ],
)
def test_the_reader_sees_every_form_of_import(tmp_path: Path, source: str, caught: bool) -> None:
    """The guards below are only as good as this reader."""
    probe = tmp_path / "deskbell" / "api" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(f"from __future__ import annotations\n{source}\n", "utf-8")
    found = offenders([probe], ("deskbell.cli",), root=tmp_path)
    assert bool(found) is caught, (source, found)


def test_the_service_does_not_import_process_start_up() -> None:
    assert modules_under(*SERVICE)
    assert offenders(modules_under(*SERVICE), ("deskbell.cli",)) == {}


def test_server_and_command_libraries_only_in_cli() -> None:
    """uvicorn (the server) and Typer (the command line) are start-up: only `deskbell.cli`
    runs them."""
    outside = [p for p in (SRC / "deskbell").rglob("*.py") if "cli" not in p.parts]
    assert offenders(outside, ("uvicorn", "typer")) == {}


def test_routing_does_not_import_channels() -> None:
    assert offenders(modules_under("routing"), ("deskbell.channels",)) == {}


def test_channels_do_not_import_delivery() -> None:
    assert offenders(modules_under("channels"), ("deskbell.delivery",)) == {}
