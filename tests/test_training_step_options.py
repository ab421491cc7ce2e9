"""--step-options (training/step_options.py): the step computed another way is still the same step. Run on
the CPU here; bench/gpu_training.py measures them on a GPU."""

import numpy as np
import pytest
import torch

from training.config import TrainConfig
from training.data.sources import open_source, stratified_split
from training.model import ModelConfig, build_model, dbvae_loss
from training.step_options import parse, prepare
from training.train import train_model

CPU = torch.device("cpu")


def test_names_are_checked():
    assert parse(" bf16, fused_adam,bf16 ") == ("bf16", "fused_adam")
    assert parse("") == ()
    with pytest.raises(ValueError, match="--step-options takes fused_adam, .* not 'fp8'"):
        TrainConfig(step_options="bf16,fp8")
    with pytest.raises(ValueError, match="compile and cuda_graphs are two ways of compiling"):
        parse("compile,cuda_graphs")


def one_step(options: tuple[str, ...]) -> tuple[float, dict, dict]:
    """The DB-VAE's loss on one fixed batch, its gradients, and the weights after one Adam step, under `options`."""
    torch.manual_seed(0)
    net = build_model("dbvae", ModelConfig(latent_dim=8, dropout=0.0)).train()
    step = prepare(net, net, 1e-3, 0.0, options, CPU)
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(8, 3, 64, 64, generator=g), torch.tensor([1.0, 0.0] * 4)
    torch.manual_seed(2)  # the same reparameterisation noise
    with step.autocast():
        loss = dbvae_loss(x, y, *step.model(step.input(x)), kl_weight=1e-3)["loss"]
    step.opt.zero_grad()
    loss.backward()
    grads = {k: p.grad.detach().float().contiguous() for k, p in net.named_parameters()}
    step.opt.step()
    return float(loss.detach()), grads, {k: v.detach().float().contiguous() for k, v in net.state_dict().items()}


def test_fused_adam_and_channels_last_compute_the_same_step():
    loss0, g0, w0 = one_step(())
    loss, _, w = one_step(("fused_adam",))  # the same gradients, one fused update
    assert loss == loss0
    for k in w0:
        torch.testing.assert_close(w[k], w0[k], rtol=1e-5, atol=1e-6, msg=k)
    # NHWC sums in another order: gradients to float32 round-off. (Not the weights after the step: Adam's first
    # step moves each weight by lr * sign(gradient), which round-off flips where a gradient is near 0.)
    loss, g, _ = one_step(("channels_last",))
    assert loss == pytest.approx(loss0, rel=1e-5)
    for k in g0:
        torch.testing.assert_close(g[k], g0[k], rtol=1e-3, atol=1e-3 * float(g0[k].abs().max()), msg=k)


def test_bf16_computes_the_loss_to_bf16_precision():
    loss0, _, _ = one_step(())
    loss, _, _ = one_step(("bf16",))
    assert loss == pytest.approx(loss0, rel=0.02)  # bfloat16 keeps 8 bits of mantissa
    assert loss != loss0  # it did run in bfloat16


def test_a_training_run_with_options_learns_and_exports_in_the_plain_layout(tmp_path_factory):
    source = open_source("builtin", cache_dir=str(tmp_path_factory.mktemp("cache")), builtin_non_faces=200)
    tr, va = stratified_split(source.labels, 0.2, 0)
    cfg = TrainConfig(epochs=3, steps_per_epoch=15, latent_dim=8, step_options="fused_adam,channels_last,bf16",
                      progress=False, checkpoint_dir=str(tmp_path_factory.mktemp("ckpt")), builtin_non_faces=200)
    net, result = train_model("dbvae", cfg, source, tr, va)
    assert result["val"]["roc_auc"] > 0.85
    assert all(p.is_contiguous() for p in net.parameters())
    assert np.isfinite([h["loss"] for h in result["history"]]).all()
