"""`--config_help` lists every config field with its value and the meaning written beside its default."""

import os
import subprocess
import sys

from tf_freetickets.experiments.config import config_help, fashion_mnist_defaults, field_docs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fields(tree, prefix=""):
    for key, value in tree.items():
        if hasattr(value, "items"):
            yield from _fields(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_every_default_field_has_a_meaning():
    docs = field_docs()
    fields = sorted(_fields(fashion_mnist_defaults()))
    assert sorted(docs) == fields
    assert [f for f in fields if not docs[f]] == []
    assert docs["train_examples"] == "0 = whole training split; fewer for smoke runs"


def test_help_shows_the_config_values():
    config = fashion_mnist_defaults()
    config.sparse.sparsity = 0.8
    line = next(row for row in config_help(config).splitlines() if row.strip().startswith("config.sparse.sparsity "))
    assert line.split()[:2] == ["config.sparse.sparsity", "0.8"]
    assert line.endswith("fraction of pruned weights over the masked layers, in [0, 1)")


def test_binary_prints_the_help_of_a_config_file_and_nothing_on_stderr():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user runs it
    result = subprocess.run(
        [sys.executable, "-m", "tf_freetickets.train", "--config_help", "--config=configs/fashion_mnist_edst.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == ""  # no TensorFlow start-up lines
    rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()[1:]}
    assert len(rows) == len(list(_fields(fashion_mnist_defaults())))
    assert rows["config.ensemble.kind"] == "'edst'" and rows["config.width"] == "0.5"
