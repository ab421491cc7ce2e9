"""Evaluation results for people: the fixed-width metrics table, the fairness card as text, Markdown and a chart,
and the photo sheets (used by `python -m training`, `python -m training.evaluate`, the model report and the
README writer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

METRIC_COLUMNS = ["accuracy", "balanced_accuracy", "precision", "recall", "specificity", "roc_auc"]


def format_table(result: dict) -> str:
    cols = METRIC_COLUMNS
    lines = [f"{'model':<8}" + "".join(f"{c:>19}" for c in cols)]
    for kind, m in result["models"].items():
        lines.append(f"{kind:<8}" + "".join(f"{m[c]:>19.3f}" for c in cols))
    cards = {k: m["fairness"] for k, m in result["models"].items() if m.get("fairness")}
    return "\n".join(lines) + ("\n\n" + card_text(cards) if cards else "")


def _figure(v: float | None, ci: list | None, digits: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else f"{v:.{digits}f}"


def card_rows(cards: dict, part: str) -> tuple[list[str], list[list[str]]] | None:
    """One breakdown ("by_rarity" or "by_group") of every model's card, side by side: -> (header, rows), the last
    two rows the largest difference and the smallest ratio of recall; None when no card has it."""
    parts = {k: c[part] for k, c in cards.items() if c.get(part)}
    if not parts:
        return None
    first = next(iter(parts.values()))
    header = ["decile" if first["kind"] == "rarity" else "group", "faces"]
    header += [f"{k} recall" for k in parts] + [f"{k} mean score" for k in parts]
    rows = []
    for i, b in enumerate(first["bins"]):
        rows.append([b["name"], str(b["faces"])] + [_figure(p["bins"][i]["recall"], p["bins"][i]["recall_ci"])
                                                    for p in parts.values()]
                    + [_figure(p["bins"][i]["mean_score"], p["bins"][i]["mean_score_ci"], 3) for p in parts.values()])
    for label, key in (("largest difference", "largest_difference"), ("smallest ratio", "smallest_ratio")):
        rows.append([label, ""] + [_figure(p[key], p[f"{key}_ci"]) for p in parts.values()] + [""] * len(parts))
    return header, rows


def card_caption(cards: dict) -> str:
    card = next(iter(cards.values()))
    d, b = card["data"], card["bootstrap"]
    return (f"Faces: {d['faces']} ({d.get('evaluated', 'the evaluated set')}); recall at each model's threshold and "
            f"the mean face probability, {b['confidence']:.0%} intervals from a seeded bootstrap ({b['resamples']} "
            f"resamples, seed {b['seed']})." + (f" Rarity: {d['rarity']}." if d.get("rarity") else ""))


def card_text(cards: dict) -> str:
    """The cards as fixed-width text, for the terminal."""
    lines = ["Fairness card. " + card_caption(cards)]
    for part in ("by_group", "by_rarity"):
        table = card_rows(cards, part)
        if table:
            header, rows = table
            widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
            lines += [""] + ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                                       enumerate(zip(r, widths))) for r in [header, *rows]]
    return "\n".join(lines)


def card_markdown(cards: dict) -> str:
    """The cards as Markdown tables with their caption and the training data's provenance (README, eval card)."""
    lines = [card_caption(cards), ""]
    for part, title in (("by_group", "Per group"), ("by_rarity", "Per rarity decile (no labels needed)")):
        table = card_rows(cards, part)
        if table:
            header, rows = table
            lines += [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    t = next(iter(cards.values()))["data"].get("training_data")
    if t:
        lines.append("Training data: " + "; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in t.items() if v) + ".")
    return "\n".join(lines)


def fairness_chart(cards: dict, path: Path, footer: str = "", colours: dict | None = None) -> Path | None:
    """Recall and mean face probability per bin, one bar per model with its bootstrap interval as an error bar:
    per group when the cards have groups, and per rarity decile; None when no card has either."""
    parts = [p for p in ("by_group", "by_rarity") if any(c.get(p) for c in cards.values())]
    if not parts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(parts), 2, figsize=(11, 3.4 * len(parts)), squeeze=False)
    for row, part in zip(axes, parts):
        models = {k: c[part] for k, c in cards.items() if c.get(part)}
        bins = next(iter(models.values()))["bins"]
        xs, width = np.arange(len(bins)), 0.8 / len(models)
        for ax, key, label in zip(row, ("recall", "mean_score"), ("recall", "mean face probability")):
            for i, (kind, p) in enumerate(models.items()):
                vals = np.array([np.nan if b[key] is None else b[key] for b in p["bins"]])
                ci = np.array([b[f"{key}_ci"] or [np.nan, np.nan] for b in p["bins"]], dtype=float)
                err = np.abs(np.vstack([vals - ci[:, 0], ci[:, 1] - vals]))
                ax.bar(xs + (i - (len(models) - 1) / 2) * width, vals, width, yerr=err, capsize=2,
                       color=(colours or {}).get(kind), label=kind.upper())
            names = [b["name"].replace(" (", "\n(") for b in bins]
            ax.set_xticks(xs, [f"{n}\nn={b['faces']}" for n, b in zip(names, bins)], fontsize=7)
            ax.set_ylim(0, 1.08)
            ax.set_ylabel(label)
            ax.set_title(f"{label} per {'group' if part == 'by_group' else 'latent-rarity decile'}", fontsize=10)
            ax.legend(fontsize=7, loc="lower right")
    if footer:
        fig.text(0.01, 0.005, footer, fontsize=7, color="0.3", ha="left", va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.06 if footer else 0, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
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
