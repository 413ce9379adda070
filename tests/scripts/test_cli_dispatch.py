"""The command line imports only the module of the command it runs."""

from __future__ import annotations

import json
import subprocess
import sys

from elpips.scripts.cli import COMMAND_MODULES, build_parser

HEAVY_PREFIXES = ("elpips.benchmarks", "elpips.experiments", "elpips.scripts.train_example", "elpips.scripts.batch",
                  "elpips.scripts.jobs", "elpips.scripts.bench", "elpips.scripts.render")

_PROBE = """
import json, sys
from elpips.scripts.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(name for name in sys.modules if name.startswith("elpips"))}))
"""


def _loaded_after(argv: list[str]) -> tuple[int, list[str]]:
    done = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return report["code"], report["modules"]


def test_distance_imports_no_benchmark_training_batch_or_experiment_code():
    code, modules = _loaded_after(["distance", "example:cat", "example:dog", "--backbone-weights", "random",
                                   "--samples", "2", "--json"])
    assert code == 0
    heavy = [name for name in modules if name.startswith(HEAVY_PREFIXES)]
    assert heavy == [], heavy
    assert "elpips.scripts.distance" in modules


def test_import_elpips_loads_the_metric_only():
    done = subprocess.run([sys.executable, "-c", "import elpips, sys; print(sorted(sys.modules))"],
                          capture_output=True, text=True, timeout=300)
    loaded = done.stdout
    for name in ("elpips.experiments", "elpips.scripts", "elpips.barycenters", "elpips.geodesics",
                 "elpips.solver", "elpips.benchmarks"):
        assert f"'{name}" not in loaded, name


def test_help_lists_every_command_without_importing_them():
    before = set(sys.modules)
    parser = build_parser()
    listed = parser.format_help()
    for name, (_, summary) in COMMAND_MODULES.items():
        assert name in listed and summary[:20] in listed
    assert not [name for name in set(sys.modules) - before if name.startswith("elpips.scripts.")]


def test_every_command_module_registers_its_own_name():
    for name in COMMAND_MODULES:
        parser = build_parser(name)
        subparsers = next(action for action in parser._actions if action.dest == "command")
        built = subparsers.choices[name]
        assert built.add_help and built.description  # the module's own parser, not the one-line entry
