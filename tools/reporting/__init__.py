"""Reporting of multi-seed studies: mean ± std tables, study definitions and matplotlib figures.

- tables: aggregate per-seed figures into mean ± sample std and render markdown tables.
- study: the cells of a method comparison (config file + overrides) and their configs per seed.
- plots: reliability diagrams and accuracy-vs-training-FLOPs plots (matplotlib, imported lazily).
"""

from reporting.study import Cell, cell_config, load_config, rerun_command
from reporting.tables import Column, aggregate, markdown_table, mean_std

__all__ = ["Cell", "Column", "aggregate", "cell_config", "load_config", "markdown_table", "mean_std", "rerun_command"]
