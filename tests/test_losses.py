"""Every named loss against a known answer (aaejax/models/losses.py)."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from aaejax.models import losses

LN2 = math.log(2.0)


def test_bce_and_accuracy():
    assert float(losses.bce_logits(jnp.zeros(4), 1.0)) == pytest.approx(LN2)
    # sigmoid(log 3) = 0.75: BCE against 1 is -log 0.75, against 0 is -log 0.25.
    x = jnp.full((3,), math.log(3.0))
    assert float(losses.bce_logits(x, 1.0)) == pytest.approx(-math.log(0.75), rel=1e-6)
    assert float(losses.bce_logits(x, 0.0)) == pytest.approx(-math.log(0.25), rel=1e-6)
    assert float(losses.bce_logits(jnp.array([200.0]), 0.0)) == pytest.approx(200.0)  # no overflow
    real, fake = jnp.array([1.0, -1.0, 2.0, 3.0]), jnp.array([-1.0, -2.0, 0.5, 0.0])
    assert float(losses.accuracy_logits(real, fake)) == pytest.approx(0.5 * (3 / 4 + 3 / 4))
    assert float(losses.mse(jnp.ones(4), jnp.array([1.0, 3.0, 1.0, -1.0]))) == pytest.approx(2.0)


def test_aae_losses():
    r, f = jnp.full((5,), math.log(3.0)), jnp.zeros(5)
    assert float(losses.latent_discriminator_loss(r, f)) == pytest.approx(0.5 * (-math.log(0.75) + LN2), rel=1e-6)
    assert float(losses.fooling_loss(f)) == pytest.approx(LN2)
    assert float(losses.fooling_loss(r)) == pytest.approx(-math.log(0.75), rel=1e-6)


def test_category_balance_kl():
    k = 4
    balanced = jnp.eye(k)[jnp.arange(8) % k]
    assert float(losses.category_balance_kl(balanced)) == pytest.approx(0.0, abs=1e-6)
    collapsed = jnp.eye(k)[jnp.zeros(8, int)]
    assert float(losses.category_balance_kl(collapsed)) == pytest.approx(math.log(k), rel=1e-6)
    half = jnp.eye(k)[jnp.arange(8) % 2]  # two categories used equally: KL = log k - log 2
    assert float(losses.category_balance_kl(half)) == pytest.approx(math.log(k) - LN2, rel=1e-6)


def test_consistency_kl_and_supervised_ce():
    target = jnp.array([[1.0, 0.0], [0.25, 0.75]])
    assert float(losses.consistency_kl(target, jnp.log(target + 1e-30))) == pytest.approx(0.0, abs=1e-6)
    # KL([1, 0] || [0.5, 0.5]) = log 2; KL([0.25, 0.75] || [0.5, 0.5]) = log 2 - H(0.25, 0.75).
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    want = 0.5 * (LN2 + LN2 - h)
    assert float(losses.consistency_kl(target, jnp.zeros((2, 2)))) == pytest.approx(want, rel=1e-5)
    assert float(losses.supervised_ce(jnp.zeros((3, 4)), jnp.array([0, 1, 3]))) == pytest.approx(math.log(4))
    logits = jnp.array([[math.log(3.0), 0.0]])  # softmax = (0.75, 0.25)
    assert float(losses.supervised_ce(logits, jnp.array([1]))) == pytest.approx(-math.log(0.25), rel=1e-6)


@pytest.mark.parametrize("scale", [0.5, 1.0])
def test_bigan_losses(scale):
    real, fake = jnp.full((4,), math.log(3.0)), jnp.zeros(4)  # D(real) = 0.75, D(fake) = 0.5
    d = scale * (-math.log(0.75) + LN2)
    assert float(losses.joint_discriminator_loss(real, fake, scale)) == pytest.approx(d, rel=1e-6)
    flipped = scale * (-math.log(0.25) + LN2)
    assert float(losses.encoder_generator_loss(real, fake, scale, "flipped")) == pytest.approx(flipped, rel=1e-6)
    assert float(losses.encoder_generator_loss(real, fake, scale, "minimax")) == pytest.approx(-d, rel=1e-6)
    # The official code's initial loss: D's output weights start at zero, so every loss is ln 2.
    zero = np.zeros(4, np.float32)
    assert float(losses.joint_discriminator_loss(zero, zero, 0.5)) == pytest.approx(LN2)
