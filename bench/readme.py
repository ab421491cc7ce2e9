"""The one README writer: `python -m bench.readme` (or `make readme`) rewrites every generated part of README.md.

* between `<!-- metrics:start -->` and `<!-- metrics:end -->`: the held-out metrics of models/manifest.json;
* between `<!-- bench:start -->` and `<!-- bench:end -->`: every benchmark's figures, from the JSON files in
  bench/results/ the benchmarks wrote; each table names the file, the date and the machine load it ran under;
* between `<!-- digits:start -->` and `<!-- digits:end -->`: the digit experiment (`python -m training.digits`),
  from bench/results/digits.json;
* between `<!-- fairness:start -->` and `<!-- fairness:end -->`: the default models' fairness card (the manifest's)
  and the card on the photo set's faces (`python -m bench.fairness`, bench/results/fairness_photos.json).

No number there is typed by hand.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import read_result

from training.reporting import METRIC_COLUMNS, card_markdown

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
METRICS_START, METRICS_END = "<!-- metrics:start -->", "<!-- metrics:end -->"
DIGITS_START, DIGITS_END = "<!-- digits:start -->", "<!-- digits:end -->"
FAIRNESS_START, FAIRNESS_END = "<!-- fairness:start -->", "<!-- fairness:end -->"


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]  # "|x|" in a cell
    return out


def _source(name: str, data: dict) -> str:
    m = data.get("machine", {})
    load = m.get("load_average_1min_at_start")
    where = f"{m.get('cpu', m.get('platform', '?'))}, {m.get('logical_cores', m.get('cpu_count', '?'))} cores"
    return (f"_`bench/results/{name}.json`, {m.get('date', '')} on {where}"
            + (f", 1-min load {load:.1f} at start" if load is not None else "") + "._")


def inference(d: dict) -> list[str]:
    rows = [[r["model"], r["engine"], r["device"], r["batch"], f"{r['images_per_s']:,.0f}", f"{r['p50_ms']:.3f}",
             f"{r['p99_ms']:.3f}", f"{r['ratio_vs_pytorch']:.2f}" if r.get("ratio_vs_pytorch") else "",
             f"{r['max_abs_diff_vs_pytorch_cpu']:.1e}"]
            for r in d["rows"] if "default-options" not in r["engine"]]
    batch1 = [r for r in d["rows"] if r["engine"] == "onnxruntime" and r["device"] == "cpu" and r["batch"] == 1
              and r.get("ratio_vs_pytorch")]
    goal = [f"{r['model']} {r['ratio_vs_pytorch']:.2f}×" for r in batch1]
    met = bool(batch1) and all(r["ratio_vs_pytorch"] >= 5.0 for r in batch1)
    out = ["### Inference engines (`python -m bench.inference`)", "",
           *_table(["graph", "engine", "device", "batch", "images/s", "p50 ms", "p99 ms", "ORT / PyTorch",
                    "max abs diff"], rows), "",
           f"Goal, ONNX Runtime ≥ 5× PyTorch eager at batch 1 on CPU: {', '.join(goal)} — "
           f"{'met' if met else 'MISSED'}.", "", _source("inference", d)]
    long = read_result("inference_batch1_long")
    if long:
        st = long["settings"]
        pt = {r["model"]: r["p50_ms"] for r in long["rows"] if r["engine"] == "pytorch"}
        out += ["", f"A longer batch-1 run (`--batches 1 --seconds {st['seconds_per_cell']:g} --rounds {st['rounds']}`, "
                f"{long['machine']['date']}): " + ", ".join(
                    f"{r['model']} {r['ratio_vs_pytorch']:.2f}× (ORT {r['p50_ms']:.3f} vs PyTorch {pt[r['model']]:.3f} "
                    "ms at the median)" for r in long["rows"] if r.get("ratio_vs_pytorch"))
                + ". This VM's speed drifts between phases by up to ~1.8×, and the two engines do not slow down "
                "alike, so the ratio moves with it; `bench/results/inference_batch1_long.json`."]
    return out


def training(d: dict) -> list[str]:
    rows = [[r["model"], f"{r['epoch_images']:,}", f"{r['images_per_s']:,.0f}", f"{r['epoch_s']:,.0f}",
             f"{r['per_batch_ms']['load']:.1f}", f"{r['per_batch_ms']['augment']:.1f}",
             f"{r['per_batch_ms']['step']:.1f}", r["slowest_stage"]] for r in d["rows"]]
    rs = d["resampling_vs_numpy"]
    return ["### Training throughput (`python -m bench.training`)", "",
            *_table(["model", "epoch images", "images/s", "epoch s (extrapolated)", "load ms/batch",
                     "augment ms/batch", "step ms/batch", "slowest"], rows), "",
            f"Resampling probabilities for {rs['faces']:,} faces × {rs['latent_dim']} latent dimensions: vectorised "
            f"{rs['vectorised_s']:.3f} s, per-dimension NumPy loop {rs['numpy_per_dimension_s']:.3f} s "
            f"({rs['speedup']:.2f}×), max abs difference {rs['max_abs_diff']:.1e}.", "", _source("training", d)]


def quality(d: dict) -> list[str]:
    out = ["### Quality against classic detectors (`python -m bench.quality`)", ""]
    for name, rows in d["sets"].items():
        out += [f"On the {name} ({rows[0]['faces']} faces of {rows[0]['n']} images):", ""]
        out += _table(["detector", "balanced acc.", "face recall", "specificity", "ROC AUC", "images/s"],
                      [[r["detector"], f"{r['balanced_accuracy']:.3f}", f"{r['recall']:.3f}",
                        f"{r['specificity']:.3f}", f"{r['roc_auc']:.3f}", f"{r['images_per_s']:,.0f}"]
                       for r in rows])
        out.append("")
    spot = d.get("spot_check")
    if spot:
        names = [k for k in spot[0] if k not in ("picture", "face")]
        out += ["Spot check on eight real pictures that are in no training split — anecdotes, not statistics "
                "(face probability; the cascades' score is their neighbour count, a face from 3; **bold**: the "
                "detector says face):", ""]

        counts = {n for n in names if all(float(r[n]["score"]).is_integer() for r in spot)}  # the cascades

        def cell(name: str, v: dict) -> str:
            text = f"{v['score']:.0f}" if name in counts else f"{v['score']:.2f}"
            return f"**{text}**" if v["says_face"] else text

        out += _table(["picture", "truth", *names],
                      [[r["picture"], "face" if r["face"] else "not a face", *[cell(n, r[n]) for n in names]]
                       for r in spot])
        out.append("")
    return out + [_source("quality", d)]


def ddp(d: dict | None, acc: dict | None) -> list[str]:
    out = ["### Data-parallel training (`python -m bench.ddp`)", ""]
    if d:
        out += _table(["model", "processes", "threads each", "train images/s", "speed-up", "scaling efficiency",
                       "resampling pass s"],
                      [[r["model"], r["processes"], r["threads_per_process"], f"{r['train_images_per_s']:,.0f}",
                        f"{r['speed_up']:.2f}", f"{r['scaling_efficiency']:.2f}", f"{r['resample_s']:.1f}"]
                       for r in d["rows"]])
        s = d["settings"]
        out += ["", f"{s['images']:,} synthetic images, {s['steps']} steps of global batch {s['batch']}; "
                    f"{d['machine']['platform']}, {d['machine']['cpu_count']} cores, backend {d['machine']['backend']}.",
                ""]
    if acc:
        rows = [[r["processes"], kind, f"{r[kind]['balanced_accuracy']:.3f}", f"{r[kind]['roc_auc']:.3f}",
                 f"{r['wall_s']:.0f}"] for r in acc["rows"] for kind in ("cnn", "dbvae")]
        out += ["Default training on the built-in set, 1 process vs 2 (gloo), same global batch "
                "(`python -m bench.ddp --accuracy`):", "",
                *_table(["processes", "model", "val balanced acc.", "val ROC AUC", "wall s"], rows), "",
                "Gap in balanced accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in acc["gaps"].items())
                + f" (tolerance {acc['tolerance']}: {'within' if acc['within_tolerance'] else 'outside'})."]
    return out


def _cell(value) -> str:
    return f"{value:,.1f}" if isinstance(value, float) else ("" if value is None else str(value))


def load_workers(d: dict) -> list[str]:
    """bench.load's run of the default worker count beside one process and the floor (its own result file)."""
    servers = " ".join(dict.fromkeys(r["target"] for r in d["rows"]))
    return _load(d, "load_workers",
                 f"### The default worker count under load (`python -m bench.load --servers {servers} --out "
                 "load_workers`)",
                 "The same benchmark with fewer servers: `detect-workers` is the service as `python -m service` "
                 "starts it on this machine (`FACEDET_WORKERS` auto: one worker per usable core, each on its own "
                 "socket), beside one process (`detect`) and the framework floor, in the same run. Its CPU and "
                 "resident memory are summed over the supervisor and its workers (pages they share count once per "
                 "process).", "The own client:")


def load(d: dict) -> list[str]:
    workers = ("Every server is one process but `detect-workers`, `detect` with the default worker count (one per "
               "usable core), as `python -m service` starts; its CPU and memory are summed over its processes. "
               if any(r.get("target") == "detect-workers" for r in d["rows"]) else
               "Every server is one process (`FACEDET_WORKERS=1`); the default worker count is in the next section. ")
    return _load(d, "load", "### The service under load (`python -m bench.load`)",
                 "`detect` on the 640x480 JPEG finds every face in the photo (the localiser's pyramid scan); the naive "
                 "peer and the framework floor classify one centre crop or do no work, so on that payload they are no "
                 "like-for-like baseline: the localiser's own speed is in *Finding faces in photos* above. "
                 "`detect-unbounded` is `detect` with no bound on the event loop's inline work per turn "
                 "(`FACEDET_INLINE_TURN_BUDGET_MS`), as before that setting. " + workers +
                 "`errors` counts every answer other than 200 (the photo payload's 503s, `FACEDET_MAX_QUEUE_WAIT_S`, "
                 "among them; `p99_503_ms`: how fast they came).",
                 "The own client (`bench/load_client.py`: latencies after a 1 s warm-up on open connections):")


def _load(d: dict, name: str, heading: str, intro: str, own_title: str) -> list[str]:
    """A bench.load result (`name`.json): the own client's table, wrk's, the summary, the source line."""
    own = [r for r in d["rows"] if r.get("generator", "own") == "own"]
    wrk = [r for r in d["rows"] if r.get("generator") == "wrk"]
    keys = ["target", "payload", "concurrency", "rps", "p50_ms", "p95_ms", "p99_ms", "errors", "p99_503_ms"]
    out = [heading, "", intro, "", own_title, "", *_table(keys, [[_cell(r.get(k)) for k in keys] for r in own]), ""]
    if wrk:
        w = d.get("wrk") or {}
        keys = ["target", "payload", "concurrency", "rps", "p50_ms", "p99_ms", "p999_ms", "max_ms", "timeouts",
                "errors"]
        out += [f"wrk (one thread, {w.get('seconds', 0):g} s a cell, --timeout {w.get('timeout_s', 0):g} s; every "
                "request of the run counted, the first ones on each new connection included):", "",
                *_table(keys, [[_cell(r.get(k)) for k in keys] for r in wrk]), ""]
    if "summary" in d:
        out += ["```", *[f"{k}: {v}" for k, v in d["summary"].items()], "```", ""]
    return out + [_source(name, d)]


def memory(d: dict) -> list[str]:
    rows = [[r["kind"], r["upload"], f"{r['bytes']:,}", r["status"], f"{r['seconds']:.2f}", f"{r['added_mb']:.0f}"]
            for r in d["rows"]]
    mixes = [[m["mix"], "/".join(map(str, m["statuses"])), "/".join(map(str, m.get("normal_statuses", []))),
              f"{m['added_mb']:.0f}", f"{m['normal_alone_ms']:.0f}", f"{m['normal_during_ms']:.0f}",
              f"{m['wait_ms']:.0f}"] for m in d["mixes"]]
    return ["### Memory per request (`python -m bench.memory`)", "",
            "Peak resident memory each upload added to a running `python -m service` (VmHWM after, minus VmRSS "
            "before), on the default settings:", "",
            *_table(["kind", "upload", "bytes", "status", "s", "peak added MB"], rows), "",
            "Mixes, with a normal request (a 640x480 JPEG) timed alone and while the mix is in flight (medians of 10):",
            "", *_table(["mix", "its answers", "normal answers", "peak added MB", "normal alone ms",
                         "normal during ms", "wait ms"], mixes), "",
            "Goals: " + "; ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in d["goals"].items()) + ".", "",
            _source("memory", d)]


def scaling(name: str, d: dict) -> list[str]:
    s = d["settings"]
    keys = ["workers", "sockets", "concurrency", "conns", "rps", "efficiency", "p50_ms", "p99_ms", "errors",
            "server_cpu_ms_per_req", "server_pss_mb"]
    keys = [k for k in keys if any(k in r for r in d["rows"])]  # results from before the sockets A/B lack two
    rows = [[_cell(r.get(k)) if k != "efficiency" or r.get(k) is None else f"{r[k]:.2f}" for k in keys]
            for r in d["rows"]]
    goal = "; ".join(f"{k}: " + (", ".join(f"{n} {v}" for n, v in g.items()) or "no count to judge")
                     for k, g in d["goal"].items())
    return [f"### Worker processes (`python -m bench.scaling --payload {s['payload']}`)", "",
            f"`FACEDET_WORKERS` = 1, 2, …, each its own `python -m service`, /v1/detect on the `{s['payload']}` "
            f"payload, FACEDET_WORKER_THREADS {s.get('worker_threads', 'default (2)')}, driven by "
            f"{'wrk' if s.get('generator') == 'wrk' else 'the own client (bench/load_client.py)'} on the same machine ({d['machine']['usable_cores']} usable cores: the "
            "generator's CPU is taken from the server's)."
            + (" `sockets`: `own`, every worker on its own socket of the port (FACEDET_REUSE_PORT, the default), or "
               "`shared`, one socket for all; `conns`: the kept-alive connections each worker held halfway through."
               if "sockets" in s else ""), "",
            *_table(keys, rows), "", f"Goal, {goal}.", "", _source(name, d)]


def gpu(summary: dict | None) -> list[str]:
    """The GPU check (bench/gpu_check.sh) and the runs made beside it on a GPU machine, when one has run."""
    if not (summary and summary.get("gpu")):
        return ["### GPU", "", "`bench/gpu_check.sh` has **not been run on a GPU yet** (no GPU machine was lent to "
                "the sessions so far); every figure above is from CPUs."]
    m = summary["machine"]
    col = read_result("gpu_check_collectives") or {}
    ranks = col.get("ranks", 0)
    created = json.loads((ROOT / "models" / "manifest.json").read_text()).get("created", "")
    older = (f" These figures are for the graphs as exported then: `models/` was exported again since ({created})."
             if created and m["date"] < created else "")
    out = ["### GPU (`bash bench/gpu_check.sh`)", "",
           f"{m['date'][:10]} on {summary['gpu']} ({m['cpu']}, {m['logical_cores']} cores; python {m['python']}, "
           f"torch {m['torch']}, onnxruntime {m['onnxruntime']}). "
           + (f"NCCL ran between {ranks} ranks (collectives row)." if ranks > 1 else
              "One GPU, so NCCL ran in a group of one rank; NCCL between two or more GPUs has not run yet.") + older, ""]
    inf = read_result("gpu_check_inference")
    if inf:
        cells = {(r["model"], r["batch"], r["engine"], r["device"]): r for r in inf["rows"]}
        engines = [("pytorch", "cpu"), ("onnxruntime", "cpu"), ("pytorch", "cuda"), ("onnxruntime", "cuda")]
        rows = [[model, batch, *(f"{cells[(model, batch, *e)]['images_per_s_p50']:,.0f}"
                                 if (model, batch, *e) in cells else "" for e in engines),
                 f"{cells[(model, batch, 'onnxruntime', 'cuda')]['max_abs_diff_vs_pytorch_cpu']:.1e}"
                 if (model, batch, "onnxruntime", "cuda") in cells else ""]
                for model, batch in dict.fromkeys((r["model"], r["batch"]) for r in inf["rows"])]
        out += ["Benchmark 1 on that machine, images/s at median latency:", "",
                *_table(["model", "batch", "PyTorch CPU", "ORT CPU", "PyTorch CUDA", "ORT CUDA",
                         "ORT CUDA max abs diff vs PyTorch CPU"], rows), ""]
    rows = [[r["part"], r["item"], r["result"], r["detail"]] for r in summary["rows"] if r["part"] != "1 inference"]
    checked = len(rows)
    extra = read_result("gpu_check_training_b256")
    if extra:
        rows += [["3 training, batch 256", f"{r['model']}", f"{r['images_per_s']:,.0f} img/s",
                  f"slowest stage {r['slowest_stage']}"] for r in extra["rows"]]
    ddp_gpu = read_result("gpu_ddp")
    if ddp_gpu:
        rows += [["bench.ddp, 1 process", r["model"], f"{r['train_images_per_s']:,.0f} img/s",
                  f"the training command under torchrun, global batch {ddp_gpu['settings']['batch']}, "
                  f"{ddp_gpu['settings']['images']:,} synthetic images, {ddp_gpu['settings']['steps']} steps "
                  "(CUDA start-up inside the timed steps weighs on so short a run; 2 processes need 2 GPUs)"]
                 for r in ddp_gpu["rows"]]
    default = read_result("gpu_default_training")
    if default:
        crops = default["data"].get("builtin_non_faces")
        data = f"built-in data with {crops:,} extra non-face crops" if crops else "built-in data"
        rows += [["README training", k, f"val bal. acc {e['val']['balanced_accuracy']:.3f}",
                  f"ROC AUC {e['val']['roc_auc']:.3f}, {data}, the defaults as of {default['created']}, on CUDA "
                  f"({e['version']})"]
                 for k, e in default["models"].items()]
    beside = (f"; the last {len(rows) - checked} rows are runs made beside it on a lent machine of the same kind "
              "(`python -m bench.training --batch-size 256`, `python -m bench.ddp --procs 1`, `python -m training`; "
              "dates in their JSON)" if len(rows) > checked else "")
    return out + [f"Everything else the check ran{beside}:", "",
                  *_table(["part", "item", "result", "detail"], rows), "",
                  "_`bench/results/gpu_check*.json`, `gpu_ddp.json`, `gpu_default_training.json`._"]


def localise(d: dict) -> list[str]:
    rows = [[r["detector"], f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['average_precision']:.3f}",
             f"{r['false_alarms_per_photo']:.2f}", f"{r['face_free']['false_alarms']}",
             *[f"{r['speed_' + s]['photos_per_s']:.2f} ({r['speed_' + s]['megapixels_per_s']:.1f} MP/s)"
               for s in d["settings"]["speed_sizes"]]] for r in d["rows"]]
    ours = [r for r in d["rows"] if r["detector"].startswith("ours")]
    haar = next((r for r in d["rows"] if "haar" in r["detector"]), None)
    data, cfg = d["data"], d["localiser"]
    out = ["### Finding faces in photos (`python -m bench.localise`)", "",
           f"{data['photos']} real photos with {data['faces']} faces boxed by eye (+{data['difficult']} 'difficult', "
           f"not counted) and {data['face_free_photos']} face-free photos, all from registry packages "
           f"(`{data['sources']}`); IoU ≥ 0.5. Ours: smallest face {cfg['min_face_size']} px, pyramid step "
           f"{cfg['scale_step']:.3f}, stride {cfg['stride']} px, NMS IoU {cfg['nms_iou']}; candidates from scan "
           f"threshold {cfg.get('scan_threshold', cfg['threshold'])} with {cfg['min_neighbours']} windows agreeing, "
           f"refined over {len(cfg.get('refine_shifts', [0])) ** 2 * len(cfg.get('refine_scales', [1]))} crops "
           f"each{', moved by box_step ' + str(cfg['box_step']) + ' of the way the box head says and verified again' if 'box_step' in cfg else ''}, "
           f"a face from score {cfg['threshold']}"
           f"{', one mostly inside a better one dropped (nested_overlap ' + str(cfg['nested_overlap']) + ')' if 'nested_overlap' in cfg else ''}.",
           "",
           *_table(["detector", "precision", "recall", "AP", "false alarms / photo", "false alarms on face-free",
                    *[f"photos/s at {s}" for s in d["settings"]["speed_sizes"]]], rows), ""]
    for r in ours:
        out.append(f"{r['detector']}, keeping only faces scored at least " + ", ".join(
            f"{s['threshold']}: precision {s['precision']:.2f}, recall {s['recall']:.2f}" for s in r["sweep"])
            + " (read off the same run to show the trade-off)."
            + (" The scan and face thresholds were chosen on these photos, so these figures flatter them; the "
               "photos outside the repo that the service is also scored on are the fair test."
               if "scan_threshold" in cfg else ""))
    if ours:
        out.append("")
    held = data.get("heldout")
    if held and all("heldout" in r for r in d["rows"]):
        out += [f"**Held-out photos** (`{held['boxes']}`): {held['photos']} more real photos from registry packages "
                f"with {held['faces']} faces (+{held['difficult']} 'difficult'), boxed by eye after every setting above "
                "was chosen and used for nothing else, so nothing was tuned on them (mostly single large faces; few "
                "faces, so each one moves recall by several points):", "",
                *_table(["detector", "precision", "recall", "AP", "false alarms / photo", "faces found"],
                        [[r["detector"], f"{r['heldout']['precision']:.3f}", f"{r['heldout']['recall']:.3f}",
                          f"{r['heldout']['average_precision']:.3f}", f"{r['heldout']['false_alarms_per_photo']:.2f}",
                          f"{r['heldout']['true_positives']} of {r['heldout']['faces']}"] for r in d["rows"]]), ""]
    if all("by_min_face" in r for r in d["rows"]):
        sizes = d["settings"]["min_faces"]
        out += [f"Asking only for larger faces (`min_face_size`; Haar's minSize): photos/s at 1920x1280, and precision "
                "/ recall on the photo set's faces at least that large (the larger side of the box; smaller ones are "
                "neither counted nor penalised):", "",
                *_table(["detector", *[f"{m} px and larger" for m in sizes]],
                        [[r["detector"], *[f"{c['speed_1920x1280']['photos_per_s']:.2f} photos/s; "
                                           f"{c['precision']:.2f} / {c['recall']:.2f} of {c['faces']} faces"
                                           for c in r["by_min_face"]]] for r in d["rows"]]), "",
                "Precision falls when only larger faces are asked for, mostly because a face under the size asked for can "
                "still light up a larger window: its box is then too large to match the small face (IoU < 0.5) and "
                "counts as a false alarm.", ""]
    timed = [(r["detector"], s, r["speed_" + s]["stages"]) for r in ours for s in d["settings"]["speed_sizes"]
             if "stages" in r["speed_" + s]]
    if timed:
        out += ["Where our time goes, ms per photo: " + "; ".join(
            f"{name} at {size}: scan {t['scan_ms']:.0f}, refining {t['refine_ms']:.0f} "
            f"({t['candidates_per_photo']:.1f} candidates)" for name, size, t in timed) + ".", ""]
    plain = d.get("without_level_scan") or {}
    if plain:
        with_it = {r["detector"]: r for r in ours}
        out += ["The level scan (`training/level_scan.py`: each level's first stage at half the size and in int8) in "
                "the same run, against the float32 fast scan over the levels (`FACEDET_LEVEL_SCAN=false`), photos/s "
                "at " + " and ".join(d["settings"]["speed_sizes"]) + ", precision / recall on the photo set and on "
                "the held-out photos: " + "; ".join(
                    f"{name} " + ", ".join(f"{p['speed_' + s]['photos_per_s']:.2f} → "
                                           f"{with_it[name]['speed_' + s]['photos_per_s']:.2f}"
                                           for s in d["settings"]["speed_sizes"])
                    + f" photos/s, {p['precision']:.3f} / {p['recall']:.3f} → {with_it[name]['precision']:.3f} / "
                      f"{with_it[name]['recall']:.3f}, held-out {p['heldout']['precision']:.3f} / "
                      f"{p['heldout']['recall']:.3f} → {with_it[name]['heldout']['precision']:.3f} / "
                      f"{with_it[name]['heldout']['recall']:.3f}"
                    for name, p in plain.items() if name in with_it) + ".", ""]
    if ours:
        def met(ok: bool) -> str:
            return "met" if ok else "MISSED"

        verdict = ["precision ≥ 0.90 and recall ≥ 0.90: " + ", ".join(
            f"{r['detector']} {r['precision']:.2f} / {r['recall']:.2f} — "
            f"{met(r['precision'] >= 0.9 and r['recall'] >= 0.9)}" for r in ours), "≥ 20 photos/s at 1920x1280: " + ", ".join(
            f"{r['detector']} {r['speed_1920x1280']['photos_per_s']:.2f} — "
            f"{met(r['speed_1920x1280']['photos_per_s'] >= 20)}" for r in ours)]
        if held and all("heldout" in r for r in ours):
            verdict.append("precision ≥ 0.90 and recall ≥ 0.90 on the held-out photos: " + ", ".join(
                f"{r['detector']} {r['heldout']['precision']:.2f} / {r['heldout']['recall']:.2f} — "
                f"{met(r['heldout']['precision'] >= 0.9 and r['heldout']['recall'] >= 0.9)}" for r in ours))
        if haar:
            verdict.append("beat the Haar cascade on both: " + ", ".join(
                f"{r['detector']} {met(r['precision'] > haar['precision'] and r['recall'] > haar['recall'])}"
                for r in ours))
        out += ["Goals: " + "; ".join(verdict) + ".", ""]
    if d.get("example"):
        out += [f"![faces found by the DB-VAE's localiser]({d['example']})", "",
                "_Green: the true boxes; blue: faces found; red: false alarms; score beside each._", ""]
    return out + [_source("localise", d)]


def reconstruction(d: dict) -> list[str]:
    """The DB-VAE's reconstructions of the photo set's faces and of the held-out split, against the VAE goals."""
    found = d.get("found", {})
    sets = {"photo set, boxes by hand": d["photo_set"],
            "photo set, found by the localiser: its boxes": found.get("localiser_boxes", {}),
            "the same found faces, boxes by hand": found.get("boxes_by_hand", {}), "held-out split": d["held_out"]}
    rows = [[name, r["faces"], f"{r['psnr_db']:.1f} ({r['mean_face_psnr_db']:.1f})",
             f"{r['ssim']:.3f} ({r['mean_face_ssim']:.3f})", f"{r['correlation_own']:.2f} / {r['correlation_others']:.2f}",
             f"{r['identified_top1']:.0%} / {r['identified_top5']:.0%} (chance {r['chance_top1']:.0%})",
             f"{r['morph_ends_identified']:.0%}", f"{r['morph_nearing_b']:.0%}" if "morph_nearing_b" in r else "—"]
            for name, r in sets.items() if r.get("faces")]
    goals = []
    for name, r in sets.items():
        if r.get("faces") and "morph_nearing_b" in r:
            met = {"top-1 ≥ 90%": r["identified_top1"] >= 0.9, "own correlation ≥ 0.85": r["correlation_own"] >= 0.85,
                   "morph ends ≥ 95%": r["morph_ends_identified"] >= 0.95, "every morph nearing B": r["morph_nearing_b"] == 1}
            goals.append(f"{name}: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in met.items()))
    return ["### Reconstructions (`python -m bench.reconstruction`)", "",
            f"DB-VAE `{d['model']}` ({d['output_colour']} output), decode(μ) of each face: the photo set's boxed faces "
            f"(cut out as `/v1/reconstruct` cuts them; {'scored against their grey, as the decoder gives grey' if d['output_colour'] == 'grey' else 'scored in colour'}) "
            "and the held-out split (the manifest's figures). Identified: the reconstruction is closer (grey Pearson "
            "correlation) to its own face than to any other face of the same set. The found faces are those the "
            "DB-VAE's localiser finds at its default threshold (a found box at IoU ≥ 0.5 with a boxed face), cut out "
            "around the localiser's own box, as `/v1/reconstruct` and `/v1/morph` do for a photo sent without a "
            "box; beside them the same faces cut around their boxes by hand.", "",
            *_table(["faces of", "faces", "PSNR dB (mean face)", "SSIM (mean face)", "correlation own / others",
                     "identified top-1 / top-5", "morph ends identified", "morphs nearer to B each frame"], rows), "",
            "Goals: " + "; ".join(goals) + ".", "", _source("reconstruction_photos", d)]


def builtin_faces(local: tuple[dict, dict], recon: tuple[dict, dict]) -> list[str]:
    """The default models (LFW faces only) beside models trained with --builtin-faces all, run for run."""
    names = ("default", "--builtin-faces all")
    rows = [[f"{r['detector']}, {name} ({r['version']})", f"{r['precision']:.3f}", f"{r['recall']:.3f}",
             f"{r['average_precision']:.3f}", f"{r['face_free']['false_alarms']}"]
            for name, d in zip(names, local) for r in d["rows"] if r["detector"].startswith("ours")]
    sets = (("photo set, boxes by hand", lambda d: d["photo_set"]),
            ("photo set, found by the localiser", lambda d: d.get("found", {}).get("localiser_boxes", {})),
            ("held-out split", lambda d: d["held_out"]))
    recon_rows = [[f"{label}, {name} ({d['model']})", pick(d)["faces"], f"{pick(d)['correlation_own']:.3f}",
                   f"{pick(d)['identified_top1']:.1%}", f"{pick(d)['morph_ends_identified']:.1%}"]
                  for label, pick in sets for name, d in zip(names, recon) if pick(d).get("faces")]
    return ["### Built-in faces: the LFW subset alone (the default) or `--builtin-faces all`", "",
            "The committed models' classifiers train on the LFW subset's faces (their DB-VAE's decoder tuning also "
            "reconstructs the packaged faces, see \"Training\"). `make train ARGS=\"--builtin-faces all\"` adds the "
            "747 packaged faces to the training faces (see \"The built-in data set\"); its models were benchmarked the "
            "same way, before the decoder tuning existed (so its DB-VAE is untuned), and then not committed. "
            "Localisation (`bench.localise`, same photos, same settings):", "",
            *_table(["detector", "precision", "recall", "AP", "false alarms on face-free"], rows), "",
            "Reconstructions (`bench.reconstruction`; the held-out splits differ: 20 LFW faces against 169 faces of "
            "all three sources):", "",
            *_table(["faces of", "faces", "correlation own", "identified top-1", "morph ends identified"], recon_rows),
            "", _source("localise", local[0]), _source("localise_builtin_all", local[1]),
            _source("reconstruction_photos_builtin_all", recon[1])]


def section() -> str:
    parts: list[str] = []
    for name, render in (("localise", localise), ("reconstruction_photos", reconstruction), ("inference", inference),
                         ("load", load), ("load_workers", load_workers), ("memory", memory),
                         ("training", training), ("quality", quality)):
        data = read_result(name)
        if data:
            parts += render(data) + [""]
        if name == "reconstruction_photos":
            pair = [read_result(n) for n in ("localise", "localise_builtin_all", "reconstruction_photos",
                                             "reconstruction_photos_builtin_all")]
            if all(pair):
                parts += builtin_faces((pair[0], pair[1]), (pair[2], pair[3])) + [""]
        if name == "memory":
            for scaled in ("scaling_png64", "scaling_photo"):
                if data := read_result(scaled):
                    parts += scaling(scaled, data) + [""]
    parts += ddp(read_result("ddp"), read_result("ddp_accuracy")) + [""]
    parts += gpu(read_result("gpu_check"))
    return "\n".join(parts).rstrip() + "\n"


def manifest_markdown(manifest: dict) -> str:
    """The manifest's held-out metrics as a Markdown table."""
    data = manifest["data"]
    lines = [f"Measured by `python -m training` on {manifest['created']} (source `{data['source']}`; held-out split: "
             f"{data['val']['faces']} faces, {data['val']['non_faces']} non-faces; ONNX Runtime on the exported files):",
             "", "| model | version | " + " | ".join(c.replace("_", " ") for c in METRIC_COLUMNS) + " |",
             "|---|---|" + "---:|" * len(METRIC_COLUMNS)]
    for kind, entry in manifest["models"].items():
        val = entry["metrics"]["val"]
        lines.append(f"| {kind} | `{entry['version']}` | " + " | ".join(f"{val[c]:.3f}" for c in METRIC_COLUMNS) + " |")
    rec = manifest["models"].get("dbvae", {}).get("metrics", {}).get("val", {}).get("reconstruction")
    if rec and rec.get("faces"):
        lines += ["", f"DB-VAE reconstructions decode(μ) of the {rec['faces']} held-out faces (`training/reconstruction.py`): "
                  f"PSNR {rec['psnr_db']:.1f} dB and SSIM {rec['ssim']:.3f} (the mean face: {rec['mean_face_psnr_db']:.1f} dB, "
                  f"{rec['mean_face_ssim']:.3f}); correlation with its own face {rec['correlation_own']:.2f}, with the others "
                  f"{rec['correlation_others']:.2f}; closest to its own face for {rec['identified_top1']:.0%} (top 5: "
                  f"{rec['identified_top5']:.0%}; chance {rec['chance_top1']:.0%}); both morph ends identified for "
                  f"{rec['morph_ends_identified']:.0%} of pairs"
                  + (f"; each frame nearer to B than the last in {rec['morph_nearing_b']:.0%} of {rec['morphs']} "
                     f"morphs." if "morph_nearing_b" in rec else ".")
                  + (" Output: grey (the decoder's one channel as R = G = B)."
                     if manifest["models"]["dbvae"].get("output_colour") == "grey" else "")]
    return "\n".join(lines) + "\n"


def rarest_against_commonest(cards: dict) -> str:
    """One generated sentence: each model's recall in the rarest and the commonest decile."""
    parts = []
    for kind, card in cards.items():
        bins = (card.get("by_rarity") or {}).get("bins")
        if bins:
            parts.append(f"{kind.upper()} {bins[-1]['recall']:.2f} in the rarest decile against {bins[0]['recall']:.2f} "
                         f"in the commonest (largest difference between deciles "
                         f"{card['by_rarity']['largest_difference']:.2f})")
    return ("Recall: " + "; ".join(parts) + "." + verdict(cards)) if parts else ""


def verdict(cards: dict) -> str:
    """Generated, never typed: does the DB-VAE find more of the rarest decile's faces than the CNN?"""
    rare = {k: (c.get("by_rarity") or {}).get("bins") for k, c in cards.items()}
    if not (rare.get("cnn") and rare.get("dbvae")):
        return ""
    if all(b["recall"] == 1.0 for bins in rare.values() for b in bins):
        return (" Every decile is at recall 1.00 for both models: these faces are too few and too easy to show "
                "whether the DB-VAE helps the rare ones.")
    d, c = rare["dbvae"][-1], rare["cnn"][-1]
    overlap = d["recall_ci"][0] <= c["recall_ci"][1] and c["recall_ci"][0] <= d["recall_ci"][1]
    caveat = " (the intervals overlap)" if overlap else ""
    if d["recall"] > c["recall"]:
        return f" In the rarest decile the DB-VAE finds more faces than the CNN{caveat}."
    return (f" The DB-VAE does not help the rarest decile here: recall {d['recall']:.2f} against the CNN's "
            f"{c['recall']:.2f}{caveat}.")


def fairness_markdown(manifest: dict, photos: dict | None) -> str:
    """The manifest's cards (the held-out split) and, when bench.fairness has run, the photo set's."""
    cards = {k: e["fairness"] for k, e in manifest["models"].items() if e.get("fairness")}
    if not cards:
        return "No fairness card in models/manifest.json: retrain (`make train`) to compute it.\n"
    lines = ["#### The default models on their held-out faces", "", card_markdown(cards), "",
             rarest_against_commonest(cards), ""]
    if photos:
        pc = {k: m["fairness"] for k, m in photos["models"].items()}
        versions = ", ".join(f"`{m['version']}`" for m in photos["models"].values())
        lines += [f"#### The same models on the photo set's faces (`python -m bench.fairness`, {versions}, "
                  f"{photos['machine'].get('date', '')})", "", card_markdown(pc), "", rarest_against_commonest(pc), ""]
    return "\n".join(lines)


def replace_between(text: str, start: str, end: str, body: str) -> str:
    if start not in text or end not in text:
        raise SystemExit(f"README.md has no {start} ... {end} markers")
    head, rest = text.split(start, 1)
    return head + start + "\n" + body + end + rest.split(end, 1)[1]


def update(readme: Path, models_dir: Path, metrics_only: bool = False) -> None:
    manifest = json.loads((models_dir / "manifest.json").read_text())
    text = replace_between(readme.read_text(), METRICS_START, METRICS_END, manifest_markdown(manifest))
    if FAIRNESS_START in text or not metrics_only:
        text = replace_between(text, FAIRNESS_START, FAIRNESS_END, fairness_markdown(manifest,
                                                                                     read_result("fairness_photos")))
    if not metrics_only:
        text = replace_between(text, START, END, section())
        digits = read_result("digits")
        if digits:
            from training.digits import readme_section

            text = replace_between(text, DIGITS_START, DIGITS_END, readme_section(digits).rstrip("\n") + "\n")
    readme.write_text(text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.readme", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readme", default=str(ROOT / "README.md"))
    ap.add_argument("--models-dir", default=str(ROOT / "models"))
    ap.add_argument("--metrics-only", action="store_true", help="rewrite only the model metrics table")
    args = ap.parse_args(argv)
    update(Path(args.readme), Path(args.models_dir), args.metrics_only)
    print(f"updated the generated parts of {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
