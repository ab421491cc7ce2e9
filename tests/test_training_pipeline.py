"""One short real training run on the built-in data: train both models, export ONNX (parity checked),
write the manifest, evaluate the exported files on the held-out split. Plus traps (c) and (d)."""

import hashlib
import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from training.checkpoint import load_checkpoint
from training.cli import build_parser
from training.cli import main as train_main
from training.config import TrainConfig
from training.data.image import to_model_input
from training.data.sources import open_source, stratified_split
from training.evaluate import main as evaluate_main
from training.model import DBVAE, ModelConfig
from training.train import predict, train_model


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache):
    root = tmp_path_factory.mktemp("run")
    code = train_main(["--cache-dir", cache, "--builtin-non-faces", "200", "--epochs", "3",
                       "--steps-per-epoch", "12", "--out-dir", str(root / "models"),
                       "--checkpoint-dir", str(root / "ckpt"), "--no-progress", "--latent-dim", "16",
                       "--fairness-resamples", "100", "--tune-steps", "30"])
    assert code == 0
    return root


def test_exports_follow_the_contract(trained):
    models = trained / "models"
    manifest = json.loads((models / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["latent_dim"] == 16
    assert manifest["input"]["channel_order"] == "RGB" and manifest["input"]["size"] == 64
    assert manifest["data"]["train"] == {"faces": 80, "non_faces": 240}
    assert manifest["data"]["val"] == {"faces": 20, "non_faces": 60}
    assert manifest["training"]["epochs"] == 3 and manifest["versions"]["torch"] == torch.__version__
    for name, meta in manifest["files"].items():
        data = (models / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == meta["sha256"] and len(data) == meta["bytes"]
    for kind, entry in manifest["models"].items():  # box heads fitted on the exported fast scans' features
        assert entry["graphs"]["box_head"] == f"{kind}_box_head.onnx" and entry["box_head"]["faces"] == 80
        assert all(-1 <= r2 <= 1 for r2 in entry["box_head"]["r2_held_out"].values())
        # level scans built from the exported fast scans: the grey low-pass front end folds to half resolution
        level = entry["level_scan"]
        assert entry["graphs"]["level_scan"] == f"{kind}_level_scan.onnx" and (models / f"{kind}_level_scan.onnx").is_file()
        assert level["input_scale"] == 0.5 and level["precision"] == "int8" and level["calibration_levels"] > 0
        assert 0 <= level["candidates_kept"] <= 1 and level["max_error_near_threshold"] >= 0
    mined = manifest["data"]["mined_non_faces"]  # two rounds of hard negatives, by default
    assert len(mined) == 2 and mined[0] > 0
    rec = manifest["models"]["dbvae"]["metrics"]["val"]["reconstruction"]  # the exported graphs, scored
    assert rec["faces"] == 20 and 0 < rec["ssim"] <= 1 and rec["psnr_db"] > 0 and rec["chance_top1"] == 0.05
    per_epoch = [h["val"]["reconstruction"] for h in manifest["models"]["dbvae"]["metrics"]["history"]]
    assert len(per_epoch) == 3 and all(0 <= e["identified_top1"] <= 1 for e in per_epoch)
    assert rec["morphs"] == 20 and 0 <= rec["morph_nearing_b"] <= 1
    # The built-in faces are grey and so is the default front end: the decoder gives one channel, and says so.
    assert manifest["models"]["dbvae"]["output_colour"] == "grey" and "output_colour" not in manifest["models"]["cnn"]
    decoded = ort.InferenceSession(str(models / "dbvae_decoder.onnx")).run(None, {"z": np.ones((1, 16), np.float32)})[0]
    assert decoded.shape == (1, 3, 64, 64) and np.array_equal(decoded[:, 0], decoded[:, 2])
    assert "reconstruction" not in manifest["models"]["cnn"]["metrics"]["val"]
    cards = {k: manifest["models"][k]["fairness"] for k in ("cnn", "dbvae")}  # computed for every model
    for kind, card in cards.items():
        assert card["bootstrap"]["resamples"] == 100 and card["data"]["faces"] == 20 and card["by_group"] is None
        assert card["data"]["training_data"]["source"] == "builtin" and "LFW" in card["data"]["training_data"]["faces"]
        rare = card["by_rarity"]
        assert [b["faces"] for b in rare["bins"]] == [2] * 10 and rare["bins"][-1]["name"] == "10 (rarest)"
        recall = manifest["models"][kind]["metrics"]["val"]["recall"]  # the deciles split the same 20 faces
        assert sum(b["recall"] * b["faces"] for b in rare["bins"]) / 20 == pytest.approx(recall)
    assert cards["cnn"]["by_rarity"]["mean_sampling_weight"] == cards["dbvae"]["by_rarity"]["mean_sampling_weight"]
    assert "fairness" not in manifest["models"]["dbvae"]["metrics"]["val"]
    assert manifest["localiser"]["window"] == 64 and manifest["localiser"]["stride"] == 16
    signatures = {"cnn.onnx": (["image"], ["logit"]),
                  "dbvae_encoder.onnx": (["image"], ["logit", "mu", "logvar"]),
                  "dbvae_decoder.onnx": (["z"], ["image"]),
                  "cnn_scan.onnx": (["image"], ["logit_map"]), "dbvae_scan.onnx": (["image"], ["logit_map"])}
    for name, (ins, outs) in signatures.items():
        model = onnx.load(models / name)
        onnx.checker.check_model(model)
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
        s = ort.InferenceSession(str(models / name), providers=["CPUExecutionProvider"])
        assert [i.name for i in s.get_inputs()] == ins and [o.name for o in s.get_outputs()] == outs
        assert isinstance(s.get_inputs()[0].shape[0], str)  # dynamic batch axis
    for kind in ("cnn", "dbvae"):
        entry = manifest["models"][kind]
        assert entry["version"].startswith(kind + "-") and entry["threshold"] == 0.5
        assert entry["parity_max_abs_error"] < 1e-4
        val = entry["metrics"]["val"]
        assert 0 <= val["balanced_accuracy"] <= 1 and val["n"] == 80
        assert val["roc_auc"] > 0.8  # three short epochs already separate faces from non-faces


def test_onnx_graphs_run_at_several_batch_sizes(trained):
    models = trained / "models"
    enc = ort.InferenceSession(str(models / "dbvae_encoder.onnx"), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(models / "dbvae_decoder.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((5, 3, 64, 64), dtype=np.float32)
    logit, mu, logvar = enc.run(None, {"image": x})
    assert logit.shape == (5,) and mu.shape == (5, 16) and logvar.shape == (5, 16)
    single = enc.run(None, {"image": x[2:3]})[1]
    np.testing.assert_allclose(single[0], mu[2], atol=1e-4)
    img = dec.run(None, {"z": mu})[0]
    assert img.shape == (5, 3, 64, 64) and img.min() >= 0 and img.max() <= 1


def test_checkpoint_holds_state_configs_and_metrics(trained):
    model, ckpt = load_checkpoint(trained / "ckpt" / "dbvae.pt")
    assert isinstance(model, DBVAE) and not model.training
    assert ckpt["epoch"] == 3 and len(ckpt["history"]) == 3
    assert ckpt["train_config"]["latent_dim"] == 16 and ckpt["model_config"]["latent_dim"] == 16
    assert 0 <= ckpt["metrics"]["val"]["recall"] <= 1
    stats = [h["resampling"] for h in ckpt["history"]]
    assert all(s["max_min_ratio"] >= 1.0 and 0 < s["ess_fraction"] <= 1.0 for s in stats)
    assert stats[-1]["max_min_ratio"] > 1.5  # the distribution moved away from uniform
    assert not list((trained / "ckpt").glob("*.tmp"))


def test_a_checkpoint_from_before_the_configurable_decoder_loads(trained, tmp_path):
    """Its model_config has no decoder keys: the defaults are the decoder it holds (the lab's, RGB)."""
    ckpt = torch.load(trained / "ckpt" / "dbvae.pt", weights_only=False)
    old = DBVAE(ModelConfig(latent_dim=16, decoder="deconv", front_end=ckpt["model_config"]["front_end"]))
    config = old.cfg.to_dict()
    for key in ("decoder", "decoder_filters", "decoder_channels"):
        del config[key]
    torch.save({**ckpt, "model_config": config, "model_state": old.state_dict()}, tmp_path / "old.pt")
    model, _ = load_checkpoint(tmp_path / "old.pt")
    assert (model.cfg.decoder, model.cfg.decoder_channels) == ("deconv", 3)
    z = torch.randn(2, 16)
    with torch.no_grad():
        assert torch.equal(model.decode(z), old.eval().decode(z))


def test_the_decoder_gives_colour_only_where_the_encoder_sees_it(tmp_path):
    builtin = TrainConfig().model_config()
    folders = TrainConfig(source="folders", faces=str(tmp_path), non_faces=str(tmp_path)).model_config()
    assert (builtin.front_end, builtin.decoder_channels) == ("grey-lowpass", 1)
    assert (folders.front_end, folders.decoder_channels) == ("none", 3)
    assert TrainConfig(decoder_colour="rgb").model_config().decoder_channels == 3
    assert TrainConfig(front_end="none", decoder_colour="grey").model_config().decoder_channels == 1


def test_every_training_command_prints_its_help(capsys):
    from training.digits import build_parser as digits_parser

    for main, name in ((train_main, "python -m training"), (lambda argv: digits_parser().parse_args(argv),
                                                            "python -m training.digits")):
        with pytest.raises(SystemExit) as exit_:
            main(["--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: {name}") and "(default: " in out
    assert "5-25% rectangle" in build_parser().format_help()  # a literal % survives argparse's formatting


def test_evaluate_exported_models_on_the_held_out_split(trained, cache, tmp_path, capsys):
    out = tmp_path / "eval.json"
    code = evaluate_main(["--models-dir", str(trained / "models"), "--cache-dir", cache, "--out", str(out),
                          "--chart", str(tmp_path / "chart.png"), "--card", str(tmp_path / "card.md"),
                          "--resamples", "100"])
    assert code == 0
    result = json.loads(out.read_text())
    manifest = json.loads((trained / "models" / "manifest.json").read_text())
    assert result["split"] == "val" and result["data"]["evaluated"] == 80
    for kind in ("cnn", "dbvae"):
        assert result["models"][kind]["roc_auc"] == pytest.approx(manifest["models"][kind]["metrics"]["val"]["roc_auc"])
        # The same card as training wrote: the same faces, rarity histograms and bootstrap seed.
        assert result["models"][kind]["fairness"]["by_rarity"] == manifest["models"][kind]["fairness"]["by_rarity"]
    printed = capsys.readouterr().out
    assert "balanced_accuracy" in printed and "10 (rarest)" in printed
    assert "| decile | faces | cnn recall | dbvae recall |" in (tmp_path / "card.md").read_text()


def test_the_exported_dbvae_is_tuned_and_its_logit_is_the_trained_ones(trained):
    manifest = json.loads((trained / "models" / "manifest.json").read_text())
    tuning = manifest["models"]["dbvae"]["metrics"]["decoder_tuning"]
    assert tuning["steps"] == 30 and tuning["faces"] == "packaged" and tuning["packaged_faces"] == 747
    assert set(tuning["val_before"]) == set(tuning["val_after"]) >= {"correlation_own", "identified_top1"}
    tuned_net, ckpt = load_checkpoint(trained / "ckpt" / "dbvae.pt")  # the exported model, tuned
    trained_net = DBVAE(ModelConfig(**{**ckpt["model_config"], "latent_branch": False}))
    trained_net.load_state_dict(ckpt["trained_model_state"])  # the main training's end, before tuning
    trained_net.eval()
    assert tuned_net.cfg.latent_branch and ckpt["metrics"]["decoder_tuning"]["steps"] == 30
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    session = ort.InferenceSession(str(trained / "models" / "dbvae_encoder.onnx"))
    logit, mu, _ = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        before_logit, before_mu, _ = trained_net.encode(x)
        assert np.abs(logit - before_logit.numpy()).max() < 1e-4  # the classifier as trained
        assert np.abs(mu - tuned_net.encode(x)[1].numpy()).max() < 1e-4  # the latent as tuned
        assert np.abs(mu - before_mu.numpy()).max() > 1e-3


def test_resume_continues_from_the_checkpoint(trained, cache, tmp_path):
    import shutil

    ckpt_dir = tmp_path / "ckpt"
    shutil.copytree(trained / "ckpt", ckpt_dir)
    cfg = TrainConfig(cache_dir=cache, builtin_non_faces=200, epochs=4, steps_per_epoch=2, latent_dim=16,
                      checkpoint_dir=str(ckpt_dir), resume=True, progress=False)
    source = open_source("builtin", cache_dir=cache, builtin_non_faces=200)
    tr, va = stratified_split(source.labels, 0.2, 0)
    _, result = train_model("cnn", cfg, source, tr, va)
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3, 4]
    assert load_checkpoint(ckpt_dir / "cnn.pt")[1]["epoch"] == 4


def test_trap_c_and_d_encoding_pass(cache):
    """(c) the resampling pass runs in eval mode (batch-norm statistics untouched) and leaves the model in
    train mode; (d) it encodes exactly the tensors the model trains on, batch by batch."""
    source = open_source("builtin", cache_dir=cache, builtin_non_faces=200)
    torch.manual_seed(0)
    model = DBVAE(ModelConfig(latent_dim=8)).train()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    faces = np.flatnonzero(source.labels == 1)[:37]
    _, mu = predict(model, source, faces, torch.device("cpu"), batch=10, with_mu=True)
    assert model.training and bn.training
    assert torch.equal(bn.running_mean, before)
    model.eval()
    with torch.no_grad():
        expected = model.encode(torch.from_numpy(to_model_input(source.read(faces))))[1]
    torch.testing.assert_close(mu.float(), expected, atol=1e-5, rtol=1e-5)


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert train_main(["--source", "h5", "--h5", str(tmp_path / "missing.h5")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: h5 file not found") and err.count("\n") == 1
    assert train_main(["--source", "folders", "--faces", str(tmp_path)]) == 2
    assert "needs --faces DIR and --non-faces DIR" in capsys.readouterr().err
    assert train_main(["--batch-size", "7"]) == 2
    assert train_main(["--builtin-faces", "some"]) == 2
    assert "--builtin-faces must be lfw or all, not 'some'" in capsys.readouterr().err
    assert train_main(["--decoder-filters", "64,32"]) == 2
    assert "bad model settings: decoder_filters needs one entry per encoder block" in capsys.readouterr().err
    assert train_main(["--kl-warmup", "2"]) == 2
    assert evaluate_main(["--models-dir", str(tmp_path)]) == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_evaluate_writes_the_fairness_card_of_a_group_labelled_face_folder(trained, cache, tmp_path):
    from PIL import Image

    from tests.utils.training_data import lfw_faces, write_folder

    faces = lfw_faces(12)
    for i, group in enumerate(["DF", "DM", "LF", "LM"]):
        write_folder(tmp_path / "ppb" / group, faces[i * 3:(i + 1) * 3], "JPEG")
    out, chart, card = tmp_path / "eval.json", tmp_path / "fair.png", tmp_path / "card.md"
    code = evaluate_main(["--models-dir", str(trained / "models"), "--faces", str(tmp_path / "ppb"),
                          "--cache-dir", cache, "--out", str(out), "--chart", str(chart), "--card", str(card),
                          "--resamples", "50"])  # faces alone, no retraining
    assert code == 0
    result = json.loads(out.read_text())
    assert result["split"] == "all" and result["data"]["evaluated"] == 12
    for kind in ("cnn", "dbvae"):
        m = result["models"][kind]
        groups = m["fairness"]["by_group"]
        assert [b["name"] for b in groups["bins"]] == ["DF", "DM", "LF", "LM"]
        assert [b["faces"] for b in groups["bins"]] == [3, 3, 3, 3]
        recalls = [b["recall"] for b in groups["bins"]]
        assert groups["largest_difference"] == pytest.approx(max(recalls) - min(recalls))
        assert np.mean(recalls) == pytest.approx(m["recall"])
        assert [b["faces"] for b in m["fairness"]["by_rarity"]["bins"]] == [2, 2, 1, 1, 1, 1, 1, 1, 1, 1]
        assert "80 training faces" in m["fairness"]["data"]["rarity"]
    text = card.read_text()
    assert "| group | faces | cnn recall | dbvae recall |" in text and "| LM | 3 |" in text and "LFW" in text
    with Image.open(chart) as im:
        assert im.format == "PNG" and im.width > 600


def test_evaluate_takes_groups_from_a_csv(trained, cache, tmp_path, capsys):
    from tests.utils.training_data import lfw_faces, write_folder

    write_folder(tmp_path / "faces", lfw_faces(5), "PNG")
    names = sorted(p.name for p in (tmp_path / "faces").iterdir())
    table = tmp_path / "groups.csv"
    table.write_text("path,group\n" + "".join(f"{n},{g}\n" for n, g in zip(names, ["x", "x", "y", "y"])))
    out = tmp_path / "eval.json"
    args = ["--models-dir", str(trained / "models"), "--faces", str(tmp_path / "faces"), "--cache-dir", cache,
            "--out", str(out), "--chart", str(tmp_path / "c.png"), "--card", str(tmp_path / "c.md"),
            "--resamples", "20"]
    assert evaluate_main(args + ["--groups", str(table)]) == 0
    groups = json.loads(out.read_text())["models"]["dbvae"]["fairness"]["by_group"]
    assert [(b["name"], b["faces"]) for b in groups["bins"]] == [("x", 2), ("y", 2)]
    assert groups["unlabelled_faces"] == 1  # the fifth face is not in the table
    table.write_text("path,group\nnot-there.png,x\n")
    assert evaluate_main(args + ["--groups", str(table)]) == 2
    assert "names 1 file(s) not found" in capsys.readouterr().err


def test_readme_metrics_table_comes_from_the_manifest(trained, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- metrics:start -->\nold\n<!-- metrics:end -->\ntail\n")
    from bench.readme import main as readme_main  # the one README writer

    assert readme_main(["--readme", str(readme), "--models-dir", str(trained / "models"), "--metrics-only"]) == 0
    text = readme.read_text()
    manifest = json.loads((trained / "models" / "manifest.json").read_text())
    auc = manifest["models"]["dbvae"]["metrics"]["val"]["roc_auc"]
    assert "old" not in text and text.endswith("<!-- metrics:end -->\ntail\n")
    assert f"| dbvae | `{manifest['models']['dbvae']['version']}` |" in text and f"{auc:.3f}" in text


def test_worker_processes_read_the_same_batches(cache):
    """--workers N hands the lazily opened h5 source to DataLoader processes: same images, same order."""
    source = open_source("builtin", cache_dir=cache, builtin_non_faces=200)
    torch.manual_seed(0)
    model = DBVAE(ModelConfig(latent_dim=8))
    idx = np.arange(0, len(source), 7)
    p0, mu0 = predict(model, source, idx, torch.device("cpu"), batch=16, workers=0, with_mu=True)
    p2, mu2 = predict(model, source, idx, torch.device("cpu"), batch=16, workers=2, with_mu=True)
    np.testing.assert_array_equal(p0, p2)
    torch.testing.assert_close(mu0, mu2, rtol=0, atol=0)


def test_reexport_writes_the_fast_scan_from_the_checkpoints_and_keeps_the_records(trained, cache, tmp_path, capsys):
    from training.data.packaged import weights_digest
    from training.reexport import main as reexport_main

    models = tmp_path / "models"
    shutil.copytree(trained / "models", models)
    before = json.loads((models / "manifest.json").read_text())
    assert {"fast_scan", "window_head"} <= set(before["models"]["dbvae"]["graphs"])  # training exported it too
    for entry in before["models"].values():  # as a manifest from before the fast, level scans and the box head
        for role in ("fast_scan", "box_head", "level_scan"):
            entry.pop(role)
        for role in ("fast_scan", "window_head", "box_head", "level_scan"):
            (models / entry["graphs"].pop(role)).unlink()
    (models / "manifest.json").write_text(json.dumps(before))
    assert reexport_main(["--checkpoints", str(trained / "ckpt"), "--models", str(models), "--cache-dir", cache]) == 0
    after = json.loads((models / "manifest.json").read_text())
    assert capsys.readouterr().out.strip().endswith(f"written to {models}/")
    for kind, entry in after["models"].items():
        assert entry["fast_scan"]["input"] == "luma" and entry["fast_scan"]["rank"] >= 64
        assert entry["graphs"]["fast_scan"] == f"{kind}_fast_scan.onnx" and (models / entry["graphs"]["window_head"]).is_file()
        assert entry["metrics"] == before["models"][kind]["metrics"] and entry["threshold"] == before["models"][kind]["threshold"]
        assert entry["box_head"]["faces"] == 80 and (models / entry["graphs"]["box_head"]).is_file()
        assert entry["level_scan"]["input_scale"] == 0.5 and (models / entry["graphs"]["level_scan"]).is_file()
        scan = entry["graphs"]["scanner"]  # the same weights as training exported
        assert weights_digest(models / scan) == weights_digest(trained / "models" / scan)
    assert after["data"] == before["data"] and after["created"] == before["created"]
    assert after["localiser"]["fast_scan_margin"] == 2.0
    assert reexport_main(["--checkpoints", str(tmp_path / "none"), "--models", str(models)]) == 2
    assert "no checkpoint" in capsys.readouterr().err
