"""What the README and docs promise agrees with the code: exit codes, the
command table, configuration defaults (example file, docs table, pydantic
models) and every relative link."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from microexpr import config as cfg
from microexpr.cli import COMMANDS
from microexpr.errors import ExitCode

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
EXAMPLE = ROOT / "provisioning" / "config.example.toml"
CONFIG_DOC = ROOT / "docs" / "configuration.md"


def _section(text: str, heading: str) -> str:
    """The body of a Markdown section, up to the next heading of any level."""
    match = re.search(rf"^#+ {re.escape(heading)}\n(.*?)(?=^#)", text, re.M | re.S)
    assert match, f"README has no section {heading!r}"
    return match.group(1)


def _pydantic_default(key: str) -> Any:
    """The field default as the file spells it: an unset optional path is ""."""
    section, _, name = key.rpartition(".")
    model: type[BaseModel] = cfg.Config
    if section:
        annotation = cfg.Config.model_fields[section].annotation
        assert isinstance(annotation, type) and issubclass(annotation, BaseModel)
        model = annotation
    default = model.model_fields[name].default
    return "" if default is None else default


def _flat(data: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{inner}": v for inner, v in value.items()})
        else:
            flat[key] = value
    return flat


def test_readme_exit_codes_are_errors_exitcode() -> None:
    table = _section(README.read_text(encoding="utf-8"), "Exit codes")
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", table, re.M)}
    assert documented == {int(code) for code in ExitCode}


def test_readme_command_table_is_cli_commands() -> None:
    table = _section(README.read_text(encoding="utf-8"), "Command line")
    documented = re.findall(r"^\| `microexpr ([a-z-]+)[^`]*` \|", table, re.M)
    assert documented == [name for name, _module, _help in COMMANDS]


def test_example_file_value_of_every_key_is_the_model_default() -> None:
    """Key by key, with the TOML type: ``fps = 0`` for a float field would load
    (ints are accepted) yet tell the reader the wrong type."""
    example = _flat(tomllib.loads(EXAMPLE.read_text(encoding="utf-8")))
    assert set(example) == set(cfg.iter_keys())
    wrong = {key: (example[key], _pydantic_default(key)) for key in example
             if example[key] != _pydantic_default(key) or type(example[key]) is not type(_pydantic_default(key))}
    assert not wrong, f"config.example.toml value != default (file, model): {wrong}"


def test_configuration_doc_default_column_is_the_model_default() -> None:
    rows = re.findall(r"^\| `([a-z_]+(?:\.[a-z_]+)?)` \| ([^|]*) \|", CONFIG_DOC.read_text(encoding="utf-8"), re.M)
    documented = {}
    for key, cell in rows:
        first = re.match(r'\s*("[^"]*"|\S+)', cell)  # '"" = host name' → ""
        assert first, f"docs/configuration.md: no default for {key}"
        documented[key] = tomllib.loads(f"v = {first.group(1)}")["v"]
    assert set(documented) == set(cfg.iter_keys())
    wrong = {key: (value, _pydantic_default(key)) for key, value in documented.items()
             if value != _pydantic_default(key) or type(value) is not type(_pydantic_default(key))}
    assert not wrong, f"docs/configuration.md default != model default (doc, model): {wrong}"


@pytest.mark.parametrize("doc", [README, *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name)
def test_relative_links_resolve(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    broken = [t for t in targets
              if not re.match(r"[a-z]+:", t) and not t.startswith("#")
              and not (doc.parent / t.split("#")[0]).exists()]
    assert not broken, f"{doc.name}: links to missing files: {broken}"
