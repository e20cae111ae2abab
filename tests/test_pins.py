"""Pins each named config's model (issue #33): its parameter count at full size and one value of
a tiny run (the parameters' sum after one step from a fixed key on a fixed batch), so a change
that was meant to move code and changes a model fails here. After a change meant to alter a
model, `PYTHONPATH=. python tests/test_pins.py` prints the table anew: take its changed lines and
say why in the commit."""

import jax
import numpy as np
import pytest

from aaejax.models import registry
from conftest import bars_dataset, batch_of, tiny_bigan_config, tiny_variant
from experiments import aae, bigan

# variant: (parameters at full size, sum of the tiny model's parameters after one step)
PINS = {
    'aae:seed': (1482533, 3.3129120794583287),
    'aae:parzen_keras': (6249201, 10.298567929887213),
    'aae:mixture': (4583789, 0.6461012962899986),
    'aae:mixture_cond': (4593789, 0.9321412028439227),
    'aae:swiss_roll': (4583789, 0.6414450876109186),
    'aae:swiss_roll_cond': (4593789, 0.932081477054453),
    'aae:supervised': (4625805, 17.64380641378375),
    'aae:semi_supervised_plus': (5614798, 8.836702337372117),
    'aae:clustering_plus': (5632804, 25.913169529902007),
    'aae:paper_parzen': (4599793, 3.0699621495062512),
    'aae:paper_semi_100': (5638806, 3.5315880872638883),
    'aae:paper_semi_1000': (5638806, 3.5315880872638883),
    'aae:paper_semi_all': (5638806, 3.5315880872638883),
    'aae:paper_cluster_16': (40923807, 3.5009685180153305),
    'aae:paper_cluster_30': (41049821, 3.3312207467200787),
    'bigan:official': (5760000, -18.223354217085834),
    'bigan:seed': (5715779, -18.46954169345492),
}


def _configs(name):
    model, variant = name.split(":")
    full = {"aae": aae, "bigan": bigan}[model].get_config(variant)
    tiny = tiny_variant(variant) if model == "aae" else tiny_bigan_config(variant)
    if tiny.get("num_labels", 0) > 20 or tiny.get("num_labels", 0) < 0:  # the bars have 51 images a class
        tiny.num_labels = 20
    return full, tiny


def measure(name) -> tuple[int, float]:
    full, tiny = _configs(name)
    shapes = jax.eval_shape(registry.build_model(full).init, jax.random.PRNGKey(0))
    count = sum(int(np.prod(leaf.shape)) for net in shapes.nets.values() for leaf in jax.tree_util.tree_leaves(net.params))
    model = registry.build_model(tiny)
    state = model.init(jax.random.PRNGKey(0))
    labelled = 8 if tiny.get("num_labels", 0) else 0
    new, _ = jax.jit(model.train_step)(state, batch_of(bars_dataset(), 16, labelled))
    total = sum(float(np.sum(np.asarray(leaf, np.float64))) for net in new.nets.values()
                for leaf in jax.tree_util.tree_leaves(net.params))
    return count, total


NAMES = [f"aae:{v}" for v in aae.VARIANTS] + [f"bigan:{v}" for v in bigan.VARIANTS]


@pytest.mark.parametrize("name", NAMES)
def test_each_named_config_is_the_model_it_was(name):
    count, total = measure(name)
    assert name in PINS, f"{name} is not pinned: python tests/test_pins.py"
    assert count == PINS[name][0]
    assert total == pytest.approx(PINS[name][1], rel=1e-5, abs=1e-4)


if __name__ == "__main__":
    for name in NAMES:
        print(f"    {name!r}: {measure(name)},")
