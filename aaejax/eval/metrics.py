"""Metrics that tell whether a model learned. All batched JAX on the device, no Python loops
over examples.

- recon_mse: test-set reconstruction error in [0, 1] pixel space.
- classifier-based sample quality (a LeNet trained by the project, aaejax/eval/classifier.py):
  `classifier_score` (the Inception-score analogue), the fraction of samples per predicted class,
  the mean top probability, and `fd_lenet` (Fréchet distance in its penultimate layer).
- knn1_acc: 1-nearest-neighbour accuracy of features, train -> test (Euclidean).
- linear_probe_acc: multinomial logistic regression on features, train -> test.
- parzen: Parzen-window log-likelihood of test images under samples (the AAE paper's metric).
- cluster errors (categorical AAE): test error when each cluster takes the label of the
  validation example it is most sure of (the AAE paper's rule), or the majority class of its
  members, or the best one-to-one cluster-class matching (Hungarian; clusters left unmatched
  count as errors).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax


def batched(fn, x, *more, batch: int = 1000):
    """fn(x, *more) applied in batches along axis 0, its outputs (a pytree) concatenated: bounded
    memory, outside jit. The one host-side batch loop (in jit: `pieces` with lax.map)."""
    outs = [fn(x[i:i + batch], *(m[i:i + batch] for m in more)) for i in range(0, x.shape[0], batch)]
    return jax.tree_util.tree_map(lambda *parts: jnp.concatenate(parts), *outs)


def pieces(x: jax.Array, most: int = 1000) -> jax.Array:
    """[N, ...] -> [N / size, size, ...] for lax.map inside jit, size = gcd(N, most) (MNIST's
    10 000 images: 1 000; a prime N: pieces of 1)."""
    return x.reshape(-1, math.gcd(x.shape[0], most), *x.shape[1:])


def recon_mse(reconstruct, images01, *more) -> float:
    """reconstruct(images01 [, labels]) vs images01: mean squared error in [0, 1] pixels."""
    r = batched(reconstruct, images01, *more)
    return float(jnp.mean(jnp.square(r - images01)))


def classifier_score(probs: jax.Array, eps: float = 1e-12) -> float:
    """exp(E_x KL(p(y|x) || p(y))): 1 for constant predictions, up to 10 for confident, balanced."""
    marginal = jnp.mean(probs, axis=0)
    kl = jnp.sum(probs * (jnp.log(probs + eps) - jnp.log(marginal + eps)), axis=1)
    return float(jnp.exp(jnp.mean(kl)))


def class_fractions(probs: jax.Array, num_classes: int = 10) -> list[float]:
    return [float(f) for f in jnp.bincount(jnp.argmax(probs, axis=1), length=num_classes) / probs.shape[0]]


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(f1, f2) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, D].

    The D x D algebra runs in float64 on the host; tr(sqrt(s1 s2)) is computed as
    tr(sqrt(sqrt(s1) s2 sqrt(s1))), a symmetric PSD matrix, so `eigh` is stable.
    """
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.atleast_2d(np.cov(f1, rowvar=False)), np.atleast_2d(np.cov(f2, rowvar=False))
    r1 = _sqrtm_psd(s1)
    covmean_tr = np.trace(_sqrtm_psd(r1 @ s2 @ r1))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * covmean_tr)


@jax.jit
def _nearest(query: jax.Array, ref: jax.Array) -> jax.Array:
    """Index of the nearest row of ref [M, D] for each row of query [B, D] (squared Euclidean)."""
    d = jnp.sum(query**2, 1)[:, None] - 2 * query @ ref.T + jnp.sum(ref**2, 1)[None, :]
    return jnp.argmin(d, axis=1)


def knn1_accuracy(train_x, train_y, test_x, test_y, batch: int = 500) -> float:
    train_x = jnp.asarray(train_x, jnp.float32).reshape(len(train_x), -1)
    test_x = jnp.asarray(test_x, jnp.float32).reshape(len(test_x), -1)
    idx = batched(lambda q: _nearest(q, train_x), test_x, batch=batch)
    return float(jnp.mean(jnp.asarray(train_y)[idx] == jnp.asarray(test_y)))


def linear_probe_accuracy(train_x, train_y, test_x, test_y, *, steps: int = 500, l2: float = 1e-4,
                          num_classes: int = 10) -> float:
    """Multinomial logistic regression (full-batch L-BFGS on standardised features)."""
    train_x = jnp.asarray(train_x, jnp.float32).reshape(len(train_x), -1)
    test_x = jnp.asarray(test_x, jnp.float32).reshape(len(test_x), -1)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    params = _fit_probe(train_x, jnp.asarray(train_y), steps=steps, l2=l2, num_classes=num_classes)
    pred = jnp.argmax(test_x @ params["w"] + params["b"], axis=1)
    return float(jnp.mean(pred == jnp.asarray(test_y)))


@functools.partial(jax.jit, static_argnames=("steps", "l2", "num_classes"))
def _fit_probe(train_x: jax.Array, train_y: jax.Array, *, steps: int, l2: float, num_classes: int) -> dict:
    """{'w' [D, C], 'b' [C]} after `steps` L-BFGS steps on features [N, D] and labels [N]. The
    features are arguments, not constants of the program: one compile per shape, not per call."""
    params = {"w": jnp.zeros((train_x.shape[1], num_classes)), "b": jnp.zeros((num_classes,))}

    def loss(p):
        logits = train_x @ p["w"] + p["b"]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, train_y).mean()
        return ce + l2 * jnp.sum(p["w"] ** 2)

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(carry, _):
        params, state = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=loss)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), length=steps)
    return params


@jax.jit
def _parzen_terms(x: jax.Array, samples: jax.Array, sq_samples: jax.Array, sigmas: jax.Array) -> jax.Array:
    """log p_sigma(x) for each x [B, D] and each sigma [S] -> [B, S], under a Gaussian-kernel
    density centred on samples [M, D]."""
    d2 = jnp.sum(x**2, 1)[:, None] - 2 * x @ samples.T + sq_samples[None, :]  # [B, M]
    d2 = jnp.maximum(d2, 0.0)
    dim, m = x.shape[1], samples.shape[0]
    lse = jax.scipy.special.logsumexp(-d2[:, :, None] / (2 * sigmas**2), axis=1)  # [B, S]
    return lse - jnp.log(m) - 0.5 * dim * jnp.log(2 * jnp.pi * sigmas**2)


def parzen_log_likelihoods(samples, x, sigmas, batch: int = 200) -> jax.Array:
    """[N, S] log-likelihoods of x [N, ...] under Parzen windows of `samples` [M, ...] for each
    sigma [S], x taken in pieces of at most `batch` (traceable: the curve runs it inside jit)."""
    samples = jnp.asarray(samples, jnp.float32).reshape(samples.shape[0], -1)
    x = jnp.asarray(x, jnp.float32).reshape(x.shape[0], samples.shape[1])
    sigmas = jnp.atleast_1d(jnp.asarray(sigmas, jnp.float32))
    sq = jnp.sum(samples**2, 1)
    return jax.lax.map(lambda b: _parzen_terms(b, samples, sq, sigmas), pieces(x, batch)).reshape(-1, sigmas.shape[0])


def parzen_jax(samples, x_val, x_test, sigmas, batch: int = 200) -> dict:
    """The GAN/AAE papers' Parzen estimate, traceable: sigma [S] chosen by mean log-likelihood on
    x_val, then the mean and standard error over x_test (nats; pixels in [0, 1]) ->
    {parzen_ll, parzen_ll_se, parzen_sigma}."""
    sigmas = jnp.asarray(sigmas, jnp.float32)
    best = sigmas[jnp.argmax(jnp.mean(parzen_log_likelihoods(samples, x_val, sigmas, batch), 0))]
    ll = parzen_log_likelihoods(samples, x_test, best[None], batch)[:, 0]
    return {"parzen_ll": jnp.mean(ll), "parzen_ll_se": jnp.std(ll, ddof=1) / jnp.sqrt(ll.shape[0]),
            "parzen_sigma": best}


def parzen(samples, x_val, x_test, sigmas=None) -> dict:
    """parzen_jax on host arrays, compiled; floats out. Default sigmas: 19 from 0.05 to 0.4."""
    sigmas = np.asarray(sigmas if sigmas is not None else np.logspace(-1.3, -0.4, 19), np.float32)
    out = _parzen_jit(*(jnp.asarray(a, jnp.float32) for a in (samples, x_val, x_test, sigmas)))
    return {k: float(v) for k, v in out.items()}


_parzen_jit = jax.jit(parzen_jax)  # one traced program per shape, not one per parzen() call


def heldout_data(dataset, config) -> dict:
    """The examples a model's `curve` reads, as device arrays: uint8 test_images / int32
    test_labels of the test split, and val_images / val_labels: with data_split "official" the
    10 000 training images held out of training, else the test split again (a protocol that
    needs held-out validation images refuses that split: PaperAAE.validate)."""
    from aaejax.data.datasets import official_split

    _, held = official_split(len(dataset.train_images))
    official = config.data_split == "official"
    val_x = dataset.train_images[held] if official else dataset.test_images
    val_y = dataset.train_labels[held] if official else dataset.test_labels
    return {"test_images": jnp.asarray(dataset.test_images), "test_labels": jnp.asarray(dataset.test_labels),
            "val_images": jnp.asarray(val_x), "val_labels": jnp.asarray(val_y)}


def cluster_errors_jax(probs_val, val_labels, test_clusters, test_labels, num_classes: int = 10) -> dict:
    """Test errors of two ways to name clusters from held-out examples (traceable):
    cluster_error_paper: cluster i takes the label of the validation example x_n that maximises
    q(y_i|x_n) (the AAE paper's rule); cluster_error_majority: the majority label of the
    validation examples it holds (class 0 if none); clusters_used: clusters the test set uses.
    probs_val [Nv, K] q(y|x) of the validation examples, test_clusters [Nt] ints."""
    k = probs_val.shape[1]
    head = val_labels[jnp.argmax(probs_val, 0)]  # [K]
    counts = jax.nn.one_hot(jnp.argmax(probs_val, 1), k).T @ jax.nn.one_hot(val_labels, num_classes)  # [K, C]
    majority = jnp.argmax(counts, 1)
    return {"cluster_error_paper": jnp.mean(head[test_clusters] != test_labels),
            "cluster_error_majority": jnp.mean(majority[test_clusters] != test_labels),
            "clusters_used": jnp.sum(jnp.bincount(test_clusters, length=k) > 0)}


def contingency(clusters, labels, num_clusters: int, num_classes: int = 10) -> np.ndarray:
    """counts[k, c] = #examples in cluster k with label c."""
    counts = np.zeros((num_clusters, num_classes), np.int64)
    np.add.at(counts, (np.asarray(clusters), np.asarray(labels)), 1)
    return counts


def cluster_errors(train_clusters, train_labels, test_clusters, test_labels, num_clusters: int,
                   num_classes: int = 10) -> dict:
    """{'cluster_error_majority', 'cluster_error_hungarian'} on the test set (see module doc)."""
    from scipy.optimize import linear_sum_assignment

    train_counts = contingency(train_clusters, train_labels, num_clusters, num_classes)
    majority = train_counts.argmax(1)  # an empty cluster gets class 0; it holds no test point anyway
    test_clusters, test_labels = np.asarray(test_clusters), np.asarray(test_labels)
    err_majority = float(np.mean(majority[test_clusters] != test_labels))
    rows, cols = linear_sum_assignment(-train_counts)  # matching chosen on the training set
    mapping = np.full(num_clusters, -1)
    mapping[rows] = cols
    err_hungarian = float(np.mean(mapping[test_clusters] != test_labels))
    return {"cluster_error_majority": err_majority, "cluster_error_hungarian": err_hungarian}


def official_bigan_protocol(features, dataset) -> dict:
    """The official BiGAN code's feature scores (train_gan.py, eval_and_disp), fractions in [0, 1].

    features(uint8 images [n, 28, 28, 1]) -> (E's pre-sigmoid output [n, d], E's last hidden
    layer [n, h]). Keys:
    - nnc_e_*: 1-NN on E's pre-sigmoid output (its NNC_e: `dist.l2distable` of E's linear output);
    - nnc_e_minus_*: 1-NN on E's last hidden layer (its NNC_e-: BN in deploy mode, after LReLU);
    - probe_e_minus_*: our linear probe (L-BFGS) on that layer -- not its CLS_e-, an online
      classifier trained for 1000 deploy batches at the GAN's current learning rate.
    References are the official split's 50 000 training images; queries its 10 000 held-out
    training images (`*_heldout`, as in the official log) and the MNIST test images (`*_test`).
    """
    from aaejax.data.datasets import official_split

    def feats(x):
        return tuple(np.asarray(f) for f in batched(lambda b: tuple(features(b)[:2]), x))

    train_idx, held_idx = official_split(len(dataset.train_images))
    ref, ref_y = feats(dataset.train_images[train_idx]), dataset.train_labels[train_idx]
    queries = {"heldout": (feats(dataset.train_images[held_idx]), dataset.train_labels[held_idx]),
               "test": (feats(dataset.test_images), dataset.test_labels)}
    out = {}
    for name, ((logits, hidden), y) in queries.items():
        out[f"nnc_e_{name}"] = knn1_accuracy(ref[0], ref_y, logits, y)
        out[f"nnc_e_minus_{name}"] = knn1_accuracy(ref[1], ref_y, hidden, y)
        out[f"probe_e_minus_{name}"] = linear_probe_accuracy(ref[1], ref_y, hidden, y)
    return out
