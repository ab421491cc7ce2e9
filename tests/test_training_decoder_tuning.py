"""Decoder tuning (training/decoder_tuning.py): the latent branch, the frozen classifier, the tuned export."""

from dataclasses import replace

import numpy as np
import onnxruntime as ort
import pytest
import torch

from training.checkpoint import load_checkpoint, save_checkpoint, save_tuned
from training.config import TrainConfig
from training.data.sources import open_source, stratified_split
from training.decoder_tuning import tune_decoder, tuning_faces
from training.export import export_dbvae
from training.model import DBVAE, ModelConfig, kl_loss, reconstruction_loss


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return open_source("builtin", cache_dir=str(tmp_path_factory.mktemp("cache")), builtin_non_faces=200)


def model(seed: int = 0) -> DBVAE:
    torch.manual_seed(seed)
    net = DBVAE(ModelConfig(latent_dim=8, front_end="grey-lowpass", decoder_channels=1, dropout=0.3))
    with torch.no_grad():  # batch norm statistics away from their defaults, as after training
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def faces_of(source, n: int = 24) -> torch.Tensor:
    idx = np.flatnonzero(source.labels == 1)[:n]
    return torch.from_numpy(source.read(idx)).permute(0, 3, 1, 2).float() / 255


def test_the_latent_branch_starts_as_the_shared_head():
    x = torch.rand(5, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    net = model()
    before = [t.clone() for t in net.encode(x)]
    net.branch_latent()
    assert net.cfg.latent_branch and net.latent is not None
    for a, b in zip(before, net.encode(x)):
        assert torch.allclose(a, b, atol=1e-6)
    assert net.branch_latent() is net  # a second call changes nothing


def test_tuning_moves_the_latent_and_decoder_and_not_one_bit_of_the_logit(source, tmp_path):
    cfg = TrainConfig(tune_steps=60, tune_faces="train", batch_size=16, latent_dim=8)
    tr, _ = stratified_split(source.labels, 0.2, 0)
    net = model()
    x = faces_of(source)
    encoder_before = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    logit_before, mu_before, _ = net.encode(x)
    with torch.no_grad():
        loss_before = reconstruction_loss(x, net.decode(mu_before)).mean().item()
    tuned, record = tune_decoder(net, cfg, source, tr, torch.device("cpu"))
    logit, mu, logvar = tuned.encode(x)
    assert torch.equal(logit, logit_before)  # bit for bit: the classifier and the localiser are untouched
    assert all(torch.equal(v, tuned.encoder.state_dict()[k]) for k, v in encoder_before.items())  # BN stats too
    assert not torch.allclose(mu, mu_before)
    with torch.no_grad():
        loss_after = reconstruction_loss(x, tuned.decode(mu)).mean().item()
    assert loss_after < 0.9 * loss_before  # it learned to reconstruct training faces better
    assert record["steps"] == 60 and record["faces"] == "train" and record["packaged_faces"] == 0
    assert record["training_faces"] == int(source.labels[tr].sum()) == 80
    assert record["loss_first_last_tenth"][1] < record["loss_first_last_tenth"][0]
    assert torch.isfinite(kl_loss(mu, logvar)).all()

    # Checkpointed and exported with the branch: the encoder graph gives the branch's mu, the scan graph the logit.
    untuned = model()
    save_checkpoint(tmp_path / "dbvae.pt", "dbvae", untuned, None, cfg, 1, [{"epoch": 1}], {"val": {"auc": 1.0}})
    save_tuned(tmp_path / "dbvae.pt", tuned, record)
    loaded, ckpt = load_checkpoint(tmp_path / "dbvae.pt")
    assert loaded.cfg.latent_branch and torch.equal(loaded.encode(x)[1], mu)
    assert ckpt["metrics"] == {"val": {"auc": 1.0}, "decoder_tuning": record} and ckpt["history"] == [{"epoch": 1}]
    assert all(torch.equal(v, untuned.state_dict()[k]) for k, v in ckpt["trained_model_state"].items())
    export_dbvae(tuned, tmp_path)
    got = ort.InferenceSession(str(tmp_path / "dbvae_encoder.onnx")).run(None, {"image": x.numpy()})
    assert np.abs(got[0] - logit.detach().numpy()).max() < 1e-4 and np.abs(got[1] - mu.detach().numpy()).max() < 1e-4


def test_packaged_faces_join_the_built_in_tuning_only(source):
    assert tuning_faces(TrainConfig()) == "packaged"
    assert tuning_faces(TrainConfig(source="h5", h5="x.h5")) == "train"
    assert tuning_faces(TrainConfig(tune_faces="train")) == "train"
    tr, _ = stratified_split(source.labels, 0.2, 0)
    _, record = tune_decoder(model(), replace(TrainConfig(latent_dim=8), tune_steps=2), source, tr, torch.device("cpu"))
    assert record["faces"] == "packaged" and record["packaged_faces"] == 747


def test_tuning_settings_are_checked():
    with pytest.raises(ValueError, match="--tune-steps must be >= 0"):
        TrainConfig(tune_steps=-1)
    with pytest.raises(ValueError, match="--tune-faces must be auto, train or packaged"):
        TrainConfig(tune_faces="all")
    with pytest.raises(ValueError, match="is for --source builtin"):
        TrainConfig(tune_faces="packaged", source="h5", h5="x.h5")
