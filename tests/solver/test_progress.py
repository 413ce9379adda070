"""Progress without a terminal: plain lines every 10% and at least every few seconds, tqdm-style counting for
loops that are not solvers, and announced waits without steps; what the commands print on such a stderr."""

from __future__ import annotations

import time

import imageio.v3 as iio
import numpy as np
from elpips.scripts.cli import main
from elpips.scripts.common import progress_bar
from elpips.solver import ProgressReport, StepInfo, phase


def plain_lines(capsys, prefix: str) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith(prefix)]


def test_slow_steps_get_a_line_at_least_every_interval(capsys):
    report = ProgressReport("slow", 1000, lambda info: {}, interval_s=0.05)
    for step in range(1, 4):  # far from any 10% mark, but each step outlasts the interval
        time.sleep(0.06)
        report(StepInfo(step, 1000, 0.01, 1.0, 0.06))
    report.close()
    assert [line.split(",")[0] for line in plain_lines(capsys, "slow:")] == [f"slow: step {s}/1000" for s in (1, 2, 3)]


def test_tqdm_style_use_counts_and_prints_plain_lines(capsys):
    with progress_bar("attack", 10, unit="step") as bar:
        for _ in range(10):
            bar.update(1)
            bar.set_postfix(d="0.5")
    lines = plain_lines(capsys, "attack:")
    assert len(lines) == 10 and lines[-1].startswith("attack: step 10/10, d 0.5, ETA")
    with progress_bar("auto", 1000) as bar:
        bar.n = 250  # --auto sets the count of samples drawn
        bar.n = 1000
    assert [line.split(",")[0] for line in plain_lines(capsys, "auto:")] == ["auto: sample 250/1000",
                                                                          "auto: sample 1000/1000"]
    with progress_bar("quiet", 10, enabled=False) as bar:
        bar.update(10)
    assert plain_lines(capsys, "quiet") == []


def test_a_wait_is_announced_with_periodic_lines_only_when_it_lasts(capsys):
    with phase("quick", notice_s=0.5):
        pass
    assert capsys.readouterr().err == ""
    with phase("evaluating", notice_s=0.01, interval_s=0.05):
        time.sleep(0.2)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "evaluating ..." and lines[-1].startswith("evaluating: done in")
    assert any(line.startswith("evaluating: still running") for line in lines[1:-1])


def test_train_example_reports_progress_on_a_non_terminal_stderr(tmp_path, capsys):
    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "a.png", image)
    assert main(["train-example", "--images", str(tmp_path / "a.png"), "--metric", "l2", "--crop", "16",
                 "--steps", "10", "--batch", "2", "--backbone-weights", "random",
                 "--out", str(tmp_path / "train")]) == 0
    lines = plain_lines(capsys, "train l2: step")
    assert len(lines) == 10 and lines[-1].startswith("train l2: step 10/10, loss")
