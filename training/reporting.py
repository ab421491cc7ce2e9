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


def photo_sheet(result: dict, kind: str, photos: Path, truth: dict, path: Path, tile: int = 480,
                only: list[str] | None = None) -> Path:
    """Every photo with its true boxes (green; 'difficult' ones grey) and what `kind` found (blue: a face it got
    right, red: a false alarm, yellow: a difficult face), score beside each; tiles `tile` px wide, 3 a row."""
    from PIL import Image, ImageDraw

    from training.evaluation import open_photo

    found = result["models"][kind]["photos"]
    tiles = []
    for name, per in found.items():
        if only is not None and name not in only:
            continue
        image = open_photo(photos / name)
        s = tile / image.width
        image = image.resize((tile, max(1, round(image.height * s))))
        draw = ImageDraw.Draw(image)
        for x, y, w, h, difficult in truth.get(name, []):
            draw.rectangle([x * s, y * s, (x + w) * s, (y + h) * s], outline=(150, 150, 150) if difficult else (0, 200, 0),
                           width=3)
        for (x, y, w, h, score), outcome in zip(per["found"], per["outcome"]):
            colour = {1: (30, 120, 255), 0: (255, 40, 40), -1: (255, 210, 0)}[outcome]
            draw.rectangle([x * s, y * s, (x + w) * s, (y + h) * s], outline=colour, width=2)
            draw.text((x * s + 2, y * s + 2), f"{score:.2f}", fill=colour)
        draw.text((4, 4), name, fill=(255, 255, 255))
        tiles.append(image)
    cols = min(3, max(1, len(tiles)))
    rows = [tiles[i:i + cols] for i in range(0, len(tiles), cols)]
    heights = [max(t.height for t in row) for row in rows]
    m = result["models"][kind]
    header = 28
    sheet = Image.new("RGB", (cols * tile, header + sum(heights)), (255, 255, 255))
    ImageDraw.Draw(sheet).text((6, 8), f"{kind} {m['version']}: precision {m['precision']:.2f}, recall {m['recall']:.2f}, "
                                       f"AP {m['average_precision']:.2f} at IoU 0.5; green: true faces, blue: found, "
                                       f"red: false alarms", fill=(0, 0, 0))
    top = header
    for row, height in zip(rows, heights):
        for i, t in enumerate(row):
            sheet.paste(t, (i * tile, top))
        top += height
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
