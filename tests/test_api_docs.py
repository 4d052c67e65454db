"""API reference (tools/build_api_docs.py): the HTML builds, and every public object has a docstring."""

import importlib.util
import pathlib
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _load_tool():
    spec = importlib.util.spec_from_file_location("build_api_docs", ROOT / "tools" / "build_api_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


@pytest.fixture
def public_modules():
    with tool.imported_public_modules() as modules:
        yield modules


def test_reference_builds_with_the_known_pages(public_modules, tmp_path):
    warnings = tool.build(tmp_path, public_modules)
    assert warnings == []
    index = (tmp_path / "index.html").read_text()
    for name in public_modules:  # the index links every public module, binaries included
        assert f'href="{name.replace(".", "/")}.html"' in index, name
    assert "tf_freetickets.train" in public_modules and "tf_freetickets.sparse.updater" in public_modules
    pages = {  # page: objects with their own section (pdoc's <section id="name">)
        "tf_freetickets.html": ["sparsify", "RigL", "MaskUpdate", "EnsembleModel"],  # re-exports in __all__
        "tf_freetickets/sparse/updater.html": ["MaskUpdater", "masks_from_indices"],
        "tf_freetickets/sparse/methods/rigl.html": ["RigL", "freetickets_official"],
        "tf_freetickets/sparse/registry.html": ["register_method", "CostFacts"],
        "tf_freetickets/sparse/callback.html": ["MaskUpdate"],
        "tf_freetickets/sparse/sparsify.html": ["sparsify"],
        "tf_freetickets/train.html": ["make_strategy", "main"],
    }
    for page, names in pages.items():
        text = (tmp_path / page).read_text()
        for name in names:
            assert f'<section id="{name}">' in text, (page, name)
    assert "--workdir" in (tmp_path / "tf_freetickets/train.html").read_text()  # the binary's usage, from its docstring
    # Google-style sections are rendered as sections, not as plain text.
    assert '<h6 id="arguments">Arguments:</h6>' in (tmp_path / "tf_freetickets/sparse/sparsify.html").read_text()
    # Offline: no page loads a script or stylesheet from the network.
    for page in tmp_path.rglob("*.html"):
        text = page.read_text()
        assert '<script src="http' not in text and '<link rel="stylesheet" href="http' not in text, page


def test_every_public_object_has_a_docstring(public_modules):
    missing = tool.missing_docstrings(public_modules)
    assert not missing, tool.format_missing(missing)


def test_binaries_are_imported_without_keeping_their_flags():
    """Two binaries define --source; importing both for the reference must work and leave no trace."""
    from absl import flags

    binaries = {"tf_freetickets.evaluate", "tf_freetickets.export_main", "tf_freetickets.train"}
    if binaries & set(sys.modules):
        pytest.skip("an earlier test in this process imported a binary; the fresh import is not testable here")
    before = set(flags.FLAGS)
    with tool.imported_public_modules() as modules:
        assert binaries <= set(modules)
    assert set(flags.FLAGS) == before
    assert not binaries & set(sys.modules)


SYNTHETIC = '''
"""A module for the checker's test."""

import collections
import dataclasses


class Base:
    """A documented base."""

    def documented(self):
        """Has a docstring."""

    def undocumented(self):
        pass


class Child(Base):
    """A documented class."""

    def documented(self):  # an override may rely on Base's docstring
        pass

    def undocumented(self):  # Base gives no docstring to rely on
        pass

    def fresh(self):
        """   """

    @property
    def size(self):
        return 1

    @classmethod
    def make(cls):
        pass

    @staticmethod
    def helper():
        """Documented."""

    def _private(self):
        pass

    base_class = Base  # an alias: checked where it is defined

    class Options:
        """A nested class: its methods are checked too."""

        def check(self):
            pass


class Bare:
    def method(self):
        """Documented."""


@dataclasses.dataclass
class Record:
    size: int = 0


Pair = collections.namedtuple("Pair", ["left", "right"])


def function():
    pass


def documented_function():
    """Documented."""


def _private_function():
    pass
'''


def test_checker_finds_each_missing_docstring(tmp_path, monkeypatch):
    (tmp_path / "synthetic_api.py").write_text(textwrap.dedent(SYNTHETIC))
    (tmp_path / "synthetic_reexport.py").write_text("from synthetic_api import function, Bare\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("synthetic_api")
    reexport = importlib.import_module("synthetic_reexport")
    try:
        missing = tool.missing_docstrings([module, reexport])
    finally:
        sys.modules.pop("synthetic_api")
        sys.modules.pop("synthetic_reexport")
    assert missing == [
        "synthetic_api.Bare",
        "synthetic_api.Base.undocumented",
        "synthetic_api.Child.Options.check",
        "synthetic_api.Child.fresh",
        "synthetic_api.Child.make",
        "synthetic_api.Child.size",
        "synthetic_api.Child.undocumented",
        "synthetic_api.Pair",
        "synthetic_api.Record",
        "synthetic_api.function",
        "synthetic_reexport",  # the module docstring; its re-exports are checked where they are defined
    ]
    assert "synthetic_api.Bare" in tool.format_missing(missing)
