"""Command-line messages: usage errors in one line with a pointer to --help, clear device and sample notes."""

from __future__ import annotations

import pytest

from elpips.scripts import cli


@pytest.mark.parametrize("argv, expected", [
    (["distance", "example:cat", "example:dog", "--metric", "nope"], "invalid choice: 'nope'"),
    (["distanc"], "invalid choice: 'distanc'"),
    (["distance", "example:cat", "example:dog", "--samples", "0"], "must be a positive integer"),
])
def test_usage_errors_are_one_line(argv, expected, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and expected in error and "--help" in error


def test_unsupported_device_is_one_line(capsys):
    code = cli.main(["distance", "example:cat", "example:dog", "--backbone-weights", "random", "--device", "meta"])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and error[-1] == "elpips distance: error: device 'meta' is not supported; use one of: cpu, cuda, mps"


def test_one_sample_has_no_half_width(capsys):
    code = cli.main(["distance", "example:cat", "example:dog", "--backbone-weights", "random", "--metric",
                     "elpips-squeeze", "--samples", "1"])
    assert code == 0
    assert "(1 sample: no uncertainty estimate" in capsys.readouterr().out


def test_help_shows_percent_once(capsys):
    with pytest.raises(SystemExit):
        cli.main(["distance", "--help"])
    out = capsys.readouterr().out
    assert "95%" in out and "95%%" not in out
