"""Random image warps (aaejax/data/augment.py): known answers and bounds."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from aaejax.data import augment


def test_random_shift_translates_each_image_within_bounds():
    """Every output is its input moved by some (dy, dx) with |dy|, |dx| <= max_shift, zeros filling
    the border; the draws differ between images; max_shift 0 is the identity."""
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, (64, 9, 9, 1), dtype=np.uint8)  # no zero pixel: a shift is unambiguous
    out = np.asarray(jax.jit(augment.random_shift, static_argnums=2)(jax.random.PRNGKey(1), images, 2))
    chex.assert_shape(out, images.shape)
    assert out.dtype == images.dtype
    seen = set()
    for x, y in zip(images, out):
        matches = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                padded = np.pad(x, ((2, 2), (2, 2), (0, 0)))
                if np.array_equal(padded[2 - dy:11 - dy, 2 - dx:11 - dx], y):
                    matches.append((dy, dx))
        assert len(matches) == 1, matches
        seen.add(matches[0])
    assert len(seen) > 10  # 25 possible shifts over 64 images
    np.testing.assert_array_equal(augment.random_shift(jax.random.PRNGKey(1), images, 0), images)


def test_rotate_known_answers():
    """A quarter turn is np.rot90 (counter-clockwise as displayed) exactly, a half turn rot180, and 0 the
    identity; float images keep their dtype."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 9, 9, 1), dtype=np.uint8)
    rotate = jax.jit(augment.rotate)
    quarter = np.asarray(rotate(images, jnp.full((3,), np.pi / 2)))
    np.testing.assert_array_equal(quarter, np.rot90(images, 1, axes=(1, 2)))
    np.testing.assert_array_equal(rotate(images, jnp.full((3,), np.pi)), np.rot90(images, 2, axes=(1, 2)))
    np.testing.assert_array_equal(rotate(images, jnp.zeros((3,))), images)
    floats = images.astype(np.float32) / 255.0
    out = rotate(floats, jnp.asarray([0.0, np.pi / 2, 0.0]))
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out[1], np.rot90(floats[1], 1), atol=1e-6)


def test_random_rotation_turns_each_image_by_its_own_bounded_angle():
    """One bright pixel right of the centre: its centroid turns by at most max_degrees (plus the
    bilinear spread), by different angles in different images; max_degrees 0 is the identity."""
    images = np.zeros((64, 15, 15, 1), np.float32)
    images[:, 7, 13] = 1.0  # 6 pixels right of the centre (7, 7): angle 0
    out = np.asarray(jax.jit(augment.random_rotation, static_argnums=2)(jax.random.PRNGKey(0), images, 30.0))
    chex.assert_shape(out, images.shape)
    ii, jj = np.mgrid[:15, :15]
    mass = out[..., 0].sum((1, 2))
    ci = (out[..., 0] * ii).sum((1, 2)) / mass - 7
    cj = (out[..., 0] * jj).sum((1, 2)) / mass - 7
    angles = np.degrees(np.arctan2(-ci, cj))  # counter-clockwise as displayed: rows grow downwards
    assert np.all(np.abs(angles) <= 30.0 + 3.0), angles
    assert np.std(angles) > 8.0 and (angles > 5).any() and (angles < -5).any()
    np.testing.assert_array_equal(augment.random_rotation(jax.random.PRNGKey(0), images, 0.0), images)


def test_random_view_is_a_rotation_then_a_shift_from_split_keys():
    """The view rotates with fold_in(key, 1) and shifts with key itself."""
    key = jax.random.PRNGKey(4)
    images = np.random.default_rng(0).integers(0, 256, (6, 28, 28, 1), dtype=np.uint8)
    want = augment.random_shift(key, augment.random_rotation(jax.random.fold_in(key, 1), images, 20.0), 2)
    np.testing.assert_array_equal(augment.random_view(key, images, 20.0, 2), want)
    limit = np.deg2rad(20.0)
    angles = jax.random.uniform(jax.random.fold_in(key, 1), (6,), minval=-limit, maxval=limit)
    np.testing.assert_array_equal(augment.random_view(key, images, 20.0, 0), augment.rotate(images, angles))
