"""setup.py declares tft-train, tft-evaluate and tft-export, each running its binary's `main` through absl's `app.run`."""

import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPECTED = {
    "tft-train": "tf_freetickets.train",
    "tft-evaluate": "tf_freetickets.evaluate",
    "tft-export": "tf_freetickets.export_main",
}


def _console_scripts():
    """{script name: "module:function"} from the `entry_points` literal of setup.py's `setup(...)` call."""
    with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "setup")
    entry_points = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "entry_points"))
    return dict(line.replace(" ", "").split("=") for line in entry_points["console_scripts"])


def test_the_three_binaries_are_declared():
    assert {name: target.split(":")[0] for name, target in _console_scripts().items()} == EXPECTED


# Each binary defines its absl flags at import (evaluate and export_main both define --source), so each is
# imported in its own process.
_PROBE = """
import importlib, sys
module = importlib.import_module(sys.argv[1])
calls = []
module.app.run = lambda main, **kwargs: calls.append((main, kwargs))
getattr(module, sys.argv[2])()
assert calls == [(module.main, {"flags_parser": module._parse_flags})], calls
print("ok")
"""


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_each_script_runs_its_binarys_main_through_absl(script):
    module_name, function_name = _console_scripts()[script].split(":")
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, module_name, function_name], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
