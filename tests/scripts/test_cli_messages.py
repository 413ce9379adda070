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
    assert code == 2
    assert error[-1] == "elpips distance: error: device 'meta' is not supported; use one of: cpu, cuda, mps"


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


@pytest.mark.parametrize("argv, expected", [
    (["train-example", "--depth", "1", "--metric", "l2", "--out", "{tmp}/run"],
     "elpips train-example: error: --depth must be >= 2 (the CNN needs at least 2 convolutions), got 1"),
    (["interpolate", "{tmp}/missing.mp4", "--fps", "0", "--metric", "l2", "--out", "{tmp}/run"],
     "elpips interpolate: error: --fps must be > 0, got 0.0"),
])
def test_the_commands_name_their_flags_where_the_library_names_arguments(argv, expected, tmp_path, capsys):
    assert cli.main([argument.format(tmp=tmp_path) for argument in argv]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == expected
    assert not (tmp_path / "run").exists()


def test_library_phrases_are_reworded_for_the_command_line():
    from elpips.scripts.common import error_message
    from elpips.sizing import SIZE_OPTIONS_HINT
    from elpips.weights import WeightsUnavailableError

    sizes = ValueError(f"images must have the same size: a is 1x1, b is 2x2 (height x width); {SIZE_OPTIONS_HINT}")
    assert error_message(sizes).endswith("; pass --resize WxH or --fit smallest|largest to bring them to one size "
                                         "(add --center-crop to keep the aspect ratio)")
    weights = WeightsUnavailableError("not cached: put 'x.pth' into 'y', or pass backbone_weights=PATH")
    assert error_message(weights) == "not cached: put 'x.pth' into 'y', or pass --backbone-weights PATH"


def test_a_deterministic_metric_says_one_sample_not_one_samples(capsys):
    from elpips.scripts.common import samples_text

    assert cli.main(["compare", "example:cat", "example:dog", "example:cat", "--metric", "l2"]) == 0
    out = capsys.readouterr().out
    assert "(1 sample, shared by all candidates)" in out and "1 samples" not in out
    assert (samples_text(1), samples_text(2)) == ("1 sample", "2 samples")


def test_offline_weights_error_names_the_random_backbone_flag(tmp_path, monkeypatch, capsys):
    import urllib.error

    import torch

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    code = cli.main(["distance", "example:cat", "example:dog", "--metric", "lpips-squeeze",
                     "--backbone-weights", "imagenet"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert code != 0
    assert "--backbone-weights random (uncalibrated, for smoke tests)" in error and "backbone_weights" not in error
