"""Builds the HTML API reference of `tf_freetickets` from its docstrings, and checks that none is missing.

  python tools/build_api_docs.py                    # HTML into out/api (open out/api/index.html)
  python tools/build_api_docs.py --output DIR       # HTML into DIR
  python tools/build_api_docs.py --check            # only list public objects without a docstring

Each exits 1 and prints `module.qualname` of each offender when a public
docstring is missing; the HTML is written all the same. The reference is rendered
by pdoc's Python API (Google-style docstrings, like `pdoc --docformat google`),
offline: the pages load nothing from the network.

What is public, and so documented and checked:
  * every module of the package whose dotted name has no part starting with
    `_` (the absl binaries `train`, `evaluate` and `export_main` included);
  * in each module, every class and function whose `__module__` is that
    module (re-exports are checked where they are defined) and whose name
    does not start with `_`;
  * in each such class, every method, classmethod, staticmethod and property
    defined in the class body itself (`vars(cls)`, so members inherited from
    Keras or any other base are not checked) whose name does not start with
    `_` (so `__init__` and `__call__` are not required; Google style documents
    the constructor's arguments in the class docstring), and every class
    nested in it, checked the same way.

A docstring is missing when it is absent or blank (for a dataclass or a
namedtuple, also when it is the `Name(field, ...)` text Python writes).
Modules, classes and functions need their own (`inspect.getdoc` would hand a
class its base's docstring, which says nothing about the subclass). A method or property that
overrides one of a base class may rely on the base's docstring when some
class later in the MRO documents that name (as `inspect.getdoc` and pdoc's
pages do): an override of Keras's `on_epoch_end`, `save_own_variables` or
`get_config` (documented by `keras.Operation`), or of a documented method of
a project base class such as `MaskUpdater`, keeps that contract and text.
Keras 3 leaves `Layer.call`, `Layer.build`, `Layer.compute_output_shape`,
`Loss.call`, `Loss.get_config` and `Model.train_step` without a docstring, so
overrides of those need their own: what the layer computes, its inputs and
outputs and their shapes are the subclass's to say. So does a new method,
and an override of an undocumented project method.

The binaries define absl flags at import, and two of them define the same
flag names (`--source`, `--output`); one process cannot import both. Each
binary is therefore imported on its own and its flags are unregistered right
after, and on leaving `imported_public_modules` the binaries imported here are
removed from `sys.modules` so that a later import registers them afresh.
"""

import argparse
import ast
import contextlib
import dataclasses
import functools
import importlib
import importlib.util
import inspect
import os
import pathlib
import pkgutil
import sys
import warnings

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # document this checkout, not whatever copy is installed

PACKAGE = "tf_freetickets"
DEFAULT_OUTPUT = "out/api"
TEMPLATES = ROOT / "tools" / "api_docs_templates"  # index.html.jinja2: every module, not a redirect to the package page


def public_module_names(package=PACKAGE):
    """Returns the sorted dotted names of `package` and its public submodules (no part starts with `_`)."""
    root = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def _defines_absl_flags(name):
    """Whether module `name`'s source calls a `*.DEFINE_*` at module level (an absl binary), without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return False
    tree = ast.parse(pathlib.Path(spec.origin).read_text(encoding="utf-8"))
    for node in tree.body:
        value = getattr(node, "value", None)
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and value.func.attr.startswith("DEFINE"):
            return True
    return False


def _drop_flags_of(module_name):
    """Unregisters the absl flags `module_name` defined, so that another binary may define the same names."""
    from absl import flags

    for flag in list(flags.FLAGS.flags_by_module_dict().get(module_name, [])):
        for name in {flag.name, flag.short_name} - {None}:
            if name in flags.FLAGS and flags.FLAGS[name] is flag:
                delattr(flags.FLAGS, name)


@contextlib.contextmanager
def imported_public_modules(package=PACKAGE):
    """Imports every public module of `package`; yields a dict {dotted name: module}.

    Binaries (modules that define absl flags at import) not imported before are
    imported one at a time with their flags unregistered after each, and are
    taken out of `sys.modules` again on exit (see the module docstring).
    """
    modules, fresh_binaries = {}, []
    try:
        for name in public_module_names(package):
            if name not in sys.modules and _defines_absl_flags(name):
                fresh_binaries.append(name)
                modules[name] = importlib.import_module(name)
                _drop_flags_of(name)
            else:
                modules[name] = importlib.import_module(name)
        yield modules
    finally:
        for name in fresh_binaries:
            sys.modules.pop(name, None)
            parent, _, child = name.rpartition(".")
            if parent in sys.modules and getattr(sys.modules[parent], child, None) is modules.get(name):
                delattr(sys.modules[parent], child)


def _blank(doc):
    return not (doc or "").strip()


def _class_doc_blank(cls):
    """Whether `cls` has no docstring of its own; the `Name(field, ...)` text dataclasses and namedtuples get is none."""
    doc = cls.__doc__
    if _blank(doc):
        return True
    if dataclasses.is_dataclass(cls):
        with contextlib.suppress(TypeError, ValueError):
            return doc == cls.__name__ + str(inspect.signature(cls)).replace(" -> None", "")
    if issubclass(cls, tuple) and hasattr(cls, "_fields"):
        return doc == f"{cls.__name__}({', '.join(cls._fields)})"
    return False


def _method_function(member):
    """The object holding a class member's docstring, or None when the member is not a method or property."""
    if isinstance(member, (staticmethod, classmethod)):
        member = member.__func__
    if isinstance(member, (property, functools.cached_property)) or inspect.isfunction(member):
        return member  # a property's docstring is its getter's unless given
    if hasattr(member, "python_function"):
        return member  # a tf.function: its docstring is the wrapped function's
    return None


def _base_documents(cls, name):
    """Whether a class after `cls` in its MRO defines `name` with a non-blank docstring."""
    for base in cls.__mro__[1:]:
        if name in vars(base):
            member = _method_function(vars(base)[name])
            if member is not None and not _blank(getattr(member, "__doc__", None)):
                return True
    return False


def _missing_in_class(cls, prefix):
    missing = []
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        if inspect.isclass(member) and member.__qualname__ == f"{cls.__qualname__}.{name}":  # nested, not an alias
            if _class_doc_blank(member):
                missing.append(f"{prefix}.{name}")
            missing += _missing_in_class(member, f"{prefix}.{name}")
            continue
        function = _method_function(member)
        if function is None or not _blank(getattr(function, "__doc__", None)):
            continue
        if not _base_documents(cls, name):
            missing.append(f"{prefix}.{name}")
    return missing


def missing_docstrings(modules):
    """Returns `module.qualname` of each public module, class, function or method without a docstring.

    Args:
      modules: an iterable of imported module objects, or a dict {name: module}
        (as `imported_public_modules` yields); each is checked as public (the
        caller picks which modules are public).

    Returns:
      A sorted list of strings such as `tf_freetickets.train.main` or
      `tf_freetickets.sparse.updaters.RigL.grow_scores`; empty when every
      public object has a docstring. The rules are in this module's docstring.
    """
    if isinstance(modules, dict):
        modules = modules.values()
    missing = []
    for module in modules:
        name = module.__name__
        if _blank(module.__doc__):
            missing.append(name)
        for attr, obj in vars(module).items():
            if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                continue
            if inspect.isclass(obj):
                if _class_doc_blank(obj):
                    missing.append(f"{name}.{attr}")
                missing += _missing_in_class(obj, f"{name}.{attr}")
            elif inspect.isfunction(obj) or hasattr(obj, "python_function"):
                if _blank(getattr(obj, "__doc__", None)):
                    missing.append(f"{name}.{attr}")
    return sorted(set(missing))


def build(output, modules, footer=""):
    """Renders the HTML reference of `modules` into folder `output` with pdoc.

    Args:
      output: folder to write; created if missing. It receives `index.html`,
        `search.js` and one page per module at `tf_freetickets/<sub>/<module>.html`.
      modules: dict {dotted name: module} of the modules to document, as
        `imported_public_modules` yields.
      footer: text shown at the bottom of every page.

    Returns:
      The list of pdoc's warnings while rendering (strings; e.g. a link
      pdoc cannot resolve), empty when there were none.
    """
    import pdoc.doc
    import pdoc.render

    output = pathlib.Path(output)
    output.mkdir(parents=True, exist_ok=True)
    # Same as `pdoc --docformat google`; math and mermaid stay off, so no page loads a script from a CDN.
    pdoc.render.configure(
        docformat="google", footer_text=footer, search=True, show_source=True, math=False, mermaid=False,
        template_directory=TEMPLATES,
    )  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        docs = {name: pdoc.doc.Module(module) for name, module in modules.items()}
        for doc in docs.values():
            page = output / (doc.fullname.replace(".", "/") + ".html")
            page.parent.mkdir(parents=True, exist_ok=True)
            page.write_text(pdoc.render.html_module(doc, docs), encoding="utf-8")
        (output / "index.html").write_text(pdoc.render.html_index(docs), encoding="utf-8")
        (output / "search.js").write_text(pdoc.render.search_index(docs), encoding="utf-8")
    pdoc_dir = os.path.dirname(pdoc.__file__)
    return [f"{w.category.__name__}: {w.message}" for w in caught if w.filename.startswith(pdoc_dir)]


def format_missing(missing):
    """One line per offender, under a heading that says how to fix them; '' when `missing` is empty."""
    if not missing:
        return ""
    lines = [f"{len(missing)} public object(s) without a docstring (rules: tools/build_api_docs.py):"]
    return "\n".join(lines + [f"  {name}" for name in missing])


def main(argv=None):
    """Command line: builds the reference into --output unless --check, then lists missing docstrings.

    Args:
      argv: arguments without the program name (default: `sys.argv[1:]`).

    Returns:
      The exit status: 0, or 1 when a public docstring is missing.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help=f"folder of the HTML reference (default {DEFAULT_OUTPUT})")
    parser.add_argument("--check", action="store_true", help="only check the docstrings; write no HTML")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with imported_public_modules() as modules:
        if not args.check:
            version = getattr(modules[PACKAGE], "__version__", "")
            for warning in build(args.output, modules, footer=f"{PACKAGE} {version}"):
                print("pdoc:", warning, file=sys.stderr)
            print(f"API reference of {len(modules)} modules: {pathlib.Path(args.output) / 'index.html'}")
        missing = missing_docstrings(modules)
    if missing:
        print(format_missing(missing), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
