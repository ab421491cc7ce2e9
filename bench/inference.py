"""Benchmark 1: inference engines side by side — PyTorch eager (from the checkpoints) vs ONNX Runtime (the
exported graphs the service runs), for the CNN and the DB-VAE encoder, at several batch sizes.

    python -m bench.inference                      # CPU rows; CUDA rows too when torch / ORT see a GPU
    python -m bench.inference --seconds 1 --batches 1 8

Per cell: images/s, p50/p99 latency per call, the ORT / PyTorch throughput ratio, and the max abs difference
between the two engines' outputs on the same input (so a fast but wrong engine shows). Both engines get the
same number of intra-op threads (default: all logical cores) and one inter-op thread: a fair fight, not
ORT's tuned session against PyTorch's defaults or the other way round. Inputs start in host memory and
outputs end there, on every engine, as in the service.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from bench.common import OUT_HELP, finish, latency_summary, load_note, machine, table, time_calls
from training.checkpoint import load_checkpoint
from training.model import EncoderGraph

# model -> (checkpoint, ONNX graph, output names)
MODELS = {"cnn": ("cnn.pt", "cnn.onnx", ["logit"]),
          "dbvae_encoder": ("dbvae.pt", "dbvae_encoder.onnx", ["logit", "mu", "logvar"])}


def ort_session(path: Path, threads: int, provider: str, tuned: bool = True) -> ort.InferenceSession:
    """The tuned options: for a small convnet one call is a short chain of ops, so sequential execution
    with all threads inside each op (intra-op) and full graph optimisation (conv+BN fusion etc.) is what
    pays; parallel execution of branches only adds scheduling overhead."""
    so = ort.SessionOptions()
    if tuned:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    providers = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
    return ort.InferenceSession(str(path), so, providers=providers)


def torch_runner(module: torch.nn.Module, device: str):
    module = module.to(device).eval()

    def run(x: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            out = module(torch.from_numpy(x).to(device))
            out = out if isinstance(out, tuple) else (out,)
            return [o.cpu().numpy() for o in out]  # .cpu() synchronises CUDA, so the timing is honest

    return run


def ort_runner(session: ort.InferenceSession, names: list[str]):
    name_in = session.get_inputs()[0].name
    return lambda x: session.run(names, {name_in: x})


def engines(args, models_dir: Path, ckpt_dir: Path, name: str) -> list[tuple[str, str, object]]:
    """-> [(engine, device, runner)] available on this machine for one model; PyTorch CPU first (reference)."""
    ckpt, graph, names = MODELS[name]
    model, _ = load_checkpoint(ckpt_dir / ckpt)
    module = EncoderGraph(model) if name == "dbvae_encoder" else model
    found = [("pytorch", "cpu", torch_runner(module, "cpu")),
             ("onnxruntime", "cpu", ort_runner(ort_session(models_dir / graph, args.threads, "CPUExecutionProvider"),
                                               names))]
    if args.ort_default:
        found.append(("onnxruntime-default-options", "cpu",
                      ort_runner(ort_session(models_dir / graph, args.threads, "CPUExecutionProvider", tuned=False),
                                 names)))
    if torch.cuda.is_available():
        gpu_model, _ = load_checkpoint(ckpt_dir / ckpt)
        gpu_module = EncoderGraph(gpu_model) if name == "dbvae_encoder" else gpu_model
        found.append(("pytorch", "cuda", torch_runner(gpu_module, "cuda")))
    if "CUDAExecutionProvider" in ort.get_available_providers():
        if hasattr(ort, "preload_dlls"):  # CUDA/cuDNN from pip wheels (PyTorch's) become loadable by ORT
            try:
                ort.preload_dlls()
            except Exception as exc:  # noqa: BLE001 - the session's actual providers below tell the outcome
                print(f"onnxruntime.preload_dlls() failed: {exc}")
        sess = ort_session(models_dir / graph, args.threads, "CUDAExecutionProvider")
        if "CUDAExecutionProvider" in sess.get_providers():
            found.append(("onnxruntime", "cuda", ort_runner(sess, names)))
    return found


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set in this process; only the intra-op count matters for a single call
    info = machine(args.threads)
    rng = np.random.default_rng(0)
    rows = []
    for name in args.models:
        found = engines(args, Path(args.models_dir), Path(args.checkpoints), name)
        for batch in args.batches:
            x = rng.random((batch, 3, 64, 64), dtype=np.float32)
            reference = found[0][2](x)  # PyTorch CPU
            # Engines take turns in short rounds, so a burst of load from another process on a shared
            # machine hits all of them alike instead of ruining one engine's whole measurement.
            times = {i: [] for i in range(len(found))}
            for r in range(args.rounds):
                for i, (_, _, runner) in enumerate(found):
                    times[i].append(time_calls(lambda: runner(x), args.seconds / args.rounds, min_calls=2,
                                               warmup=3 if r == 0 else 0))
            base = {}
            for i, (engine, device, runner) in enumerate(found):
                diff = max(float(np.abs(a - b).max()) for a, b in zip(runner(x), reference))
                stats = latency_summary(np.concatenate(times[i]), batch)
                row = {"model": name, "engine": engine, "device": device, "batch": batch, **stats,
                       "max_abs_diff_vs_pytorch_cpu": diff}
                # The ratio uses median latency: robust to the stalls other processes cause on a shared box.
                if engine == "pytorch":
                    base[device] = stats["images_per_s_p50"]
                elif device in base:
                    row["ratio_vs_pytorch"] = stats["images_per_s_p50"] / base[device]
                rows.append(row)
                print(f"  {name:<14} {engine:<12} {device:<4} batch {batch:>4}: {stats['images_per_s']:9.0f} img/s",
                      flush=True)
    info["load_average_1min_at_end"] = os.getloadavg()[0]
    return {"benchmark": "inference", "machine": info, "note": load_note(info),
            "settings": {"threads": args.threads, "seconds_per_cell": args.seconds, "rounds": args.rounds,
                         "ratio": "ORT / PyTorch images/s at median latency (batch / p50)", "batches": args.batches,
                         "input": "seeded uniform random float32 [B,3,64,64] in host memory",
                         "pytorch": "eager, eval mode, torch.inference_mode(), set_num_threads(threads)",
                         "onnxruntime": "intra_op=threads, inter_op=1, ORT_SEQUENTIAL, ORT_ENABLE_ALL",
                         "models_dir": args.models_dir, "checkpoints": args.checkpoints},
            "rows": rows}


COLUMNS = [("model", "model", ""), ("engine", "engine", ""), ("device", "dev", ""), ("batch", "batch", "d"),
           ("images_per_s", "img/s", ",.0f"), ("images_per_s_p50", "img/s@p50", ",.0f"), ("p50_ms", "p50 ms", ".3f"),
           ("p99_ms", "p99 ms", ".3f"),
           ("ratio_vs_pytorch", "ORT/PT", ".2f"), ("max_abs_diff_vs_pytorch_cpu", "max|diff|", ".1e"),
           ("calls", "calls", "d")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.inference", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", default="models")
    ap.add_argument("--checkpoints", default="checkpoints")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8, 64, 256])
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads for both engines")
    ap.add_argument("--seconds", type=float, default=1.5, help="timed seconds per engine and cell")
    ap.add_argument("--rounds", type=int, default=5, help="engines alternate in this many rounds per cell")
    ap.add_argument("--ort-default", action="store_true",
                    help="add a row for ONNX Runtime with default session options, to show what tuning buys")
    ap.add_argument("--out", default="inference", help=OUT_HELP)
    args = ap.parse_args(argv)
    result = run(args)
    print()
    print(f"Inference — {result['machine']['cpu']}, {args.threads} threads, torch {result['machine']['torch']}, "
          f"onnxruntime {result['machine']['onnxruntime']}, {result['machine']['date']}")
    print(table(result["rows"], COLUMNS))
    print("img/s: over all timed calls; img/s@p50: batch / median latency; ORT/PT: ratio of img/s@p50 "
          "(robust to stalls caused by other processes).")
    return finish(args.out, result)


if __name__ == "__main__":
    raise SystemExit(main())
