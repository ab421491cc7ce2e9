"""Evaluation results for people: a fixed-width text table and the per-group bar chart (used by
`python -m training.evaluate` and the model report, bench/report.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

METRIC_COLUMNS = ["accuracy", "balanced_accuracy", "precision", "recall", "specificity", "roc_auc"]


def format_table(result: dict) -> str:
    cols = METRIC_COLUMNS
    lines = [f"{'model':<8}" + "".join(f"{c:>19}" for c in cols)]
    for kind, m in result["models"].items():
        lines.append(f"{kind:<8}" + "".join(f"{m[c]:>19.3f}" for c in cols))
        if "per_group" in m:
            groups = ", ".join(f"{g} {v['accuracy']:.3f} (n={v['n']})" for g, v in m["per_group"]["groups"].items())
            lines.append(f"{'':<8}per group: {groups}; gap {m['per_group']['gap']:.3f}")
    return "\n".join(lines)


def group_chart(result: dict, path: Path, footer: str = "", colours: dict | None = None) -> Path | None:
    """Face accuracy (recall) per group, one bar per model with its best-worst gap in the legend; None when the
    set has no groups. `footer` (where the data came from) is printed under the chart."""
    per = {k: m["per_group"] for k, m in result["models"].items() if "per_group" in m}
    if not per:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({g for pg in per.values() for g in pg["groups"]})
    counts = next(iter(per.values()))["groups"]  # the same faces for every model
    width = 0.8 / len(per)
    fig, ax = plt.subplots(figsize=(2.5 + 1.2 * len(groups), 3.8))
    for i, (kind, pg) in enumerate(per.items()):
        xs = np.arange(len(groups)) + (i - (len(per) - 1) / 2) * width
        ax.bar(xs, [pg["groups"].get(g, {}).get("accuracy", np.nan) for g in groups], width,
               color=(colours or {}).get(kind), label=f"{kind.upper()} (gap {pg['gap']:.3f})")
    ax.set_xticks(np.arange(len(groups)), [f"{g}\nn={counts.get(g, {}).get('n', 0)}" for g in groups])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("face accuracy (recall)")
    ax.set_title("Face accuracy per group", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    if footer:
        fig.text(0.01, 0.005, footer, fontsize=7, color="0.3", ha="left", va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.05 if footer else 0, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
