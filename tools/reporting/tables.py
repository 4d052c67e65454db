"""Mean ± std over seeds, rendered as markdown tables."""

import dataclasses

import numpy as np


def mean_std(values):
    """(mean, sample standard deviation) of `values`; the std is 0.0 for a single value.

    Args:
      values: a non-empty sequence of numbers (one per seed).

    Raises:
      ValueError: empty `values`.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("mean_std needs at least one value.")
    std = float(np.std(values, ddof=1)) if values.size > 1 else 0.0
    return float(np.mean(values)), std


@dataclasses.dataclass(frozen=True)
class Column:
    """One table column: the record key, its header and how to print it.

    Attributes:
      key: key of the per-seed record (dict of floats).
      header: column title.
      fmt: format of one number, e.g. "{:.4f}".
      show_std: print "mean ± std" (False: the mean alone, for figures that do
        not vary over seeds such as FLOPs).
    """

    key: str
    header: str
    fmt: str = "{:.4f}"
    show_std: bool = True


def aggregate(records, keys):
    """{key: (mean, std, n)} over the records that have the key.

    Args:
      records: list of dicts (one per seed) of numbers.
      keys: keys to aggregate; a key no record has is left out.
    """
    summary = {}
    for key in keys:
        values = [r[key] for r in records if r.get(key) is not None]
        if values:
            summary[key] = (*mean_std(values), len(values))
    return summary


def markdown_table(rows, columns, first_header="run", count_header="seeds"):
    """A markdown table with one row per run and mean ± std cells.

    Args:
      rows: {run name: list of per-seed records (dicts)}, in display order.
      columns: list of `Column`.
      first_header: title of the run-name column.
      count_header: title of the column of record counts.

    Returns:
      str; a cell no record of the run has prints "–", and a "seeds" column
      (`count_header`) gives the number of records per run.
    """
    lines = [
        f"| {first_header} | {count_header} | " + " | ".join(c.header for c in columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for name, records in rows.items():
        stats = aggregate(records, [c.key for c in columns])
        cells = []
        for column in columns:
            if column.key not in stats:
                cells.append("–")
                continue
            mean, std, _ = stats[column.key]
            text = column.fmt.format(mean)
            cells.append(f"{text} ± {column.fmt.format(std)}" if column.show_std else text)
        lines.append(f"| {name} | {len(records)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
