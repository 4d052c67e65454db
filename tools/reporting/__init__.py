"""Reporting of multi-seed studies: mean ± std tables, study definitions and matplotlib figures.

- tables: aggregate per-seed figures into mean ± sample std and render markdown tables.
- study: the cells of a method comparison (config file + overrides) and their configs per seed.
- plots: reliability diagrams and accuracy-vs-training-FLOPs plots (matplotlib, imported lazily).
- study_runner: runs a study's cells for every seed, resumably, into one JSON of records.
- study_records: a run's record (flat figures, composed-ensemble figures, fit measures).
- environment: where a run ran (library versions, CPU and its vector ISA).
- results_page, long_page: the generated sections of docs/RESULTS.md (short and long study).
- long_study, claims: the long-training study's cells and the papers' claims judged on its records.
- significance, decided_page: the decided study (long_v2): claims tested (Welch's CI and p, Holm's
  adjustment, the verdict rule) and its section of the page (forest plot, OoD per set, temperature scaling).
- structured_study, structured_page: SRigL and Chase against the decided study's RigL rows (same settings,
  only the method differs), with the dead-unit and compacted-parameter fractions, and their section of the page.

Not part of the installed library: it lives in tools/, whose scripts import it as `reporting`
(a script's folder is on sys.path); tests/conftest.py puts tools/ on sys.path for the tests.
"""

from reporting.study import Cell, cell_config, load_config, rerun_command
from reporting.tables import Column, aggregate, markdown_table, mean_std

__all__ = ["Cell", "Column", "aggregate", "cell_config", "load_config", "markdown_table", "mean_std", "rerun_command"]
