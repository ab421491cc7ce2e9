"""bench/gpu_training.py on the CPU, tiny: every variant asked for is timed (or its failure recorded), the
fastest is profiled, and the accuracy comparison says whether the issue's goal is met."""

from __future__ import annotations

import json

from bench.gpu_training import compare_accuracy
from bench.gpu_training import main as gpu_training_main


def test_the_step_variants_are_timed_and_the_fastest_profiled(tmp_path):
    out = tmp_path / "steps.json"
    assert gpu_training_main(["--cpu", "--variants", "device", "fused_adam", "bf16", "combined", "--steps", "1",
                              "--warmup", "1", "--batch-size", "16", "--images", "256", "--encode", "64",
                              "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert [row["variant"] for row in r["rows"]] == ["device", "fused_adam", "bf16", "combined"]
    for row in r["rows"]:
        assert row["images_per_s"] > 0 and set(row["per_batch_ms"]) == {"gather", "augment", "step"}
    combined = r["rows"][-1]
    assert combined["options"] == r["winners"] and set(r["winners"]) <= {"fused_adam", "bf16"}
    assert r["best"] in {row["variant"] for row in r["rows"]}
    assert r["profile_of_best"]["top_host"] and r["profile_of_best"]["device_busy_share"] is None  # no GPU
    assert r["goal_met"] is False  # a CPU run never counts for the GPU goal
    assert r["encoding_from_device"]["faces"] == 64


def test_the_gpu_run_is_judged_against_the_cpu_reference():
    run = lambda acc: {"status": 0, "val": {"balanced_accuracy": acc}, "machine": {"date": "d"}}  # noqa: E731
    assert compare_accuracy(run(0.985), run(0.99))["ok"]
    far = compare_accuracy(run(0.96), run(0.99))
    assert not far["ok"] and abs(far["balanced_accuracy_diff"] - 0.03) < 1e-12
    assert compare_accuracy(run(0.99), None) == {"ok": False, "why": "no CPU reference"}
    assert not compare_accuracy({**run(0.99), "status": 1}, run(0.99))["ok"]


def test_the_encoder_is_timed_each_way_and_fp16_checked_against_float32(tmp_path):
    from bench.gpu_inference import main as gpu_inference_main

    out = tmp_path / "inference.json"
    assert gpu_inference_main(["--batches", "8", "--seconds", "0.05", "--variants", "host", "iobinding", "fp16",
                               "--cache-dir", str(tmp_path), "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert [(row["variant"], row["batch"]) for row in r["rows"]] == [("host", 8), ("iobinding", 8), ("fp16", 8)]
    assert all(row["images_per_s"] > 0 for row in r["rows"])
    # float16 inside the graph: close to the float32 graph, the same face decisions on these images.
    assert r["parity_images"] == "built-in set"
    assert 0 < r["fp16_parity"]["max_abs_diff_logit"] < 0.5 and r["fp16_parity"]["same_decisions"]
    assert r["goal_met"] is False and r["bottleneck"].startswith("the graph itself")


def test_several_load_generators_merge_into_one_cell():
    from bench.load import merged

    a = {"requests": 100, "ok": 98, "errors": 2, "rps": 49.0, "client_cpu_s": 1.0, "statuses": {"200": 98, "503": 2},
         "seconds": 2.0, "p50_ms": 5.0, "p95_ms": 9.0, "p99_ms": 12.0, "max_ms": 20.0, "p99_503_ms": 1.0,
         "sample_body": ['{"results": []}']}
    b = {**a, "requests": 50, "ok": 50, "errors": 0, "rps": 25.0, "statuses": {"200": 50}, "p99_ms": 30.0,
         "p99_503_ms": None, "sample_body": []}
    m = merged([a, b])
    assert (m["requests"], m["ok"], m["errors"], m["rps"], m["client_cpu_s"]) == (150, 148, 2, 74.0, 2.0)
    assert m["statuses"] == {"200": 148, "503": 2} and m["clients"] == 2
    assert (m["p50_ms"], m["p99_ms"], m["max_ms"], m["p99_503_ms"]) == (5.0, 30.0, 20.0, 1.0)  # the slowest's
    assert m["sample_body"] == ['{"results": []}']
