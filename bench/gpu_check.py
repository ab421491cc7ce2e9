"""Benchmark 5's Python half (bench/gpu_check.sh runs it): ONNX Runtime CUDA vs CPU parity on the committed
models, the record of the short torchrun training, and the one summary table of the whole check.

    python -m bench.gpu_check parity                 # -> bench/results/gpu_check_parity.json
    python -m bench.gpu_check torchrun --models-dir D --procs N --status S --seconds T --log F
                                                     # -> bench/results/gpu_check_torchrun.json
    torchrun --standalone --nproc_per_node=N -m bench.gpu_check collectives
                                                     # -> bench/results/gpu_check_collectives.json
    python -m bench.gpu_check service                # -> bench/results/gpu_check_service.json
    python -m bench.gpu_check summary [--skipped "part: reason" ...]   # -> bench/results/gpu_check.json

torchrun: the README's training command under torchrun with one process per visible GPU, one short epoch
(issue 5 on real GPUs: device per local rank, and NCCL once there are two GPUs or more; a single GPU runs
one process, which trains on CUDA without any collective).

Collectives: the training package's own distributed code on this machine's backend (NCCL on GPUs, gloo on
CPUs): the global resampling probabilities from sharded latent means (all-reduced edges and bin counts,
all-gathered shards) against one process over all faces, and one DistributedDataParallel backward step of
the DB-VAE, whose averaged gradients must be bit-identical on every rank. With one GPU, torchrun starts one
rank; it still joins an NCCL group of one (so NCCL initialises and runs every collective on the GPU),
which the training command itself skips for a world of one.

Service: the real app (service.main.create_app, lifespan included) with its default provider list and
FACEDET_REQUIRE_GPU=1, against the same app on CPUExecutionProvider alone: /readyz must answer 200 with every
graph on CUDA, and /v1/detect (both models), /v1/reconstruct and /v1/morph must answer 200 with face probabilities
within 1e-3 of the CPU app's on the quality benchmark's eight real spot-check pictures.

Parity: every graph in models/ (CNN, DB-VAE encoder, DB-VAE decoder) runs the same seeded batch on the CPU
provider and on the CUDA provider with the service's provider list (CUDA first, CPU as fallback, default
CUDA options, so TF32 is allowed where ORT allows it: what the service would do on that GPU). It passes when
every output agrees within |cuda - cpu| <= 1e-3 * (1 + |cpu|) and the face decisions (logit >= logit of the
threshold) are identical. A CUDA session that silently falls back to CPU is reported, not counted as a pass.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bench.common import machine, read_result, table, write_result

TOLERANCE = 1e-3


def parity(models_dir: Path) -> dict:
    try:
        import torch  # noqa: F401 - loads the CUDA libraries PyTorch ships, so ORT can find them too
    except ImportError:
        pass
    import onnxruntime as ort

    info = machine()
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return {"machine": info, "skipped": f"onnxruntime {ort.__version__} has no CUDAExecutionProvider "
                                            f"(providers: {', '.join(ort.get_available_providers())})", "rows": []}
    if hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except Exception as exc:  # noqa: BLE001 - reported through the session's actual providers below
            print(f"onnxruntime.preload_dlls() failed: {exc}", file=sys.stderr)
    manifest = json.loads((models_dir / "manifest.json").read_text())
    rng = np.random.default_rng(0)
    rows = []
    for model, entry in manifest["models"].items():
        threshold = float(entry.get("threshold", 0.5))
        for role, file in entry["graphs"].items():
            cpu = ort.InferenceSession(str(models_dir / file), providers=["CPUExecutionProvider"])
            gpu = ort.InferenceSession(str(models_dir / file),
                                       providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
            used = gpu.get_providers()[0]
            name = cpu.get_inputs()[0].name
            x = (rng.standard_normal((8, manifest["latent_dim"])) if name == "z"
                 else rng.random((8, 3, 64, 64))).astype(np.float32)
            outs = [o.name for o in cpu.get_outputs()]
            ref, got = cpu.run(outs, {name: x}), gpu.run(outs, {name: x})
            worst = max(float((np.abs(g - r) / (1 + np.abs(r))).max()) for g, r in zip(got, ref))
            row = {"graph": f"{model}.{role}", "provider": used, "max_abs_diff": max(float(np.abs(g - r).max())
                                                                                  for g, r in zip(got, ref)),
                   "max_scaled_diff": worst, "same_decisions": None}
            if "logit" in outs:
                cut = float(np.log(threshold / (1 - threshold)))
                i = outs.index("logit")
                row["same_decisions"] = bool(np.array_equal(ref[i] >= cut, got[i] >= cut))
            row["ok"] = used == "CUDAExecutionProvider" and worst <= TOLERANCE and row["same_decisions"] is not False
            rows.append(row)
    return {"machine": info, "tolerance": f"|cuda - cpu| <= {TOLERANCE} * (1 + |cpu|)", "rows": rows}


def collectives(faces: int, seed: int = 0) -> dict | None:
    """One rank's part of the collectives check (under torchrun); rank 0 returns the record."""
    import time

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from training.distributed import Dist, device_for, from_environment, init, shutdown
    from training.config import TrainConfig
    from training.model import ModelConfig, build_model, dbvae_loss
    from training.resampling import sampling_probabilities

    class GroupOfOne(Dist):
        enabled = property(lambda self: True)  # collectives go through the backend even for one rank

    world = from_environment()
    world = world if world.enabled else GroupOfOne()
    device = device_for(world, "auto")
    t0 = time.perf_counter()
    init(world, device, timeout_s=120)
    gen = torch.Generator().manual_seed(seed)
    mu = torch.randn(faces, 100, generator=gen) * torch.linspace(0.2, 3.0, 100)  # [N, D], same on every rank
    p = world.all_gather_cat(sampling_probabilities(world.shard(mu).to(device), 10, 1e-3, world.all_reduce))
    ref = sampling_probabilities(mu, 10, 1e-3)  # one process, all faces, CPU
    resampling_diff = float((p.cpu() - ref).abs().max() / ref.max())

    torch.manual_seed(seed)  # same initial weights everywhere (DDP also broadcasts rank 0's)
    net = build_model("dbvae", ModelConfig()).to(device)
    model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    gen.manual_seed(seed + 1 + world.rank)  # each rank its own batch, as in training
    x = torch.rand(16, 3, 64, 64, generator=gen).to(device)
    y = (torch.arange(16) % 2).float().to(device)
    dbvae_loss(x, y, *model(x), kl_weight=TrainConfig().kl_weight)["loss"].backward()
    grads = torch.cat([q.grad.flatten() for q in net.parameters()]).double()
    lo, hi = world.all_reduce(grads.clone(), "min"), world.all_reduce(grads.clone(), "max")
    same = bool(torch.equal(lo, hi) and torch.isfinite(grads).all())
    backend = dist.get_backend()
    world.barrier()
    shutdown()
    if not world.is_main:
        return None
    return {"machine": machine(), "backend": backend, "ranks": world.world, "device": str(device),
            "faces": faces, "resampling_max_rel_diff": resampling_diff, "ddp_grads_identical": same,
            "grad_norm": float(grads.norm()), "seconds": time.perf_counter() - t0,
            "ok": resampling_diff < 1e-9 and same}


def service_check() -> dict:
    from fastapi.testclient import TestClient

    from bench.quality import spot_pictures
    from service.main import create_app
    from service.settings import load_settings

    pictures = spot_pictures()
    files = [("image", (name, data, "image/png")) for name, _, data in pictures]
    runs = {}
    for label, overrides in (("gpu", {"require_gpu": True}), ("cpu", {"providers": ["CPUExecutionProvider"]})):
        with TestClient(create_app(load_settings(**overrides))) as client:
            ready = client.get("/readyz")
            run = {"readyz": ready.status_code, "providers": ready.json().get("providers", {}), "detect": {}}
            for model in ("dbvae", "cnn"):
                r = client.post("/v1/detect", params={"model": model}, files=files)
                run["detect"][model] = ([d["face_probability"] for d in r.json()["results"]]
                                        if r.status_code == 200 else f"status {r.status_code}: {r.text[:200]}")
            run["reconstruct"] = client.post("/v1/reconstruct", files=[files[0]]).status_code
            run["morph"] = client.post("/v1/morph", files={"a": files[0][1], "b": files[2][1]}).status_code
            runs[label] = run
    gpu, cpu = runs["gpu"], runs["cpu"]
    diffs = {m: float(np.abs(np.subtract(gpu["detect"][m], cpu["detect"][m])).max())
             for m in gpu["detect"] if isinstance(gpu["detect"][m], list) and isinstance(cpu["detect"][m], list)}
    ok = (gpu["readyz"] == 200 and set(gpu["providers"].values()) == {"CUDAExecutionProvider"}
          and len(diffs) == 2 and max(diffs.values()) <= 1e-3
          and gpu["reconstruct"] == gpu["morph"] == 200)
    return {"machine": machine(), "pictures": [name for name, _, _ in pictures], "runs": runs,
            "max_abs_diff_probability": diffs, "ok": ok}


def torchrun_record(models_dir: Path, procs: int, status: int, seconds: float, log: Path) -> dict:
    manifest_path = models_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if status == 0 and manifest_path.is_file() else None
    tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.is_file() else []
    info = machine()
    return {"machine": info, "processes": procs, "status": status, "seconds": seconds,
            "backend": ("nccl" if procs > 1 else "none (one process)") if info["cuda"] else "gloo",
            "models": {k: {"version": e["version"], "val": e["metrics"].get("val", {})}
                       for k, e in (manifest or {}).get("models", {}).items()},
            "log_tail": tail}


def issue19_rows() -> list[dict]:
    """The summary's rows of issue 19's parts (bench/gpu_training.py, bench/gpu_inference.py, bench/load.py)."""
    rows: list[dict] = []
    steps = read_result("gpu_training")
    if steps:
        for r in steps["rows"]:
            item = f"{steps['settings']['model']} {r['variant']} b{r['batch']}"
            rows.append({"part": "19 step options", "item": item,
                         "result": f"{r['images_per_s']:,.0f} img/s" if "images_per_s" in r else "FAIL",
                         "detail": ", ".join(f"{k} {v:.2f} ms" for k, v in r["per_batch_ms"].items())
                         if "per_batch_ms" in r else r["error"]})
        p = steps["profile_of_best"]
        if p:
            busy = p["device_busy_share"]
            ops = ", ".join(f"{o['op']} {o['ms_per_step']:.2f} ms" for o in (p["top_device"] or p["top_host"])[:3])
            rows.append({"part": "19 step options", "item": f"profile of {steps['best']}",
                         "result": f"goal {steps['goal_images_per_s']:,} img/s "
                                   + ("met" if steps["goal_met"] else "MISSED"),
                         "detail": (f"device busy {busy:.0%} of the wall time; " if busy is not None else "")
                                   + ("top device ops: " if p["top_device"] else "top host ops: ") + ops})
    inf19 = read_result("gpu_inference")
    if inf19:
        for r in inf19["rows"]:
            rows.append({"part": "19 inference", "item": f"dbvae_encoder {r['variant']} b{r['batch']}",
                         "result": f"{r['images_per_s']:,.0f} img/s" if "images_per_s" in r else "FAIL",
                         "detail": f"p50 {r['ms_per_call_p50']:.3f} ms on {inf19['provider']}" if "images_per_s" in r
                         else r["error"]})
        for key in ("fp16_parity", "tensorrt_parity"):
            if key in inf19:
                rows.append({"part": "19 inference", "item": key.replace("_", " "),
                             "result": "ok" if inf19[key].get("same_decisions") else "FAIL",
                             "detail": ", ".join(f"{k} {v:.1e}" if isinstance(v, float) else f"{k} {v}"
                                                 for k, v in inf19[key].items())})
        rows.append({"part": "19 inference", "item": f"goal {inf19['goal_images_per_s']:,} img/s",
                     "result": "met" if inf19["goal_met"] else "MISSED",
                     "detail": f"best {inf19['best']}; bottleneck: {inf19['bottleneck']}"})
    load = read_result("gpu_load")
    if load:
        for r in load["rows"]:
            rows.append({"part": "19 load", "item": f"/v1/detect {r['target']}, {r['payload']}, c={r['concurrency']}",
                         "result": f"{r['rps']:,.0f} req/s",
                         "detail": f"{r.get('clients', 1)} client processes; p50 {r['p50_ms']} ms, "
                                   f"p99 {r['p99_ms']} ms, errors {r['errors']}"})
    acc = read_result("gpu_training_accuracy_cuda")
    if acc:
        cmp = acc.get("against_cpu", {})
        rows.append({"part": "19 accuracy", "item": f"short training, step options {acc['step_options'] or 'none'}",
                     "result": "ok" if cmp.get("ok") else "FAIL",
                     "detail": f"{acc['seconds']:.0f} s; val bal. acc {acc['val']['balanced_accuracy']}"
                               + (f", CPU {cmp['cpu_reference']['val']['balanced_accuracy']:.3f}, |diff| "
                                  f"{cmp['balanced_accuracy_diff']:.3f} (goal <= {cmp['goal']})"
                                  if "balanced_accuracy_diff" in cmp else f", {cmp.get('why', '')}")})
    return rows


def summary(skipped: list[str]) -> list[dict]:
    rows = [{"part": part.strip(), "item": "-", "result": "SKIPPED", "detail": reason.strip()}
            for part, _, reason in (s.partition(":") for s in skipped)]
    inf = read_result("gpu_check_inference")
    if inf:
        for r in inf["rows"]:
            if r["device"] == "cuda" or r["engine"] == "onnxruntime":
                ratio = f", ORT/PT {r['ratio_vs_pytorch']:.2f}" if r.get("ratio_vs_pytorch") else ""
                rows.append({"part": "1 inference", "item": f"{r['model']} {r['engine']} {r['device']} b{r['batch']}",
                             "result": f"{r['images_per_s']:,.0f} img/s",
                             "detail": f"p50 {r['p50_ms']:.3f} ms{ratio}, |diff| vs PT CPU "
                                       f"{r['max_abs_diff_vs_pytorch_cpu']:.1e}"})
        if not any(r["device"] == "cuda" for r in inf["rows"]):
            rows.append({"part": "1 inference", "item": "cuda rows", "result": "SKIPPED",
                         "detail": "neither PyTorch nor ONNX Runtime sees a CUDA device"})
    tr = read_result("gpu_check_training")
    if tr:
        for r in tr["rows"]:
            rows.append({"part": "3 training", "item": f"{r['model']} on {tr['machine']['device']}",
                         "result": f"{r['images_per_s']:,.0f} img/s",
                         "detail": f"slowest stage {r['slowest_stage']}; per batch ms "
                                   + ", ".join(f"{k} {v:.1f}" for k, v in r["per_batch_ms"].items())})
        c = tr["resampling_vs_numpy"]
        rows.append({"part": "3 training", "item": "resampling probabilities", "result": f"{c['speedup']:.1f}x numpy",
                     "detail": f"{c['vectorised_s']:.3f} s vs {c['numpy_per_dimension_s']:.3f} s over "
                               f"[{c['faces']:,}, {c['latent_dim']}], max |diff| {c['max_abs_diff']:.1e}"})
    rows += issue19_rows()
    run = read_result("gpu_check_torchrun")
    if run:
        ok = run["status"] == 0 and run["models"]
        rows.append({"part": "torchrun", "item": f"{run['processes']} process(es), backend {run['backend']}",
                     "result": "ok" if ok else f"FAIL (status {run['status']})",
                     "detail": f"{run['seconds']:.0f} s, 1 short epoch; " + (
                         ", ".join(f"{k} val bal. acc {m['val'].get('balanced_accuracy', float('nan')):.3f}"
                                   for k, m in run["models"].items()) if ok else " | ".join(run["log_tail"]))})
    col = read_result("gpu_check_collectives")
    if col:
        rows.append({"part": "collectives", "item": f"{col['ranks']} rank(s), {col['backend']} on {col['device']}",
                     "result": "ok" if col["ok"] else "FAIL",
                     "detail": f"resampling vs 1 process over {col['faces']:,} faces: max rel diff "
                               f"{col['resampling_max_rel_diff']:.1e}; DDP grads identical on all ranks "
                               f"{col['ddp_grads_identical']}"})
    svc = read_result("gpu_check_service")
    if svc:
        g = svc["runs"]["gpu"]
        rows.append({"part": "service", "item": "the app on " + (", ".join(sorted(set(g["providers"].values())))
                                                          or "? (/readyz named no provider)"),
                     "result": "ok" if svc["ok"] else "FAIL",
                     "detail": f"readyz {g['readyz']}, reconstruct {g['reconstruct']}, morph {g['morph']}; "
                               + ", ".join(f"{m} max |p - p_cpu| {d:.1e}" for m, d in
                                           svc["max_abs_diff_probability"].items())})
    par = read_result("gpu_check_parity")
    if par:
        if par.get("skipped"):
            rows.append({"part": "5 parity", "item": "ORT CUDA vs CPU", "result": "SKIPPED", "detail": par["skipped"]})
        for r in par["rows"]:
            rows.append({"part": "5 parity", "item": f"{r['graph']} ({r['provider']})",
                         "result": "ok" if r["ok"] else "FAIL",
                         "detail": f"max |diff| {r['max_abs_diff']:.1e}, scaled {r['max_scaled_diff']:.1e}"
                                   + ("" if r["same_decisions"] is None else
                                      f", same decisions {r['same_decisions']}")})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["parity", "torchrun", "collectives", "service", "summary"])
    ap.add_argument("--models-dir", default="models")
    ap.add_argument("--skipped", action="append", default=[], help='"part: reason" rows for the summary')
    ap.add_argument("--procs", type=int, default=1, help="torchrun: processes started")
    ap.add_argument("--status", type=int, default=0, help="torchrun: its exit status")
    ap.add_argument("--seconds", type=float, default=0.0, help="torchrun: its wall time")
    ap.add_argument("--log", default="", help="torchrun: its output, for the last lines on failure")
    ap.add_argument("--faces", type=int, default=200_000, help="collectives: latent means resampled")
    args = ap.parse_args(argv)
    if args.what == "collectives":
        result = collectives(args.faces)
        if result is None:
            return 0
        print(f"collectives: {result['backend']}, {result['ranks']} rank(s) on {result['device']}: resampling max "
              f"rel diff {result['resampling_max_rel_diff']:.1e}, DDP grads identical {result['ddp_grads_identical']}")
        print(f"wrote {write_result('gpu_check_collectives', result)}")
        return 0 if result["ok"] else 1
    if args.what == "torchrun":
        result = torchrun_record(Path(args.models_dir), args.procs, args.status, args.seconds, Path(args.log))
        print(f"wrote {write_result('gpu_check_torchrun', result)}")
        return 0
    if args.what == "service":
        result = service_check()
        for label, run in result["runs"].items():
            print(f"service on {label}: readyz {run['readyz']} {run['providers']}; detect {run['detect']}")
        print(f"wrote {write_result('gpu_check_service', result)}")
        return 0 if result["ok"] else 1
    if args.what == "parity":
        result = parity(Path(args.models_dir))
        print(result.get("skipped") or table(result["rows"], [
            ("graph", "graph", ""), ("provider", "provider", ""), ("max_abs_diff", "max|diff|", ".1e"),
            ("max_scaled_diff", "scaled", ".1e"), ("same_decisions", "same decisions", ""), ("ok", "ok", "")]))
        print(f"wrote {write_result('gpu_check_parity', result)}")
        return 0 if all(r["ok"] for r in result["rows"]) else 1
    m = machine()
    print(f"\nGPU check — {m['cuda'] or 'NO GPU: CUDA rows skipped'}; {m['cpu']}, {m['logical_cores']} cores; "
          f"python {m['python']}, torch {m['torch']}, onnxruntime {m['onnxruntime']} "
          f"({', '.join(m['ort_providers'])}); {m['date']}")
    rows = summary(args.skipped)
    print(table(rows, [("part", "part", ""), ("item", "item", ""), ("result", "result", ""), ("detail", "detail", "")]))
    # gpu: the device name, or null for a run without one (bench/readme.py only quotes runs on a GPU).
    result = {"benchmark": "gpu_check", "gpu": m["cuda"], "machine": m, "rows": rows}
    print(f"wrote {write_result('gpu_check', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
