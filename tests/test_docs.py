"""What the README and docs promise agrees with the code: exit codes, the
command table, configuration defaults (example file, docs table, pydantic
models), every relative link, the flags of every documented command line,
the exit codes named anywhere in the docs, the make targets, the install
script's options and the environment variables."""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from microexpr import config as cfg
from microexpr.cli import COMMANDS, build_parser
from microexpr.errors import ExitCode

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
EXAMPLE = ROOT / "provisioning" / "config.example.toml"
CONFIG_DOC = ROOT / "docs" / "configuration.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]


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
    # One deliberate exception: the installed example watches the first camera, so the
    # unit starts (issue 13); the built-in default stays "" (run --source must name one).
    assert example.pop("source.uri") == "0" and _pydantic_default("source.uri") == ""
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


# --------------------------------------------------------------------------
# Command lines, exit codes, make targets, install options, environment


def _global_options() -> set[str]:
    return {o for a in build_parser()._actions for o in a.option_strings}


def _command_options() -> dict[str, set[str]]:
    """Every option string each sub-command accepts (global ones included)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    common = _global_options()
    return {name: common | {o for a in sp._actions for o in a.option_strings} for name, sp in sub.choices.items()}


def _code(text: str) -> list[str]:
    """Inline code spans and the lines of fenced blocks: where commands are written."""
    spans: list[str] = []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            spans.append(line)
        else:
            spans.extend(re.findall(r"`([^`]+)`", line))
    return spans


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_documented_command_lines_use_real_flags(doc: Path) -> None:
    """``microexpr eval LABELS --protocol samm5`` in a doc: ``--protocol`` must be
    an option of ``eval`` (a renamed or removed flag leaves the doc lying)."""
    options = _command_options()
    names = "|".join(sorted(map(re.escape, options), key=len, reverse=True))
    wrong = []
    for code in _code(doc.read_text(encoding="utf-8")):
        for match in re.finditer(rf"\bmicroexpr (?:-\S+ )*({names})\b([^#|]*)", code):
            flags = re.findall(r"(?<![\w/.-])(--?[a-zA-Z][\w-]*)", match.group(2))
            wrong += [f"{match.group(1)} {flag}" for flag in flags if flag not in options[match.group(1)]]
    assert not wrong, f"{doc.name}: flags the command does not have: {wrong}"


#: Docs whose option table (rows starting "| `--") describes one command.
_OPTION_TABLES = {"service.md": "run", "model.md": "provision-model"}


@pytest.mark.parametrize(("doc", "command"), sorted(_OPTION_TABLES.items()))
def test_option_tables_name_real_flags(doc: str, command: str) -> None:
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    rows = re.findall(r"^\| (`--.*)$", text, re.M)
    flags = {flag for row in rows for flag in re.findall(r"`(--[a-z][\w-]*)", row.split(" | ")[0])}
    assert flags, f"docs/{doc}: no option table found"
    accepted = _command_options()[command]
    assert flags <= accepted, f"docs/{doc}: not options of {command}: {flags - accepted}"
    if command == "run":  # the daemon's table is its complete option list
        own = {o for o in accepted if o.startswith("--")} - _global_options()
        assert own <= flags, f"docs/{doc}: run options missing from the table: {own - flags}"


def _numbers(cell: str) -> list[int]:
    """The exit codes in a table cell: "66 / 65", "78 — …", "error | 65"; not words like "5 s"."""
    return [int(n) for n in re.findall(r"(?<![\w.])(\d{1,3})(?![\w.])(?! s\b)", cell.split("—")[0])]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_exit_codes_named_in_docs_exist(doc: str) -> None:
    """Exit-code columns of tables ("exit code", "fails with"), "66 NO_INPUT"
    pairs and "exit 80" in prose name real ``ExitCode`` values."""
    text = doc.read_text(encoding="utf-8")
    valid = {int(code) for code in ExitCode}
    wrong: list[str] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("|") or i + 1 >= len(lines) or not re.match(r"^\|[-| :]+\|$", lines[i + 1]):
            continue
        header = [c.strip().lower() for c in line.strip("|").split("|")]
        columns = [k for k, name in enumerate(header) if name in ("code", "exit code", "fails with")]
        for row in lines[i + 2:]:
            if not row.startswith("|"):
                break
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", row.strip().strip("|"))]
            for k in columns:
                if k < len(cells):
                    wrong += [f"{n} in {row.strip()[:60]!r}" for n in _numbers(cells[k]) if n not in valid]
            if "code" in header and "name" in header:  # "| 80 | MODEL_HASH_MISMATCH | …"
                code, name = cells[header.index("code")], cells[header.index("name")]
                if code.isdigit() and (name not in ExitCode.__members__ or ExitCode[name] != int(code)):
                    wrong.append(f"{code} {name}")
    for number, name in re.findall(r"\b(\d{1,3}) \(?([A-Z][A-Z_]{2,})\b", text):
        if name in ExitCode.__members__ and ExitCode[name] != int(number):
            wrong.append(f"{number} {name} (ExitCode.{name} is {int(ExitCode[name])})")
    for group in re.findall(r"\bexit(?:s| code)? \**(\d{1,3}(?:(?:,| or| and| /) \d{1,3}\b)*)", text, re.I):
        wrong += [f"exit {number}" for number in re.findall(r"\d+", group) if int(number) not in valid]
    assert not wrong, f"{doc.name}: exit codes that ExitCode does not have: {wrong}"


def test_make_targets_and_variables_in_docs_exist() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, re.M))
    variables = set(re.findall(r"^([A-Z_]+) \??=", makefile, re.M))
    wrong = []
    for doc in DOCS:
        for code in _code(doc.read_text(encoding="utf-8")):
            for target, assigns in re.findall(r"(?:^|&&\s*|;\s*)make ([a-z][\w-]*)((?: [A-Z_]+=\S*)*)", code.strip()):
                if target not in targets:
                    wrong.append(f"{doc.name}: make {target}")
                wrong += [f"{doc.name}: make {target} {v}=" for v in re.findall(r"([A-Z_]+)=", assigns)
                          if v not in variables]
    assert not wrong, f"documented make targets/variables the Makefile lacks: {wrong}"


def test_install_options_table_is_install_sh() -> None:
    """docs/deployment.md's option table and provisioning/install.sh's option
    parser list the same flags."""
    doc = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`(--[a-z][\w-]*)", "\n".join(re.findall(r"^\| (`--[^|]*)\|", doc, re.M))))
    script = (ROOT / "provisioning" / "install.sh").read_text(encoding="utf-8")
    parsed = set(re.findall(r"^\s+(?:-\w\|)?(--[a-z][\w-]*)(?:=\*)?\)", script, re.M)) - {"--help"}
    assert documented == parsed, f"deployment.md only: {documented - parsed}; install.sh only: {parsed - documented}"


def test_documented_environment_variables_are_read() -> None:
    """A ``MICROEXPR_*`` variable the docs tell users to set is read somewhere
    (the application, the tests' fixtures or the benchmark scripts)."""
    documented = {v for doc in DOCS for v in re.findall(r"\bMICROEXPR_[A-Z_]+", doc.read_text(encoding="utf-8"))}
    code = "\n".join(
        path.read_text(encoding="utf-8")
        for folder in ("device/microexpr", "benchmarks", "tests")
        for path in (ROOT / folder).rglob("*.py")
        if path.name != "test_docs.py"
    )
    unread = {v for v in documented if not re.search(rf"\b{v}\b", code)}
    assert not unread, f"documented but read nowhere: {sorted(unread)}"
