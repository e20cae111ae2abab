"""The BiGAN `seed` config against the PyTorch program it re-implements (tests/references/torch_bigan.py,
transcribed from Papers-in-100-Lines-of-Code's adversarial_feature_learning.py): from the same
initial weights, fed the same minibatches and the same z, both reach the same parameters.

The program labels (G(z), z) as 1 and (x, E(x)) as 0, aaejax the other way round: D's output
layer is therefore the negative of the program's (the same function under the other label
names), which the comparison takes into account; D's first layer reads cat(z, x), ours concat(x, z).

Why float64 for 10 steps: early in training many of G's gradients are ~1e-7 (D barely
distinguishes anything yet), where Adam's update g / (sqrt(v) + 1e-8) amplifies float32 rounding
into a different update, and that spreads; after 10 float32 steps the two programs' G differ by
~28 % of what they moved (10 steps in float64: ~1e-9). So one step is compared in float32 and ten
in float64, both programs in the same precision.
"""

import jax
import numpy as np
import pytest

from aaejax.models import registry
from conftest import bars_dataset
from experiments import bigan as bigan_exp

# Which Linear of each program network holds which of our Dense layers (nn.Sequential indices).
LAYERS = {"generator": ("G", {"Dense_0": 0, "Dense_1": 2, "Dense_2": 5}),
          "encoder": ("E", {"Dense_0": 0, "Dense_1": 2, "Dense_2": 5}),
          "discriminator": ("D", {"Dense_0": 0, "Dense_1": 2, "Dense_2": 5})}
# Biases that feed a BatchNorm: their exact gradient is 0 (the normalisation removes any shift), so
# each program's is rounding noise, which Adam turns into an update of up to lr either way. They
# change nothing the networks compute.
BEFORE_BN = {("generator", "Dense_1"), ("encoder", "Dense_1"), ("discriminator", "Dense_1")}


def _ours_as_theirs(name, dense, kernel, bias):
    """Our {kernel [in, out], bias} in the program's layout (kernel [in, out] still)."""
    if name == "discriminator" and dense == "Dense_0":  # concat(x, z) -> cat(z, x)
        kernel = np.concatenate([kernel[784:], kernel[:784]])
    if name == "discriminator" and dense == "Dense_2":  # labels swapped: D's output negated
        kernel, bias = -kernel, -bias
    return kernel, bias


def _theirs_as_ours(name, dense, kernel, bias):
    """The inverse of _ours_as_theirs."""
    if name == "discriminator" and dense == "Dense_0":  # cat(z, x) -> concat(x, z)
        kernel = np.concatenate([kernel[50:], kernel[:50]])
    if name == "discriminator" and dense == "Dense_2":
        kernel, bias = -kernel, -bias
    return kernel, bias


def _programs(dtype):
    import torch

    from references import torch_bigan

    torch.manual_seed(0)
    model = registry.build_model(bigan_exp.get_config("seed"))
    state = model.init(jax.random.PRNGKey(0))
    state = jax.tree_util.tree_map(lambda x: x.astype(dtype) if x.dtype == np.float32 else x, state)
    nets = {"generator": torch_bigan.G(), "encoder": torch_bigan.E(), "discriminator": torch_bigan.D()}
    for name, net in nets.items():
        for dense, index in LAYERS[name][1].items():
            params = state.nets[name].params[dense]
            kernel, bias = _ours_as_theirs(name, dense, np.asarray(params["kernel"]), np.asarray(params["bias"]))
            net.network[index].weight.data = torch.from_numpy(kernel.T.copy())
            net.network[index].bias.data = torch.from_numpy(bias.copy())
    return model, state, nets


def _train(model, state, nets, steps, dtype):
    import torch

    from references import torch_bigan

    optimizers, schedulers = torch_bigan.make_optimizers(nets["generator"], nets["encoder"], nets["discriminator"])
    data = bars_dataset(n_train=512, n_test=8)
    step = jax.jit(model.train_step)
    rng = np.random.default_rng(0)
    for i in range(steps):
        idx = rng.permutation(len(data.train_images))[:128]  # the program's randperm(60000)[:128]
        images = data.train_images[idx]
        z = np.asarray(model.prior.sample(state.step_key(), (128, 50)))  # the z our step draws
        x = images.reshape(128, -1).astype(np.float32) / np.float32(255.0)
        torch_bigan.train_step(nets["discriminator"], nets["generator"], nets["encoder"], optimizers, schedulers,
                               torch.from_numpy(x.astype(dtype)), torch.from_numpy(z.astype(dtype)), epoch=i)
        state, _ = step(state, {"image": images, "label": data.train_labels[idx]})
    return state


def _compare(state, nets, rtol, atol, lr_atol, stray=0.0):
    """Every entry within (atol + rtol |x|), but for at most a fraction `stray` of each layer's
    entries (at least one entry when stray > 0) and for the biases before BatchNorm, which must be
    within `lr_atol`."""
    for name, (_, layers) in LAYERS.items():
        for dense, index in layers.items():
            layer = nets[name].network[index]
            theirs = _theirs_as_ours(name, dense, layer.weight.detach().numpy().T, layer.bias.detach().numpy())
            for part, want in zip(("kernel", "bias"), theirs):
                got = np.asarray(state.nets[name].params[dense][part])
                diff = np.abs(got - want)
                off = diff > atol + rtol * np.abs(want)
                where = f"{name}/{dense}/{part}: {off.sum()} of {off.size} off, max {diff.max():.2e}"
                if part == "bias" and (name, dense) in BEFORE_BN:
                    assert diff.max() <= lr_atol, where
                else:
                    allowed = max(1, stray * off.size) if stray else 0
                    assert off.sum() <= allowed and diff.max() <= lr_atol, where


@pytest.mark.slow
def test_seed_bigan_matches_the_pytorch_program():
    """One step in float32, then ten in float64 (see above). One test, so one process imports
    PyTorch (not at collection: with torch._dynamo, which torch.optim loads, 4.8 s without .pyc)."""
    torch = pytest.importorskip("torch")
    model, state, nets = _programs(np.float32)
    state = _train(model, state, nets, 1, np.float32)
    # Some entries in a million have a gradient near Adam's eps (e.g. where the loss's gradient
    # nearly cancels the L2 term): there float32 rounding moves the update by up to 2 lr. Which
    # entries depends on the compiler's rounding: one may fall in a small layer (seen: 1 of G's
    # 784 output biases off by 3e-6 = 1.6 % of lr with the tests' XLA flags).
    _compare(state, nets, rtol=1e-4, atol=2e-6, lr_atol=4e-4, stray=1e-4)

    with jax.enable_x64(True):
        torch.set_default_dtype(torch.float64)
        try:
            model, state, nets = _programs(np.float64)
            for net in nets.values():
                net.double()
            state = _train(model, state, nets, 10, np.float64)
        finally:
            torch.set_default_dtype(torch.float32)
        _compare(state, nets, rtol=1e-6, atol=1e-8, lr_atol=2e-3)


def test_seed_schedule_is_the_programs():
    """ExponentialLR(0.9999508793911394) stepped after each iteration past 93 750: iteration i
    runs at 2e-4 * gamma ** max(0, i - 93751)."""
    sched = registry.build_model(bigan_exp.get_config("seed")).schedules["generator"]
    gamma = 0.9999508793911394
    for i in (0, 93750, 93751, 93752, 100000, 150000, 187499):
        np.testing.assert_allclose(sched(i), 2e-4 * gamma ** max(0, i - 93751), rtol=2e-5)
