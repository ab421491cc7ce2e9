"""Model shapes, losses against hand-computed values, and the known traps of public implementations."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.model import DBVAE, FaceCNN, ModelConfig, cnn_loss, dbvae_loss, kl_loss, reconstruction_loss


@pytest.fixture(scope="module")
def dbvae():
    torch.manual_seed(0)
    return DBVAE(ModelConfig(latent_dim=8))


def test_shapes_of_every_model(dbvae):
    x = torch.rand(5, 3, 64, 64)
    assert FaceCNN().eval()(x).shape == (5,)
    logit, mu, logvar = dbvae.eval().encode(x)
    assert logit.shape == (5,) and mu.shape == (5, 8) and logvar.shape == (5, 8)
    with torch.no_grad():
        out = dbvae.decode(torch.randn(5, 8))
    assert out.shape == (5, 3, 64, 64)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert [t.shape for t in dbvae(x)][-1] == (5, 3, 64, 64)


def test_architecture_matches_the_lab():
    cnn = FaceCNN()
    convs = [m for m in cnn.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [12, 24, 48, 72]
    assert [c.kernel_size[0] for c in convs] == [5, 5, 3, 3]
    assert all(c.stride == (2, 2) for c in convs)
    dense = [m for m in cnn.modules() if isinstance(m, torch.nn.Linear)]
    assert [(d.in_features, d.out_features) for d in dense] == [(72 * 4 * 4, 512), (512, 1)]
    head = [m for m in DBVAE().encoder.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert head.out_features == 1 + 2 * 100


def test_upsampling_and_grey_decoders():
    torch.manual_seed(0)
    z = torch.randn(4, 8)
    up = DBVAE(ModelConfig(latent_dim=8, decoder="upsample", decoder_filters=(32, 16, 16, 8))).eval()
    kinds = [type(m).__name__ for m in up.decoder_conv]
    assert kinds == ["UpBlock", "UpBlock", "UpBlock", "Upsample", "Conv2d"]  # 4 -> 8 -> 16 -> 32 -> 64
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in up.modules())
    assert up.decoder_in[0].out_features == 32 * 4 * 4
    grey = DBVAE(ModelConfig(latent_dim=8, decoder="upsample", decoder_channels=1)).eval()
    assert grey.decoder_conv[-1].out_channels == 1
    with torch.no_grad():
        for model in (up, grey):
            assert model.decode(z).shape == (4, 3, 64, 64)
        out = grey.decode(z)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])  # one channel as R = G = B
    with pytest.raises(ValueError, match="decoder must be"):
        ModelConfig(decoder="pixelshuffle")
    with pytest.raises(ValueError, match="one entry per encoder block"):
        ModelConfig(decoder_filters=(8, 8))
    with pytest.raises(ValueError, match="decoder_channels"):
        ModelConfig(decoder_channels=2)


def test_bad_model_config_is_refused():
    with pytest.raises(ValueError, match="same length"):
        ModelConfig(filters=(12, 24), kernels=(5,))
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(image_size=60)


def test_kl_matches_hand_computed_value():
    mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    # sample 0: 0.5 * [(1 + 1 - 1 - 0) + (2 + 0 - 1 - ln 2)] = 0.5 * (2 - ln 2)
    expected = torch.tensor([0.5 * (2 - math.log(2.0)), 0.0])
    assert torch.allclose(kl_loss(mu, logvar), expected)


def test_reconstruction_is_mean_l1_per_sample():
    x = torch.zeros(2, 3, 2, 2)
    x_hat = torch.zeros(2, 3, 2, 2)
    x_hat[0] = 0.5
    x_hat[1, 0, 0, 0] = 1.2
    assert torch.allclose(reconstruction_loss(x, x_hat), torch.tensor([0.5, 1.2 / 12]))


def test_total_loss_matches_hand_computation():
    x = torch.full((2, 3, 2, 2), 0.5)
    x_hat = torch.full((2, 3, 2, 2), 0.25)
    logit = torch.tensor([2.0, -1.0])
    mu = torch.tensor([[1.0], [3.0]])
    logvar = torch.zeros(2, 1)
    y = torch.tensor([[1.0], [0.0]])  # [N, 1], as the lab file stores labels
    out = dbvae_loss(x, y, logit, mu, logvar, x_hat, kl_weight=0.1)
    bce_face = math.log(1 + math.exp(-2.0))
    bce_non = math.log(1 + math.exp(-1.0))
    vae_face = 0.1 * 0.5 * 1.0 + 0.25
    assert out["loss"].item() == pytest.approx((bce_face + vae_face + bce_non) / 2, rel=1e-6)
    assert out["kl"].item() == pytest.approx(0.5)  # faces only
    assert out["recon"].item() == pytest.approx(0.25)
    heavier = dbvae_loss(x, y, logit, mu, logvar, x_hat, kl_weight=0.1, vae_weight=3.0)["loss"].item()
    assert heavier == pytest.approx((bce_face + 3 * vae_face + bce_non) / 2, rel=1e-6)


def test_a_second_view_carries_the_vae_term_and_the_batch_the_bce_term():
    """Rows 0-1 are the classifier's batch (a face, a non-face), row 2 the face's second view (vae_only=1)."""
    x = torch.full((3, 3, 2, 2), 0.5)
    x_hat = torch.cat([torch.full((2, 3, 2, 2), 0.25), torch.full((1, 3, 2, 2), 0.4)])
    logit = torch.tensor([2.0, -1.0, 5.0])  # the view's logit is not trained
    mu = torch.tensor([[1.0], [3.0], [2.0]])
    logvar = torch.zeros(3, 1)
    y = torch.tensor([1.0, 0.0, 1.0])
    out = dbvae_loss(x, y, logit, mu, logvar, x_hat, kl_weight=0.1, vae_only=1)
    bce_face, bce_non = math.log(1 + math.exp(-2.0)), math.log(1 + math.exp(-1.0))
    vae_view = 0.1 * 0.5 * 4.0 + 0.1  # KL of mu 2 is 2; |0.5 - 0.4| = 0.1
    assert out["loss"].item() == pytest.approx((bce_face + bce_non + vae_view) / 2, rel=1e-6)
    assert out["per_sample"].tolist() == pytest.approx([bce_face, bce_non, vae_view], rel=1e-6)
    assert (out["kl"].item(), out["recon"].item()) == pytest.approx((2.0, 0.1))
    with pytest.raises(ValueError, match="must all be faces"):
        dbvae_loss(x, torch.tensor([1.0, 1.0, 0.0]), logit, mu, logvar, x_hat, kl_weight=0.1, vae_only=1)


def test_the_light_view_appends_each_face_once_as_its_own_target():
    from training.augment import light_view
    from training.config import TrainConfig
    from training.train import augment_batch

    smooth = torch.rand(8, 3, 4, 4, generator=torch.Generator().manual_seed(0))  # pictures, not pixel noise
    x = F.interpolate(smooth, size=(64, 64), mode="bilinear", align_corners=False)
    y = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0])
    cfg = TrainConfig(vae_view="light", misframed=0.0, flip=0.0)
    plain = augment_batch(x, y, cfg, torch.Generator().manual_seed(1))
    batch = augment_batch(x, y, cfg, torch.Generator().manual_seed(1), vae_view=True)
    assert plain.vae_only == 0 and batch.vae_only == 3 and len(batch.x) == len(batch.target) == 11
    assert torch.equal(batch.x[:8], plain.x) and batch.y.tolist() == y.tolist() + [1, 1, 1]
    assert torch.equal(batch.target[8:], batch.x[8:])  # the view is its own target
    # Only a little moved: far nearer its face than the classifier's augmentation leaves it.
    assert (batch.x[8:] - x[:3]).abs().mean() < 0.5 * (plain.x[:3] - x[:3]).abs().mean()
    still = light_view(x[:3], TrainConfig(flip=0.0), torch.Generator().manual_seed(2))
    assert still.shape == (3, 3, 64, 64) and not torch.equal(still, x[:3])
    assert augment_batch(x, y, TrainConfig(vae_view="batch", misframed=0.0), torch.Generator(), vae_view=True).vae_only == 0


def test_trap_a_non_face_has_classification_loss_and_no_vae_loss():
    """Labels [N,1] against per-sample [N] terms must not broadcast to [N,N]."""
    x = torch.rand(3, 3, 8, 8)
    x_hat = torch.rand(3, 3, 8, 8)
    logit, mu, logvar = torch.tensor([0.3, -0.2, 1.0]), torch.randn(3, 4), torch.randn(3, 4)
    y = torch.tensor([[1.0], [0.0], [1.0]])
    per = dbvae_loss(x, y, logit, mu, logvar, x_hat, kl_weight=5e-4)["per_sample"]
    assert per.shape == (3,)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logit, y.reshape(-1), reduction="none")
    vae = 5e-4 * kl_loss(mu, logvar) + reconstruction_loss(x, x_hat)
    assert per[1].item() == pytest.approx(bce[1].item())  # non-face: classification only
    assert per[1].item() > 0
    assert per[0].item() == pytest.approx((bce[0] + vae[0]).item())  # face: both
    assert per[2].item() == pytest.approx((bce[2] + vae[2]).item())


def test_trap_a_decoder_gets_no_gradient_from_non_faces(dbvae):
    dbvae.train()
    x = torch.rand(4, 3, 64, 64)
    losses = dbvae_loss(x, torch.zeros(4, 1), *dbvae(x), kl_weight=5e-4)  # a batch of non-faces only
    dbvae.zero_grad()
    losses["loss"].backward()
    grads = [p.grad for p in dbvae.decoder_conv.parameters()]
    assert all(g is None or float(g.abs().max()) == 0.0 for g in grads)


def test_trap_b_reparameterisation_uses_half_log_variance():
    mu = torch.zeros(1, 20_000)
    logvar = torch.full((1, 20_000), math.log(4.0))  # sigma = 2
    torch.manual_seed(0)
    z = DBVAE.reparameterize(mu, logvar)
    torch.manual_seed(0)
    eps = torch.randn_like(mu)
    assert torch.allclose(z, 2.0 * eps)
    assert float(z.std()) == pytest.approx(2.0, rel=0.03)


def test_label_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="do not match"):
        cnn_loss(torch.zeros(3), torch.zeros(4))
    assert cnn_loss(torch.tensor([[1.0], [0.0]]), torch.tensor([0.0, 0.0]))["loss"].item() == pytest.approx(np.log(2))


def test_front_end_grey_and_lowpass():
    from training.model import FrontEnd

    x = torch.rand(2, 3, 64, 64)
    grey = FrontEnd("grey")(x)
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    expected = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    assert torch.allclose(grey[:, 0], expected, atol=1e-6)
    flat = torch.full((1, 3, 64, 64), 0.3)
    assert torch.allclose(FrontEnd("grey-lowpass")(flat), flat, atol=1e-6)  # nothing to smooth
    stripes = torch.zeros(1, 3, 64, 64)
    stripes[..., ::2] = 1.0  # finest detail there is: removed by the low-pass stage
    assert float(FrontEnd("lowpass")(stripes).std()) < 0.05 < float(stripes.std())
    assert torch.equal(FrontEnd("none")(x), x)
    colour_blind = FaceCNN(ModelConfig(front_end="grey")).eval()
    recoloured = x[:, [2, 1, 0]] * 0 + grey  # another colouring with the same luma
    torch.testing.assert_close(colour_blind(x), colour_blind(recoloured), atol=1e-5, rtol=1e-5)


def test_grey_low_pass_is_smoothing_the_luma():
    """The fused strided luma conv equals the plain recipe: luma, 2x2 mean, bilinear back up."""
    from training.model import FrontEnd

    x = torch.rand(3, 3, 64, 64)
    luma = 0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:]
    expected = F.interpolate(F.avg_pool2d(luma, 2), size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(FrontEnd("grey-lowpass")(x), expected.expand(-1, 3, -1, -1), atol=1e-6, rtol=0)
    torch.testing.assert_close(FrontEnd("grey-lowpass", replicate=False)(x), expected, atol=1e-6, rtol=0)


def trained_looking(kind: str, cfg: ModelConfig) -> torch.nn.Module:
    """A seeded model with batch-norm statistics and shifts away from the identity, so export rewrites are
    tested beyond it."""
    from training.model import build_model

    torch.manual_seed(0)
    model = build_model(kind, cfg)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.3, 0.3)
    return model.eval()


def assert_same_function(kind: str, model: torch.nn.Module, rewritten: torch.nn.Module) -> None:
    x = torch.rand(5, 3, 64, 64)
    with torch.no_grad():
        want = model(x) if kind == "cnn" else model.encode(x)
        got = rewritten(x) if kind == "cnn" else rewritten.encode(x)
    for w, g in zip(want if isinstance(want, tuple) else (want,), got if isinstance(got, tuple) else (got,)):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("front_end", ["grey", "grey-lowpass", "lowpass", "none"])
@pytest.mark.parametrize("kind", ["cnn", "dbvae"])
def test_folded_front_end_computes_the_same_function(kind, front_end):
    from training.export import fold_front_end

    model = trained_looking(kind, ModelConfig(front_end=front_end))
    folded = fold_front_end(model)
    assert_same_function(kind, model, folded)
    net = folded.net if kind == "cnn" else folded.encoder
    assert net[1][0].in_channels == (1 if "grey" in front_end else 3)
    assert (folded is model) == ("grey" not in front_end)
    first = (model.net if kind == "cnn" else model.encoder)[1][0]
    assert first.weight.shape[1] == 3  # the trained model itself is left as it was


@pytest.mark.parametrize("kind", ["cnn", "dbvae"])
def test_narrow_blocks_padded_with_zero_filters_compute_the_same_function(kind):
    from training.export import fold_front_end, pad_narrow_blocks

    model = trained_looking(kind, ModelConfig(front_end="grey-lowpass", filters=(12, 24, 4, 72)))
    padded = pad_narrow_blocks(fold_front_end(model))
    assert_same_function(kind, model, padded)
    net = padded.net if kind == "cnn" else padded.encoder
    # 12 -> 16 and 4 -> 16 (each followed by a conv); 24 is a block already; 72, the last, feeds the dense layer.
    assert [net[i][0].out_channels for i in range(1, 5)] == [16, 24, 16, 72]
    assert [net[i][0].in_channels for i in range(2, 5)] == [16, 24, 16]
    assert net[1][0].weight[12:].abs().sum() == 0 and net[2][0].weight[:, 12:].abs().sum() == 0
    original = model.net if kind == "cnn" else model.encoder
    assert original[1][0].out_channels == 12  # the trained model itself is left as it was
