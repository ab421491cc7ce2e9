"""Issue 19's inference measurements: the exported DB-VAE encoder in ONNX Runtime on a GPU, each way of feeding it.

    python -m bench.gpu_inference                     # CUDA (and TensorRT) when ORT has them; else a short CPU run
    python -m bench.gpu_inference --batches 1024 4096 --seconds 1

Variants, each at every --batches size, on models/dbvae_encoder.onnx (the graph the service runs):

* host         session.run with numpy in and out: what bench.inference and the service measure
* iobinding    the input uploaded to a device OrtValue once, the outputs bound to device buffers: the graph
               alone, without the copies (a service must still upload its images: this is the ceiling)
* iobinding_upload  the same binding, but the input copied from host memory on every call
* fp16         the graph converted to float16 inside (onnxruntime.transformers.float16, float32 input and
               outputs kept), run with io binding; its outputs against the float32 graph's: max |diff| of the
               logit and of mu on the same images (real faces and non-faces from the built-in set where it is
               cached, else seeded noise), and whether every face decision agrees
* tensorrt     the TensorRT execution provider (fp16 allowed, engines cached in a temporary folder), if this
               onnxruntime has it and it loads; its first call per batch size builds the engine (timed apart)

Images/s is the median over calls of batch / seconds per call. Results are written after every variant, so a
run stopped by a time limit keeps what it measured. The goal is 1,000,000 images/s; the JSON says which variant
came closest and, when it is missed, whether the graph alone (iobinding) or the copies (host) hold it back.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from bench.common import OUT_HELP, finish, load_note, machine, table, write_result
from training.environment import environment

from training.contract import GRAPH_IO

GOAL = 1_000_000
GRAPH = "dbvae_encoder.onnx"
INPUT, OUTPUTS = GRAPH_IO["encoder"][0], list(GRAPH_IO["encoder"][1])


def provider() -> str:
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    return "CUDAExecutionProvider" if cuda else "CPUExecutionProvider"


def session(model: bytes | str, providers: list) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, so, providers=providers)


def with_fallback(prov: str) -> list[str]:
    return [prov] if prov == "CPUExecutionProvider" else [prov, "CPUExecutionProvider"]


def device_of(prov: str) -> str:
    return "cuda" if prov in ("CUDAExecutionProvider", "TensorrtExecutionProvider") else "cpu"


def images(batch: int, seed: int = 0) -> np.ndarray:
    """float32 [batch, 3, 64, 64] in [0, 1]: seeded noise (throughput does not depend on the pixels)."""
    return np.random.default_rng(seed).random((batch, 3, 64, 64), dtype=np.float32)


def time_calls(call, seconds: float, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        call()
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 5:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return times


def host_runner(sess: ort.InferenceSession, x: np.ndarray):
    return lambda: sess.run(OUTPUTS, {INPUT: x})


def bound_runner(sess: ort.InferenceSession, x: np.ndarray, device: str, upload: bool):
    """io binding: outputs in device buffers; the input on the device once, or copied in on every call."""
    binding = sess.io_binding()
    on_device = ort.OrtValue.ortvalue_from_numpy(x, device, 0)
    for name in OUTPUTS:
        binding.bind_output(name, device, 0)

    def call():
        if upload:
            binding.bind_cpu_input(INPUT, x)
        else:
            binding.bind_ortvalue_input(INPUT, on_device)
        sess.run_with_iobinding(binding)
        binding.synchronize_outputs()
    return call


def fp16_graph(path: Path) -> bytes:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(onnx.load(str(path)), keep_io_types=True).SerializeToString()


def parity(fast: ort.InferenceSession, exact: ort.InferenceSession, x: np.ndarray, threshold_logit: float) -> dict:
    a, b = fast.run(OUTPUTS, {INPUT: x}), exact.run(OUTPUTS, {INPUT: x})
    return {"max_abs_diff_logit": float(np.abs(a[0] - b[0]).max()), "max_abs_diff_mu": float(np.abs(a[1] - b[1]).max()),
            "same_decisions": bool(((a[0] >= threshold_logit) == (b[0] >= threshold_logit)).all())}


def parity_images(n: int, cache_dir: str) -> tuple[np.ndarray, str]:
    """-> (n real images of the built-in set, faces and non-faces, built into cache_dir if absent; or, without
    the training extra's packages, seeded noise; which of the two)."""
    try:
        from training.data.sources import open_source

        source = open_source("builtin", cache_dir=cache_dir)
        idx = np.linspace(0, len(source) - 1, n).astype(np.int64)
        return (source.read(idx).astype(np.float32) / 255.0).transpose(0, 3, 1, 2).copy(), "built-in set"
    except Exception as exc:  # noqa: BLE001 - no training extra or no cache: noise still compares the two graphs
        return images(n, seed=1), f"seeded noise ({type(exc).__name__}: {exc})"[:200]


def run(args) -> dict:
    models_dir = Path(args.models_dir)
    path = models_dir / GRAPH
    prov = provider()
    dev = device_of(prov)
    info = machine()
    out = {"benchmark": "gpu_inference", "machine": info, "note": load_note(info), "graph": GRAPH, "provider": prov,
           "settings": {"batches": args.batches, "seconds_per_cell": args.seconds}, "rows": [],
           "goal_images_per_s": GOAL}
    exact = session(str(path), with_fallback(prov))
    check, out["parity_images"] = parity_images(256, args.cache_dir)
    t = json.loads((models_dir / "manifest.json").read_text())["models"]["dbvae"]["threshold"]
    cut = float(np.log(t / (1 - t)))  # the face decision as a logit
    sessions = {"host": exact, "iobinding": exact, "iobinding_upload": exact}  # variant -> the session it runs
    try:
        if "fp16" not in args.variants:
            raise LookupError("not asked for (--variants)")
        fp16 = session(fp16_graph(path), with_fallback(prov))
        out["fp16_parity"] = parity(fp16, exact, check, cut)
        sessions["fp16"] = fp16
    except Exception as exc:  # noqa: BLE001 - recorded, the rest still runs
        out["fp16_parity"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    if "tensorrt" in args.variants and "TensorrtExecutionProvider" in ort.get_available_providers():
        cache = tempfile.mkdtemp(prefix="trt-")
        trt = ("TensorrtExecutionProvider", {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                                             "trt_engine_cache_path": cache})
        try:
            t0 = time.perf_counter()
            trt_sess = session(str(path), [trt, "CUDAExecutionProvider", "CPUExecutionProvider"])
            if trt_sess.get_providers()[0] != "TensorrtExecutionProvider":
                raise RuntimeError(f"TensorRT did not load (providers {trt_sess.get_providers()})")
            out["tensorrt_parity"] = parity(trt_sess, exact, check, cut)
            out["tensorrt_first_build_s"] = time.perf_counter() - t0
            sessions["tensorrt"] = trt_sess
        except Exception as exc:  # noqa: BLE001
            out["tensorrt_parity"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    for name, sess in sessions.items():
        if name not in args.variants:
            continue
        for batch in args.batches:
            x = images(batch)
            try:
                call = (host_runner(sess, x) if name == "host" else
                        bound_runner(sess, x, dev, upload=name == "iobinding_upload"))
                t0 = time.perf_counter()
                call()  # TensorRT builds its engine for a new shape here
                first = time.perf_counter() - t0
                times = time_calls(call, args.seconds)
                row = {"variant": name, "batch": batch, "images_per_s": batch / float(np.median(times)),
                       "ms_per_call_p50": float(np.median(times)) * 1e3, "first_call_s": first}
            except Exception as exc:  # noqa: BLE001
                row = {"variant": name, "batch": batch, "error": f"{type(exc).__name__}: {exc}"[:300]}
            out["rows"].append(row)
            print(f"  {name} b{batch}: " + (f"{row['images_per_s']:,.0f} img/s" if "images_per_s" in row
                                           else row["error"]), flush=True)
            write_result(args.out, summarise(out, dev))
    return summarise(out, dev)


def summarise(out: dict, device: str) -> dict:
    done = [r for r in out["rows"] if "images_per_s" in r]
    best = max(done, key=lambda r: r["images_per_s"]) if done else None
    best_of = lambda v: max((r["images_per_s"] for r in done if r["variant"] == v), default=None)  # noqa: E731
    graph, host = best_of("iobinding"), best_of("host")
    out["best"] = best and {"variant": best["variant"], "batch": best["batch"], "images_per_s": best["images_per_s"]}
    out["goal_met"] = bool(best and device == "cuda" and best["images_per_s"] >= GOAL)
    out["bottleneck"] = (None if not (graph and host) else
                         "the graph itself (even without copies it is below the goal)" if graph < GOAL else
                         "the host copies (the graph alone reaches the goal)")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu_inference", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    cuda = provider() == "CUDAExecutionProvider"
    ap.add_argument("--models-dir", default="models")
    ap.add_argument("--cache-dir", default=str(environment().cache), help="where the built-in set is (FACEDET_CACHE)")
    ap.add_argument("--batches", type=int, nargs="+", default=[256, 1024, 4096, 16384] if cuda else [16, 64])
    ap.add_argument("--seconds", type=float, default=1.0 if cuda else 0.2)
    ap.add_argument("--variants", nargs="+", default=["host", "iobinding", "iobinding_upload", "fp16", "tensorrt"],
                    choices=["host", "iobinding", "iobinding_upload", "fp16", "tensorrt"])
    ap.add_argument("--out", default="gpu_inference", help=OUT_HELP)
    args = ap.parse_args(argv)
    result = run(args)
    m = result["machine"]
    print(f"\ndbvae_encoder in ONNX Runtime ({result['provider']}) — {m.get('cuda') or m['cpu']}, {m['date']}")
    print(table([{**r, "result": f"{r['images_per_s']:,.0f}" if "images_per_s" in r else r["error"][:60]}
                 for r in result["rows"]],
                [("variant", "variant", ""), ("batch", "batch", "d"), ("result", "img/s", ""),
                 ("ms_per_call_p50", "p50 ms", ".3f")]))
    for key in ("fp16_parity", "tensorrt_parity"):
        if key in result:
            print(f"{key}: {result[key]}")
    print(f"best: {result['best']}; goal {GOAL:,} img/s {'met' if result['goal_met'] else 'MISSED'}; "
          f"bottleneck: {result['bottleneck']}")
    return finish(args.out, result)


if __name__ == "__main__":
    raise SystemExit(main())
