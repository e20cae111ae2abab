"""Random image warps on the device (the categorical AAE's labelled images and consistency view).

Every function maps [N, H, W, C] images to the same shape and dtype (uint8 rounded); uncovered
pixels are zero (background).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def random_shift(key, images, max_shift: int):
    """Each image translated by its own random (dy, dx) in [-max_shift, max_shift]."""
    if not max_shift:
        return images
    n, h, w, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
    offsets = jax.random.randint(key, (n, 2), 0, 2 * max_shift + 1)
    crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, img.shape[-1]))
    return jax.vmap(crop)(padded, offsets)


def rotate(images, angles):
    """Each image turned counter-clockwise (as displayed) about its centre by its own angle in
    radians [N], bilinear."""
    return warp(images, rotation_inverse(angles))


def rotation_inverse(angles):
    """[N] radians -> [N, 2, 2]: the map from an output pixel's (row, col) offset to its source's
    under a counter-clockwise turn as displayed (rows grow downwards)."""
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    return jnp.stack([jnp.stack([cos, sin], -1), jnp.stack([-sin, cos], -1)], -2)


def warp(images, inverse):
    """Each image resampled about its centre, bilinear: output pixel p reads the input at
    centre + inverse[n] @ (p - centre), (row, col) offsets. inverse [N, 2, 2]."""
    _, h, w, _ = images.shape
    ci, cj = (h - 1) / 2.0, (w - 1) / 2.0
    ii, jj = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) - ci, jnp.arange(w, dtype=jnp.float32) - cj, indexing="ij")

    def one(img, m):
        src = (ci + m[0, 0] * ii + m[0, 1] * jj, cj + m[1, 0] * ii + m[1, 1] * jj)
        plane = lambda ch: jax.scipy.ndimage.map_coordinates(ch, src, order=1, mode="constant", cval=0.0)
        return jax.vmap(plane, in_axes=-1, out_axes=-1)(img)  # each channel alike

    out = jax.vmap(one)(images.astype(jnp.float32), inverse.astype(jnp.float32))
    if images.dtype == jnp.uint8:
        return jnp.clip(jnp.round(out), 0, 255).astype(jnp.uint8)
    return out.astype(images.dtype)


def random_rotation(key, images, max_degrees: float):
    """Each image turned by its own angle, uniform in +-max_degrees."""
    if not max_degrees:
        return images
    limit = jnp.deg2rad(float(max_degrees))
    return rotate(images, jax.random.uniform(key, (images.shape[0],), minval=-limit, maxval=limit))


def random_view(key, images, max_degrees: float, max_shift: int):
    """Rotated by up to `max_degrees`, then shifted by up to `max_shift` pixels. The shift draws
    from `key` itself and the rotation from fold_in(key, 1)."""
    return random_shift(key, random_rotation(jax.random.fold_in(key, 1), images, max_degrees), max_shift)
