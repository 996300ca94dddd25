"""The command line and its documented contract (docs/cli.rst) cannot drift apart.

The parser is walked as built: every command it defines is documented and every documented
command exists; every flag is in its command's section and has help text; defaults and
repeatable flags show in ``--help``; ``--json`` commands list their keys. The keys themselves
are checked wherever a test runs a command with ``--json`` (``cli_helpers.bhs``).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import (
    CLI_DOC,
    bhs,
    documented_commands,
    documented_error_keys,
)

from blackhole_sync.cli.common import HelpFormatter
from blackhole_sync.cli.main import ERROR_KINDS, build_parser

ROOT = Path(__file__).resolve().parent.parent


def walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command (a parser without sub-commands) with its words."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, sub in subs[0].choices.items():
        yield from walk(sub, (*path, name))


PARSER = build_parser()
COMMANDS = dict(walk(PARSER))


def _flags(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


def _name(action: argparse.Action) -> str:
    return action.option_strings[-1] if action.option_strings else action.dest


def test_the_parser_has_the_commands_of_section_6() -> None:
    assert len(COMMANDS) >= 24
    for words in [("node", "init"), ("node", "status"), ("serve",), ("plugins", "list")]:
        assert words in COMMANDS


def test_every_command_the_parser_defines_is_documented() -> None:
    missing = sorted(" ".join(w) for w in COMMANDS if w not in documented_commands())
    assert not missing, f"docs/cli.rst lacks a section for: {missing}"


def test_every_documented_command_exists() -> None:
    stale = sorted(" ".join(w) for w in documented_commands() if w not in COMMANDS)
    assert not stale, f"docs/cli.rst documents commands the parser lacks: {stale}"


@pytest.mark.parametrize("words", list(COMMANDS), ids=" ".join)
def test_every_flag_is_in_its_command_s_section(words: tuple[str, ...]) -> None:
    doc = documented_commands()[words]
    flags = {o for a in _flags(COMMANDS[words]) for o in a.option_strings if o.startswith("--")}
    missing = sorted(flags - doc.flags)
    assert not missing, f"docs/cli.rst, section {' '.join(words)}, lacks {missing}"
    stale = sorted(doc.flags - flags - {"--help", "--debug", "--version"})
    assert not stale, f"docs/cli.rst, section {' '.join(words)}, names flags it lacks: {stale}"


@pytest.mark.parametrize("words", list(COMMANDS), ids=" ".join)
def test_a_json_command_documents_its_keys_and_only_such_a_command(words: tuple[str, ...]) -> None:
    has_json = any("--json" in a.option_strings for a in _flags(COMMANDS[words]))
    doc = documented_commands()[words]
    assert ":JSON keys:" in doc.text, f"docs/cli.rst, {' '.join(words)}: no ':JSON keys:' field"
    assert ":Exit status:" in doc.text, f"docs/cli.rst, {' '.join(words)}: no ':Exit status:'"
    if has_json:
        assert doc.json_keys, f"docs/cli.rst, {' '.join(words)} takes --json: list its keys"
    else:
        assert doc.json_keys is None, f"{' '.join(words)} has no --json, yet docs list keys"


def test_every_flag_has_help_text() -> None:
    """Walks the whole parser: the global flags, every group and every command."""
    without = []

    def visit(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    if not choice.help:
                        without.append(" ".join((*path, choice.dest)))
                for name, sub in action.choices.items():
                    visit(sub, (*path, name))
            elif not action.help or action.help == argparse.SUPPRESS:
                without.append(f"{' '.join(path) or 'blackhole-sync'} {_name(action)}")

    visit(PARSER, ())
    assert not without, f"flags and commands without help text: {without}"


@pytest.mark.parametrize("words", list(COMMANDS), ids=" ".join)
def test_defaults_and_repeatable_flags_are_shown_in_help(words: tuple[str, ...]) -> None:
    parser = COMMANDS[words]
    formatter = HelpFormatter(prog=parser.prog)
    text = " ".join(parser.format_help().split())
    for action in _flags(parser):
        shown = formatter._get_help_string(action) or ""
        if isinstance(action, argparse._AppendAction):
            assert "repeatable" in shown, f"{' '.join(words)} {_name(action)}: not marked"
        if action.option_strings and action.default not in (None, False, [], argparse.SUPPRESS):
            assert "default:" in shown, f"{' '.join(words)} {_name(action)}: default not shown"
            assert f"default: {action.default}" in text, (words, action.default)


def test_help_shows_a_default_and_a_repeatable_flag_as_an_operator_sees_them() -> None:
    out = bhs("node", "init", "--help").out
    text = " ".join(out.split("options:", 1)[1].split())  # the flags, after the usage lines
    assert "--channel CHANNEL the release channel to follow (default: stable)" in text
    assert "(repeatable)" in text.split("--source URL", 1)[1].split("--channel", 1)[0]


def test_the_error_kinds_are_the_documented_ones() -> None:
    text = CLI_DOC.read_text(encoding="utf-8")
    table = text.split(":Error keys:", 1)[1]
    documented = set(re.findall(r"^``(\w+)``\s+\d+", table, re.MULTILINE))
    assert documented == {kind for _, kind in ERROR_KINDS} | {"internal"}
    assert documented_error_keys() == {"kind", "message", "exit"}


def test_readme_and_the_cli_module_point_to_the_documented_contract() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/cli.rst" in readme
    main = (ROOT / "blackhole_sync" / "cli" / "main.py").read_text(encoding="utf-8")
    assert "docs/cli.rst" in main
    index = (ROOT / "docs" / "index.rst").read_text(encoding="utf-8")
    assert re.search(r"^\s+cli$", index, re.MULTILINE), "docs/index.rst does not list cli"
