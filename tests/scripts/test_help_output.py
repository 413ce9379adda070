"""``--help`` of every command: shared options in named groups, defaults shown once, by the formatter."""

from __future__ import annotations

import argparse
import re

import pytest
from elpips.scripts.cli import COMMAND_MODULES, HelpFormatter, build_parser, main

TYPED_DEFAULT = re.compile(r"\(\d[^)]*\)\s*\(default:")


def test_geodesic_help_has_the_option_groups_and_each_default_once(capsys):
    with pytest.raises(SystemExit):
        main(["geodesic", "--help"])
    text = capsys.readouterr().out
    for heading in ("metric:", "ensemble:", "sizing:", "run folder:", "export:"):
        assert f"\n{heading}" in text, heading
    frames = text[text.index("\n  --frames FRAMES"):text.index("\n  --steps STEPS")]
    assert " ".join(frames.split()).count("(default: 10)") == 1


def _actions(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield from _actions(child)
        else:
            yield parser, action


@pytest.mark.parametrize("command", list(COMMAND_MODULES))
def test_no_help_string_types_a_default_the_formatter_shows(command):
    parser = build_parser(command)
    command_parser = parser._subparsers._group_actions[0].choices[command]
    for owner, action in _actions(command_parser):
        assert owner.formatter_class is HelpFormatter, owner.prog
        if not action.help or action.help == argparse.SUPPRESS:
            continue
        shown = HelpFormatter(owner.prog)._get_help_string(action) or ""
        text = " ".join((shown % {**vars(action), "prog": owner.prog}).split())
        assert not TYPED_DEFAULT.search(text), (command, action.option_strings, text)
        if shown != action.help:  # the formatter adds the default: the help itself must not give it
            assert not re.search(r"\(\d[^)]*\)$|\bdefault\b", action.help), (command, action.option_strings)
