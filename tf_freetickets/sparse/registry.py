"""The method registry: every sparse-training method, declared once.

A method is one module that calls `register_method` with its name, its config
fields (under `config.sparse`, with help text and a check), its updater
factory and its cost facts. Config validation, `--config_help`, the training
runner, the FLOPs accounting and the tests read this registry; no list of
method names is written anywhere else. The built-in methods live in
`tf_freetickets.sparse.methods`; a user's method registers the same way, e.g.
from the config file that uses it (see docs/CONTRIBUTING.md).
"""

import dataclasses
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class ConfigField:
    """One `config.sparse.<name>` field a method reads.

    Attributes:
      name: the field under `config.sparse` ("random_drop_rate", or dotted
        for a group: "gmp.power").
      default: its default value (its type is the type a flag must parse to).
      help: one line for `--config_help`.
      check: optional function (value, sparse_config) that raises ValueError
        with a message naming what is allowed; run only for the methods that
        declare the field.
    """

    name: str
    default: object
    help: str
    check: Callable | None = None


@dataclasses.dataclass(frozen=True)
class CostFacts:
    """How a training run of a method costs, in RigL's accounting (`tf_freetickets.costs`).

    Per training step of batch B: 3 f_D B for dense training; 3 f_S B for a
    sparse step, or (2 f_S + f_D) B when the step computes the dense weight
    gradient. Per mask update, `growth_gradient_batches` says what the growth
    signal costs.

    Attributes:
      dense: trains every weight (3 f_D per example and step); no mask updates.
      updates_masks: masks change during training (Static: no updates counted).
      growth_gradient_batches: None: growth reads no gradient (random, magnitude);
        0: the dense gradient of the update step's own batch, (f_D - f_S) B more
        than that step's sparse backward; G > 0: G extra batches of
        (2 f_S + f_D) B_g each.
      dense_weight_gradient_every_step: every step computes the dense weight
        gradient (FreeTickets' dense momentum; the paper's SNFS).
      density_follows_schedule: the density changes along a pruning schedule
        (gradual pruning), so every step is costed at its own density.
    """

    dense: bool = False
    updates_masks: bool = True
    growth_gradient_batches: int | None = None
    dense_weight_gradient_every_step: bool = False
    density_follows_schedule: bool = False

    def __post_init__(self):
        batches = self.growth_gradient_batches
        if batches is not None and (isinstance(batches, bool) or not isinstance(batches, int) or batches < 0):
            raise ValueError(f"growth_gradient_batches must be None or an integer >= 0, got {batches!r}.")


@dataclasses.dataclass(frozen=True)
class SparseMethod:
    """A registered method (read it with `get_method`).

    Attributes:
      name: the `config.sparse.method` value.
      summary: one line: the method and its paper.
      make_updater: function (sparse_config, seed) -> `MaskUpdater`, or None
        for dense training.
      cost_facts: function (updater_or_None, gradient_batches_or_None) ->
        `CostFacts`: the facts of a built updater, or of the method's paper
        defaults when no updater is given (a caller's `gradient_batches`
        overrides the updater's where growth reads gradients).
      config_fields: the `config.sparse` fields only this method (or a few)
        reads, with defaults and help.
      updater_class: the updater class the factory builds (None for dense);
        `method_for_updater` maps an updater back to its method by it.
      initial_sparsity: function sparse_config -> the sparsity `sparsify`
        starts from (default: `sparse.sparsity`; gradual pruning: 0).
      dynamic: masks move by prune and regrow, so the method can drive EDST
        (its global exploration replaces a large drop fraction).
    """

    name: str
    summary: str
    make_updater: Callable
    cost_facts: Callable
    config_fields: tuple = ()
    updater_class: type | None = None
    initial_sparsity: Callable | None = None
    dynamic: bool = False

    def starting_sparsity(self, sparse_config):
        """The sparsity a model of this method is sparsified to before training."""
        if self.initial_sparsity is None:
            return 0.0 if self.updater_class is None else float(sparse_config.sparsity)
        return float(self.initial_sparsity(sparse_config))


_METHODS = {}


def register_method(
    name, *, summary, make_updater, cost_facts, config_fields=(), updater_class=None, initial_sparsity=None,
    dynamic=False, replace=False,
):  # fmt: skip
    """Registers a method under `name` (see `SparseMethod` for the arguments) and returns its entry.

    Raises:
      ValueError: `name` is taken (pass replace=True to redefine it, e.g. when
        a module is reloaded), not an identifier, or a field is declared twice
        with different defaults.
      TypeError: no `make_updater` or no `cost_facts`: a method whose cost is
        unknown is refused here, before any run starts.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"A method name must be an identifier, got {name!r}.")
    if name in _METHODS and not replace:
        raise ValueError(f"Method {name!r} is registered already (by {_METHODS[name].make_updater.__module__}).")
    if not callable(make_updater):
        raise TypeError(f"Method {name!r} declares no make_updater(sparse_config, seed).")
    if not callable(cost_facts):
        raise TypeError(
            f"Method {name!r} declares no cost_facts(updater, gradient_batches) -> CostFacts; its training FLOPs "
            "would be unknown, so it is refused before any run."
        )
    fields = tuple(config_fields)
    for field in fields:
        if not isinstance(field, ConfigField):
            raise TypeError(f"Method {name!r}: config_fields must be ConfigField, got {type(field).__name__}.")
        known = declared_fields().get(field.name)
        if known is not None and known.default != field.default:
            raise ValueError(
                f"Method {name!r} declares config.sparse.{field.name} with default {field.default!r}, but it is "
                f"declared already with default {known.default!r}."
            )
    entry = SparseMethod(name, summary, make_updater, cost_facts, fields, updater_class, initial_sparsity, dynamic)
    _METHODS[name] = entry
    return entry


def unregister_method(name):
    """Removes the method registered as `name` (a user's or a test's; built-in methods cannot be removed).

    Raises:
      ValueError: `name` is not registered, or is a built-in method.
    """
    _load_builtins()
    if name not in _METHODS:
        raise ValueError(f"Method {name!r} is not registered; registered methods: {', '.join(_METHODS)}.")
    if _METHODS[name].make_updater.__module__.startswith("tf_freetickets.sparse.methods"):
        raise ValueError(f"Method {name!r} is built in; it cannot be removed.")
    del _METHODS[name]


def method_names():
    """The registered method names, in registration order."""
    _load_builtins()
    return tuple(_METHODS)


def get_method(name):
    """The `SparseMethod` registered as `name`.

    Raises:
      ValueError: one line naming the unknown method and the registered ones.
    """
    _load_builtins()
    if name not in _METHODS:
        raise ValueError(f"Unknown sparse method {name!r}; registered methods: {', '.join(_METHODS)}.")
    return _METHODS[name]


def method_for_updater(updater):
    """The `SparseMethod` whose `updater_class` is exactly `type(updater)`.

    A subclass of a registered updater is a method of its own: it is not
    costed as its parent.

    Raises:
      ValueError: the updater's class is not registered.
    """
    _load_builtins()
    for entry in _METHODS.values():
        if entry.updater_class is type(updater):
            return entry
    raise ValueError(
        f"Updater class {type(updater).__name__} is not a registered method (registered: {', '.join(_METHODS)}); "
        "register it with tft.sparse.register_method(..., updater_class=...) so its cost is known."
    )


def declared_fields():
    """{field name: ConfigField} over every registered method (first declaration wins)."""
    _load_builtins()
    fields = {}
    for entry in _METHODS.values():
        for field in entry.config_fields:
            fields.setdefault(field.name, field)
    return fields


def methods_declaring(field_name):
    """Names of the methods that declare `config.sparse.<field_name>`."""
    _load_builtins()
    return tuple(entry.name for entry in _METHODS.values() if any(f.name == field_name for f in entry.config_fields))


def _load_builtins():
    # The built-in methods register on import; importing here keeps callers
    # independent of import order (the registry sits below the method modules).
    import tf_freetickets.sparse.methods  # noqa: F401
