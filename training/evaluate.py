"""Evaluate exported ONNX models (the files the service serves) on any source.

    python -m training.evaluate --models-dir models                       # the held-out split
    python -m training.evaluate --source folders --faces ppb/ --non-faces neg/   # a labelled set

When the face folder has group sub-folders (e.g. LF/ LM/ DF/ DM/), accuracy per group and the gap
between the best and the worst group are reported, and a bar chart compares the models per group.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from training.config import default_cache_dir
from training.data.h5 import DataError, H5Source
from training.data.image import to_model_input
from training.data.sources import manifest_split, open_source, stratified_split
from training.metrics import binary_metrics, group_metrics

log = logging.getLogger(__name__)
CLASSIFIER_GRAPH = {"cnn": "classifier", "dbvae": "encoder"}


def load_manifest(models_dir: Path) -> dict:
    path = models_dir / "manifest.json"
    if not path.is_file():
        raise DataError(f"no manifest.json in {models_dir}: train and export first (python -m training)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from exc


def onnx_probabilities(graph: Path, source: H5Source, indices: np.ndarray, batch: int = 256) -> np.ndarray:
    """Face probability [N] from an ONNX graph whose first output is the face logit."""
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    name_in, name_logit = session.get_inputs()[0].name, session.get_outputs()[0].name
    out = []
    for i in range(0, len(indices), batch):
        x = to_model_input(source.read(indices[i:i + batch]))
        logit = session.run([name_logit], {name_in: x})[0].astype(np.float64)
        out.append(1.0 / (1.0 + np.exp(-logit)))
    return np.concatenate(out) if out else np.zeros(0)


def evaluate_models(models_dir: Path, manifest: dict, source: H5Source, indices: np.ndarray) -> dict:
    y = source.labels[indices]
    result = {"data": {**source.describe(), "evaluated": int(len(indices)), "faces_evaluated": int(y.sum())},
              "models": {}}
    for kind, entry in manifest["models"].items():
        graph = models_dir / entry["graphs"][CLASSIFIER_GRAPH[kind]]
        prob = onnx_probabilities(graph, source, indices)
        threshold = float(entry.get("threshold", 0.5))
        metrics = binary_metrics(y, prob, threshold)
        if source.groups is not None and source.group_names:
            metrics["per_group"] = group_metrics(y, prob, source.groups[indices], source.group_names, threshold)
        result["models"][kind] = {"version": entry.get("version"), "threshold": threshold, **metrics}
    return result


def format_table(result: dict) -> str:
    cols = ["accuracy", "balanced_accuracy", "precision", "recall", "specificity", "roc_auc"]
    lines = [f"{'model':<8}" + "".join(f"{c:>19}" for c in cols)]
    for kind, m in result["models"].items():
        lines.append(f"{kind:<8}" + "".join(f"{m[c]:>19.3f}" for c in cols))
        if "per_group" in m:
            groups = ", ".join(f"{g} {v['accuracy']:.3f} (n={v['n']})" for g, v in m["per_group"]["groups"].items())
            lines.append(f"{'':<8}per group: {groups}; gap {m['per_group']['gap']:.3f}")
    return "\n".join(lines)


def manifest_markdown(manifest: dict) -> str:
    """The manifest's held-out metrics as a Markdown table (what `make readme` puts in the README)."""
    data = manifest["data"]
    cols = ["accuracy", "balanced_accuracy", "precision", "recall", "specificity", "roc_auc"]
    lines = [f"Measured by `python -m training` on {manifest['created']} (source `{data['source']}`; held-out split: "
             f"{data['val']['faces']} faces, {data['val']['non_faces']} non-faces; ONNX Runtime on the exported files):",
             "", "| model | version | " + " | ".join(c.replace("_", " ") for c in cols) + " |",
             "|---|---|" + "---:|" * len(cols)]
    for kind, entry in manifest["models"].items():
        val = entry["metrics"]["val"]
        lines.append(f"| {kind} | `{entry['version']}` | " + " | ".join(f"{val[c]:.3f}" for c in cols) + " |")
    return "\n".join(lines)


def update_readme(readme: Path, manifest: dict) -> None:
    start, end = "<!-- metrics:start -->", "<!-- metrics:end -->"
    text = readme.read_text()
    if start not in text or end not in text:
        raise DataError(f"{readme} has no {start} ... {end} markers")
    head, rest = text.split(start, 1)
    readme.write_text(head + start + "\n" + manifest_markdown(manifest) + "\n" + end + rest.split(end, 1)[1])


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


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", default="models", help="directory with the ONNX files and manifest.json")
    ap.add_argument("--source", choices=["manifest", "builtin", "h5", "folders"], default="manifest",
                    help="manifest: the data the models were trained on (default)")
    ap.add_argument("--h5", default="", help="--source h5: file in the MIT lab layout")
    ap.add_argument("--faces", default="", help="--source folders: face images (group sub-folders allowed)")
    ap.add_argument("--non-faces", default="", help="--source folders: non-face images")
    ap.add_argument("--split", choices=["val", "all"], default=None,
                    help="val: the held-out split of training (default for --source manifest); all: every image")
    ap.add_argument("--cache-dir", default=default_cache_dir())
    ap.add_argument("--out", default="eval.json", help="JSON result")
    ap.add_argument("--chart", default="eval_groups.png", help="per-group bar chart (written when groups exist)")
    ap.add_argument("--update-readme", metavar="README", default="",
                    help="only rewrite the metrics table of README from the manifest, then exit")
    return ap.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    models_dir = Path(args.models_dir)
    manifest = load_manifest(models_dir)
    data = manifest.get("data", {})
    if args.source == "manifest":
        source, _, indices = manifest_split(data, args.cache_dir)
        split = args.split or "val"
    else:
        source = open_source(args.source, h5=args.h5, faces=args.faces, non_faces=args.non_faces,
                             cache_dir=args.cache_dir)
        split = args.split or "all"
        if split == "val":  # the same fraction and seed as the manifest's training split
            indices = stratified_split(source.labels, data.get("val_fraction", 0.2), data.get("seed", 0))[1]
    if split == "all":
        indices = np.arange(len(source))
    result = evaluate_models(models_dir, manifest, source, indices)
    result["split"] = split
    if getattr(source, "skipped", 0):
        result["data"]["skipped_unreadable"] = source.skipped
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    chart = group_chart(result, Path(args.chart))
    result["chart"] = str(chart) if chart else None
    return result


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = parse_args(argv)
    try:
        if args.update_readme:
            update_readme(Path(args.update_readme), load_manifest(Path(args.models_dir)))
            print(f"updated the metrics table in {args.update_readme}")
            return 0
        result = run(args)
    except (DataError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(result))
    print(f"wrote {args.out}" + (f" and {result['chart']}" if result["chart"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
