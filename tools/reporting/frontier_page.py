"""The frontier page of tools/bench_frontier.py: quality against batch-1 latency and file size, table and figure.

Quality comes from the long_v2 study JSON (mean ± std over every record of a row); latency, size
and max abs diff from the frontier measurement of one seed group's models.
"""

import os

from reporting.plots import _pyplot, log_x_axis
from reporting.results_page import records_by_cell
from reporting.tables import aggregate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUALITY = (("accuracy", "accuracy", True), ("nll", "NLL", False), ("ece", "ECE", False),
           ("ood_auroc", "OoD AUROC", True))  # fmt: skip


def quality(studies):
    """{row: {metric: (mean, std, n)}} over every record of each row of the study JSONs (row names are unique)."""
    keys = [k for k, _, _ in QUALITY]
    return {row: aggregate(records, keys) for study in studies for row, records in records_by_cell(study).items()}


def _timed(forms):
    return [f for f in forms if "ms" in f]


def fastest(forms):
    """{row: the timed form of the smallest median latency}."""
    best = {}
    for form in _timed(forms):
        if form["row"] not in best or form["ms"] < best[form["row"]]["ms"]:
            best[form["row"]] = form
    return best


def smallest(forms):
    """{row: the exported form of the smallest file}."""
    best = {}
    for form in forms:
        if "bytes" in form and (form["row"] not in best or form["bytes"] < best[form["row"]]["bytes"]):
            best[form["row"]] = form
    return best


def _cell(summary, key, digits=4):
    if key not in summary:
        return "–"
    mean, std, n = summary[key]
    return f"{mean:.{digits}f} ± {std:.{digits}f} ({n})"


def _ratio(value):
    return "–" if value is None else f"{value:.2f}x"


def missing_lines(missing, json_paths):
    """One line per run whose files were missing, with the command that retrains it (from its study's record)."""
    import json

    commands = {}
    for path in json_paths:
        if os.path.exists(path):
            with open(path) as f:
                commands.update({(r["cell"], int(r["seed"])): r.get("command", "") for r in json.load(f)["records"]})
    lines = []
    for item in missing:
        command = commands.get((item["run"], int(item["seed"])), "(no record: run the study for this seed group)")
        lines.append(f"{item['row']}: no model files for {item['run']} seed {item['seed']}; retrain with: {command}")
    return lines


def summary_table(result, studies):
    """Markdown: per row, its fastest form (ms, ratio to one dense twin, size) and its quality."""
    scores, best, small = quality(studies), fastest(result["forms"]), smallest(result["forms"])
    lines = [
        "| row | M | fastest form | batch-1 ms | vs one dense twin (SavedModel) | vs dense twin, same runtime "
        "| smallest file | accuracy | NLL | ECE | OoD AUROC |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row, form in best.items():
        s = scores.get(row, {})
        size = small[row]
        lines.append(
            f"| {row} | {form['members']} | {form['form']} | {form['ms']:.3f} | {form['ratio_to_dense_twin']:.2f}x | "
            f"{_ratio(form.get('ratio_same_runtime'))} | {size['bytes'] / 1e3:.0f} KB ({size['form']}) | "
            f"{_cell(s, 'accuracy')} | {_cell(s, 'nll')} | {_cell(s, 'ece')} | {_cell(s, 'ood_auroc')} |"
        )
    return "\n".join(lines)


def forms_table(result):
    """Markdown: every form of every row (ms, ratio, size, max abs diff), or why it was not served."""
    lines = [
        "| row | form | batch-1 ms | vs one dense twin (SavedModel) | vs dense twin, same runtime | file | max abs diff |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in result["forms"]:
        if "skipped" in f:
            reason = f["skipped"].split("; ")[0]  # the first clause names the refused layer; the JSON keeps all
            lines.append(f"| {f['row']} | {f['form']} | – | – | – | – | not served: {reason} |")
            continue
        ms = f"{f['ms']:.3f}" if "ms" in f else "–"
        ratio = f"{_ratio(f.get('ratio_to_dense_twin'))} | {_ratio(f.get('ratio_same_runtime'))}"
        lines.append(f"| {f['row']} | {f['form']} | {ms} | {ratio} | {f['bytes'] / 1e3:.0f} KB | "
                     f"{f['max_abs_diff']:.1e} |")  # fmt: skip
    return "\n".join(lines)


def _dense_lines(ax, forms):
    """Dotted verticals at the dense row's SavedModel and TFLite latency: the twins of each runtime."""
    for form in forms:
        if form["row"] == "dense" and form["form"] in ("SavedModel", "TFLite") and "ms" in form:
            ax.axvline(form["ms"], color="gray", linestyle=":", linewidth=1)
            ax.annotate(f"dense {form['form']}", (form["ms"], 1.0), xycoords=("data", "axes fraction"), fontsize=6,
                        rotation=90, va="top", ha="right", color="gray")  # fmt: skip


def frontier_figure(result, studies, path):
    """Saves the frontier PNG: each quality metric against batch-1 ms (top) and file size (bottom).

    Each row is one point (mean ± std over its runs) at its fastest form's latency (top) and its
    smallest form's file (bottom); ensembles are squares, single models circles.
    """
    plt = _pyplot()
    scores, best, small = quality(studies), fastest(result["forms"]), smallest(result["forms"])
    rows = [r for r in best if r in scores]
    palette = plt.get_cmap("tab10")
    colours = {row: palette(i % palette.N) for i, row in enumerate(rows)}
    fig, axes = plt.subplots(2, len(QUALITY), figsize=(4.2 * len(QUALITY), 8.0))
    for column, (key, title, higher) in enumerate(QUALITY):
        for line, (chosen, xlabel) in enumerate(((best, "batch-1 latency (ms), fastest form"),
                                                  (small, "file size (KB), smallest form"))):  # fmt: skip
            ax = axes[line][column]
            for index, row in enumerate(rows):
                if key not in scores[row]:
                    continue
                mean, std, _ = scores[row][key]
                x = chosen[row]["ms"] if line == 0 else chosen[row]["bytes"] / 1e3
                marker = "s" if chosen[row]["members"] > 1 else "o"
                marker = marker if index < palette.N else {"s": "D", "o": "^"}[marker]
                ax.errorbar(x, mean, yerr=std, fmt=marker, color=colours[row], capsize=3, label=row)
            if line == 0:
                _dense_lines(ax, result["forms"])
            log_x_axis(ax)
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_ylabel(f"{title} ({'higher' if higher else 'lower'} is better)", fontsize=8)
            ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def page(result, studies, figure_path=None):
    """The markdown of one frontier run (and the figure, when `figure_path` is given)."""
    machine, config = result["machine"], result["config"]
    lines = [
        f"CPU: {machine['cpu_model']} ({machine['cpu_count']} cores, load average at start "
        f"{machine['load_average_at_start']}), TensorFlow {machine['tensorflow']}, Keras {machine['keras']}, "
        f"{config['threads']} thread(s), batch 1, {config['repeats']} interleaved windows of ~{config['window_s']} s, "
        f"medians; models of seed group {config['seed']}; quality from {' and '.join(config['json'])} "
        "(mean ± std (runs)).",
        "",
        summary_table(result, studies),
        "",
        "Every form:",
        "",
        forms_table(result),
    ]
    if result.get("missing"):
        lines += ["", "Not timed (model files missing):", ""]
        paths = [os.path.join(ROOT, path) for path in config["json"]]
        lines += [f"- {line}" for line in missing_lines(result["missing"], paths)]
    if figure_path:
        os.makedirs(os.path.dirname(os.path.abspath(figure_path)), exist_ok=True)
        frontier_figure(result, studies, figure_path)
        lines += ["", f"Figure: {figure_path}"]
    return "\n".join(lines) + "\n"
