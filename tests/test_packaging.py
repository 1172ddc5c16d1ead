"""pyproject.toml's explicit package list: every folder of the library is in the wheel, the
command line installs as chunkstore_cli, and nothing from a checkout's other folders does."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def installed_folder(package: str) -> Path:
    top, _, rest = package.partition(".")
    folder = ROOT / SETUPTOOLS["package-dir"].get(top, top)
    return folder.joinpath(*rest.split(".")) if rest else folder


def test_every_folder_of_the_library_is_listed():
    listed = set(SETUPTOOLS["packages"])
    on_disk = {
        ".".join(folder.relative_to(ROOT).parts)
        for folder in [ROOT / "chunkstore", *(ROOT / "chunkstore").rglob("*")]
        if folder.is_dir() and folder.name != "__pycache__"
    }
    assert on_disk <= listed, f"add to [tool.setuptools] packages: {sorted(on_disk - listed)}"
    assert all(installed_folder(package).is_dir() for package in listed)


def test_the_command_line_installs_as_chunkstore_cli_and_tests_do_not_install():
    assert installed_folder("chunkstore_cli") == ROOT / "cli"
    assert {package.partition(".")[0] for package in SETUPTOOLS["packages"]} == {"chunkstore", "chunkstore_cli"}
    module, _, function = PYPROJECT["project"]["scripts"]["chunkstore"].partition(":")
    assert module.startswith("chunkstore_cli.")
    assert callable(getattr(importlib.import_module(module), function))
