"""Generation metrics in the feature space of an embedding, computed per character.

Each character contributes three sets of features: the k support drawings the generator was
given, n generated samples and n held-out real drawings (a reference the support excludes).
`character_metrics` scores every character on its own and averages, so a generator that ignores
its support cannot match a mixture of characters; only `pooled_frechet_distance` pools them.

- kid: unbiased MMD^2 with the kernel (x.y/d + 1)^3 (Binkowski et al. 2018); 0 in
  expectation for samples of the character's own distribution, at any n. Lower is better.
- frechet_distance: the Frechet distance of the Gaussians fitted per character, exact even with
  fewer samples than dimensions (see `feature_frechet_distance`); biased upwards at small n,
  so compare it only with the real baseline at the same n.
- fidelity: share of samples whose nearest support prototype (mean support feature) among all
  T characters is their own; chance 1/T. chance_fidelity, the control: the same share for a
  fixed wrong character (character i scored as i + 1 mod T), i.e. what a generator shown another
  character's support would score. It is about 1/T for samples that carry nothing of their
  support (noise, random characters) and about (1 - fidelity) / (T - 1) below 1/T for samples
  that are recognisably their own character.
- novelty: mean distance of samples to their nearest support drawing over that of held-out real
  drawings; near 0 for a generator that copies its support, near 1 for real drawings.
- precision, recall: k-NN manifold estimates (Kynkaanniemi et al. 2019, k = 3).
- diversity: coverage (Naeem et al. 2020), the share of real drawings with a sample inside their
  k-NN ball; noise lies outside every ball, so it cannot buy diversity.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import torch

NEIGHBOURS = 3  # k of the k-NN radii, as in Kynkaanniemi et al. 2019


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] of features [n, D]."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)): the Frechet distance of two Gaussians."""
    with warnings.catch_warnings():
        # Feature covariances from fewer samples than dimensions are singular; sqrtm still
        # returns the right square root, and a non-finite one is regularised below.
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():  # regularise, as reference FID code does
            offset = np.eye(sigma1.shape[0]) * 1e-6
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def feature_frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """Frechet distance between the Gaussians fitted to two sets of features [n, D] (n >= 2).

    With no more samples than dimensions both covariances are singular and sqrtm(S1 S2) is
    ill-conditioned. There Tr((S1 S2)^(1/2)) is computed exactly, with no ridge, as the nuclear
    norm of A1 A2^T / sqrt((n1 - 1)(n2 - 1)), A the centred features: S1 S2 and (A1 A2^T)(A1
    A2^T)^T share their non-zero eigenvalues.
    """
    x, y = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    (n1, d), n2 = x.shape, y.shape[0]
    if min(n1, n2) < 2:
        raise ValueError("a Frechet distance needs at least two samples on each side")
    if min(n1, n2) > d:  # full-rank covariances: the usual form is well conditioned
        return frechet_distance(*gaussian_stats(x), *gaussian_stats(y))
    a1, a2 = x - x.mean(0), y - y.mean(0)
    diff = x.mean(0) - y.mean(0)
    cross = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
    return float(diff @ diff + (a1 ** 2).sum() / (n1 - 1) + (a2 ** 2).sum() / (n2 - 1) - 2 * cross)


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """KID's kernel (x.y / d + 1)^3 between rows of [m, D] and [n, D]."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def kernel_inception_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Unbiased MMD^2 estimate between feature sets [m, D] and [n, D] (Binkowski et al. 2018)."""
    m, n = real.shape[0], fake.shape[0]
    if min(m, n) < 2:
        raise ValueError("KID needs at least two samples on each side")
    x, y = real.double(), fake.double()
    kxx, kyy = polynomial_kernel(x, x), polynomial_kernel(y, y)
    # Dropping the diagonals (k(x, x)) is what makes the estimate unbiased.
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(within_x + within_y - 2 * polynomial_kernel(x, y).mean())


def knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row of [n, D] to its k-th nearest other row."""
    d = torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))
    return d.kthvalue(k, dim=1).values


def precision_recall_coverage(real: torch.Tensor, fake: torch.Tensor,
                              k: int = NEIGHBOURS) -> tuple[float, float, float]:
    """k-NN precision and recall (Kynkaanniemi et al. 2019) and coverage (Naeem et al. 2020)
    of samples [n, D] against real features [m, D]; k shrinks to fit sets of k or fewer."""
    x, y = real.double(), fake.double()
    r_real = knn_radii(x, min(k, x.shape[0] - 1)).unsqueeze(1)  # [m, 1]
    r_fake = knn_radii(y, min(k, y.shape[0] - 1)).unsqueeze(0)  # [1, n]
    d = torch.cdist(x, y)  # [m, n]
    inside_real = d <= r_real
    precision = inside_real.any(0).double().mean()  # samples in some real drawing's ball
    recall = (d <= r_fake).any(1).double().mean()  # real drawings in some sample's ball
    coverage = inside_real.any(1).double().mean()  # real balls holding some sample
    return float(precision), float(recall), float(coverage)


def prototype_fidelity(samples: torch.Tensor, prototypes: torch.Tensor) -> tuple[float, float]:
    """(share of samples [T, n, D] nearest their own prototype among [T, D], share nearest the
    prototype of character (i + 1) mod T: the chance control, a fixed derangement)."""
    t, n = samples.shape[:2]
    if t < 2:
        raise ValueError("fidelity needs at least 2 characters")
    nearest = torch.cdist(samples.flatten(0, 1).double(), prototypes.double()).argmin(1).view(t, n)
    own = torch.arange(t).unsqueeze(1)
    return float((nearest == own).double().mean()), float((nearest == (own + 1) % t).double().mean())


def novelty(samples: torch.Tensor, real: torch.Tensor, support: torch.Tensor) -> float:
    """Mean distance of samples [n, D] to their nearest support drawing [k, D], over the same
    mean for held-out real drawings [m, D]: ~0 copies the support, ~1 is as new as real data."""
    def nearest(x: torch.Tensor) -> torch.Tensor:
        return torch.cdist(x.double(), support.double()).amin(1).mean()

    return float(nearest(samples) / nearest(real))


# What character_metrics returns.
METRIC_KEYS = ("kid", "frechet_distance", "novelty", "precision", "recall", "diversity",
               "pooled_frechet_distance", "fidelity", "chance_fidelity")


def character_metrics(support: torch.Tensor, samples: torch.Tensor, real: torch.Tensor
                      ) -> dict[str, float]:
    """Every metric of the module docstring, from features of support [T, k, D], samples
    [T, n, D] and held-out real drawings [T, m, D] of the same T characters."""
    t = samples.shape[0]
    per_char: dict[str, list[float]] = {"kid": [], "frechet_distance": [], "novelty": [],
                                        "precision": [], "recall": [], "diversity": []}
    for i in range(t):
        precision, recall, coverage = precision_recall_coverage(real[i], samples[i])
        per_char["kid"].append(kernel_inception_distance(real[i], samples[i]))
        per_char["frechet_distance"].append(
            feature_frechet_distance(real[i].double().numpy(), samples[i].double().numpy()))
        per_char["novelty"].append(novelty(samples[i], real[i], support[i]))
        per_char["precision"].append(precision)
        per_char["recall"].append(recall)
        per_char["diversity"].append(coverage)
    fidelity, chance = prototype_fidelity(samples, support.mean(1))
    pooled = feature_frechet_distance(real.flatten(0, 1).double().numpy(),
                                      samples.flatten(0, 1).double().numpy())
    return {**{k: float(np.mean(v)) for k, v in per_char.items()},
            "pooled_frechet_distance": pooled, "fidelity": fidelity, "chance_fidelity": chance}
