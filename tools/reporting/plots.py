"""Matplotlib figures of a study: reliability diagrams and accuracy against training FLOPs.

matplotlib is imported inside the functions (Agg backend), so the package
works without it; `pip install matplotlib` (in the [test] extra) for figures.
"""

import numpy as np


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("Figures need matplotlib: pip install matplotlib") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pool_reliability(bins_list):
    """Pools reliability bins of several runs (seeds) into one diagram's bins.

    Args:
      bins_list: list of dicts with equal-length lists "counts", "confidence",
        "accuracy" (what `evaluation.evaluate_members` stores under "reliability").

    Returns:
      dict of numpy arrays "counts" (summed), "confidence" and "accuracy"
      (count-weighted means per bin; 0 for bins empty in every run).

    Raises:
      ValueError: no runs, or runs with different numbers of bins.
    """
    if not bins_list:
        raise ValueError("pool_reliability needs at least one run's bins.")
    lengths = [len(b["counts"]) for b in bins_list]
    if len(set(lengths)) != 1:
        raise ValueError(f"Every run needs the same number of bins, got {lengths}.")
    counts = np.array([b["counts"] for b in bins_list], dtype=np.float64)
    total = counts.sum(axis=0)
    safe = np.maximum(total, 1.0)
    pooled = {"counts": total.astype(np.int64)}
    for key in ("confidence", "accuracy"):
        pooled[key] = (counts * np.array([b[key] for b in bins_list], dtype=np.float64)).sum(axis=0) / safe
    return pooled


def reliability_figure(bins_by_run, path, columns=4):
    """Saves a grid of reliability diagrams (one panel per run) as a PNG.

    Each panel draws the accuracy of every non-empty confidence bin as a bar at
    the bin, the gap to the bin's mean confidence in red and the diagonal of
    perfect calibration; the title gives the run and its pooled ECE.

    Args:
      bins_by_run: {run name: pooled bins (`pool_reliability`)}, in panel order.
      path: output .png path.
      columns: panels per row.
    """
    plt = _pyplot()
    names = list(bins_by_run)
    rows = int(np.ceil(len(names) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.0 * columns, 3.0 * rows), squeeze=False, sharex=True, sharey=True)
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        bins = bins_by_run[name]
        num_bins = len(bins["counts"])
        edges = np.linspace(0.0, 1.0, num_bins + 1)
        filled = np.asarray(bins["counts"]) > 0
        centers, width = (edges[:-1] + edges[1:]) / 2, 1.0 / num_bins
        accuracy, confidence = np.asarray(bins["accuracy"]), np.asarray(bins["confidence"])
        ax.bar(centers[filled], accuracy[filled], width=width, edgecolor="black", color="tab:blue", label="accuracy")
        ax.bar(
            centers[filled], (confidence - accuracy)[filled], bottom=accuracy[filled], width=width,
            color="tab:red", alpha=0.35, label="gap to confidence",
        )  # fmt: skip
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        counts = np.asarray(bins["counts"], dtype=np.float64)
        ece = float(np.sum(counts * np.abs(accuracy - confidence)) / max(counts.sum(), 1.0))
        ax.set_title(f"{name}  pooled ECE {ece:.4f}", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    for ax in axes[-1]:
        ax.set_xlabel("confidence")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    axes.flat[0].legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def log_x_axis(ax):
    """A log x axis labelled plainly at 1, 2 and 5 per decade (the default minor labels, 2x10^-1, ... collide)."""
    from matplotlib import ticker

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def accuracy_flops_figure(points, path, reference=None):
    """Saves test accuracy (mean ± std over seeds) against training FLOPs as a PNG.

    Args:
      points: {run name: (relative training FLOPs, accuracy mean, accuracy std, family, sparsity)};
        runs of one family share a colour, runs of one sparsity a marker (dense: circles); a
        second run of the same family and sparsity (an ablation) gets a marker of its own.
      path: output .png path.
      reference: optional run name whose accuracy is drawn as a horizontal line.
    """
    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(8.0, 4.5))
    families = list(dict.fromkeys(p[3] for p in points.values()))
    palette = plt.get_cmap("tab10" if len(families) <= 10 else "tab20")
    colours = {f: palette(i % palette.N) for i, f in enumerate(families)}
    sparsities = sorted({p[4] for p in points.values() if p[4] is not None})
    markers = {None: "o", **{s: "s^Dvp"[i % 5] for i, s in enumerate(sparsities)}}
    earlier_runs = {}  # (family, sparsity) -> runs drawn with that style so far
    for name, (flops, mean, std, family, sparsity) in points.items():
        repeats = earlier_runs.get((family, sparsity), 0)
        earlier_runs[(family, sparsity)] = repeats + 1
        marker = markers[sparsity] if repeats == 0 else "PXh*<>"[(repeats - 1) % 6]
        ax.errorbar(flops, mean, yerr=std, fmt=marker, color=colours[family], capsize=3, label=name)
    if reference in points:
        ax.axhline(points[reference][1], color="gray", linestyle=":", linewidth=1)
    log_x_axis(ax)
    ax.set_xlabel("training FLOPs (x one dense model)")
    ax.set_ylabel("test accuracy (ensemble)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def exploration_ablation_figure(points, path):
    """Saves the EDST exploration ablation: four panels against the exploration length t_ex / E.

    Args:
      points: {t_ex / E: {metric: (mean, std, n)}} for the metrics
        "ticket_overlap", "disagreement", "accuracy" and "ece" (a missing
        metric leaves its panel empty).
      path: output .png path.
    """
    plt = _pyplot()
    panels = (("ticket_overlap", "ticket mask overlap"), ("disagreement", "member disagreement"),
              ("accuracy", "ensemble test accuracy"), ("ece", "ensemble test ECE"))  # fmt: skip
    fig, axes = plt.subplots(1, len(panels), figsize=(13.0, 3.2))
    fractions = sorted(points)
    for ax, (key, title) in zip(axes, panels):
        xs = [f for f in fractions if key in points[f]]
        ax.errorbar(xs, [points[f][key][0] for f in xs], yerr=[points[f][key][1] for f in xs], fmt="o-", capsize=3)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("exploration length t_ex / E")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


VERDICT_COLOURS = {"holds": "tab:green", "does not hold": "tab:red", "inconclusive": "tab:gray"}


def matplotlib_formatter(function):
    """A matplotlib tick formatter calling `function(value, position)`."""
    from matplotlib import ticker

    return ticker.FuncFormatter(function)


def forest_figure(groups, path, xlabel="difference in the claimed direction (% of the baseline's mean)"):
    """Saves a forest plot: one row per claim, its effect and 95% CI, the claims grouped in panels by paper.

    Args:
      groups: {paper: [(label, effect, low, high, verdict)]}, the effect and its
        CI signed so that positive favours the claim (NaN low / high: no CI);
        holds / does not hold / inconclusive are green / red / gray, any other
        verdict (incomplete) an open gray marker.
      path: output .png path.
      xlabel: the x axis title (symmetric-log axis, linear within +-1).
    """
    plt = _pyplot()
    papers = [p for p, rows in groups.items() if rows]
    heights = [max(len(groups[p]), 1) + 1 for p in papers] or [1]
    fig, axes = plt.subplots(len(heights), 1, figsize=(10.0, 0.28 * sum(heights) + 1.2), sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": heights})  # fmt: skip
    for ax, paper in zip(axes[:, 0], papers):
        rows = groups[paper]
        for y, (_, effect, low, high, verdict) in enumerate(rows):
            colour = VERDICT_COLOURS.get(verdict, "0.6")
            if not (np.isnan(low) or np.isnan(high)):
                ax.plot([low, high], [y, y], color=colour, linewidth=1.6)
            filled = verdict in VERDICT_COLOURS
            ax.plot([effect], [y], "o", color=colour, markerfacecolor=colour if filled else "white", markersize=5)
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([row[0] for row in rows], fontsize=7)
        ax.set_ylim(len(rows) - 0.5, -0.7)
        ax.set_title(paper, fontsize=9, loc="left")
        ax.grid(True, axis="x", alpha=0.3)
    bottom = axes[-1, 0]
    bottom.set_xscale("symlog", linthresh=1.0)
    values = [abs(v) for rows in groups.values() for row in rows for v in row[1:4] if np.isfinite(v)]
    reach = 10.0 ** np.ceil(np.log10(max([1.0, *values]) * 1.05))  # the next power of ten past every point
    bottom.set_xlim(-reach, reach)
    ticks = [0.0] + [s * 10.0**k for k in range(int(np.log10(reach)) + 1) for s in (-1.0, 1.0)]
    bottom.set_xticks(sorted(ticks))
    bottom.xaxis.set_major_formatter(matplotlib_formatter(lambda x, _: f"{x:+g}%" if x else "0"))
    bottom.set_xlabel(xlabel)
    if not papers:
        bottom.text(0.5, 0.5, "no claim measured yet", ha="center", va="center", transform=bottom.transAxes)
    handles = [plt.Line2D([], [], marker="o", color=c, label=v) for v, c in VERDICT_COLOURS.items()]
    handles.append(plt.Line2D([], [], marker="o", color="0.6", markerfacecolor="white", label="incomplete"))
    axes[0, 0].legend(handles=handles, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=4, fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
