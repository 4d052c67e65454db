"""The Bazel BUILD file lists every module and every test file."""

import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_build_file_is_generated_from_the_current_tree():
    result = subprocess.run([sys.executable, "tools/gen_build.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _bazel_query(expression):
    result = subprocess.run(
        ["bazel", "query", expression, "--output=label"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return set(result.stdout.split())


@pytest.fixture(scope="module")
def bazel():
    if shutil.which("bazel") is None:
        pytest.skip("bazel is not installed (Debian: apt-get install bazel-bootstrap); BUILD was checked by text only")


def test_bazel_query_lists_every_test_file(bazel):
    tests = _bazel_query("kind(py_test, //...)")
    want = {f"//:{p.stem}" for p in (ROOT / "tests").glob("test_*.py")}
    assert want == tests


def test_bazel_libraries_cover_every_module(bazel):
    sources = _bazel_query("labels(srcs, kind(py_library, //...))")
    want = {f"//:{p.relative_to(ROOT)}" for p in (ROOT / "tf_freetickets").rglob("*.py")}
    assert want <= sources, sorted(want - sources)
