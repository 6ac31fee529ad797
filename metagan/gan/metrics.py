"""Generation metrics in the feature space of an embedding: Frechet distance, diversity, fidelity."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import torch


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
    """Frechet distance between two sets of features [n, D]."""
    return frechet_distance(*gaussian_stats(real), *gaussian_stats(fake))


def mean_pairwise_distance(features: torch.Tensor) -> float:
    """Mean Euclidean distance over all distinct pairs of rows of [n, D]."""
    n = features.shape[0]
    if n < 2:
        raise ValueError("diversity needs at least two samples")
    d = torch.cdist(features, features)
    return float(d.sum() / (n * (n - 1)))


def relative_diversity(fake: torch.Tensor, real: torch.Tensor) -> float:
    """Pairwise spread of generated samples relative to real drawings of the same character
    (1 = as diverse as real data; near 0 = mode collapse)."""
    return mean_pairwise_distance(fake) / mean_pairwise_distance(real)


def conditional_fidelity(fake: torch.Tensor, prototypes: torch.Tensor, target: int) -> float:
    """Fraction of generated features [n, D] nearest to prototype `target` among [N, D]."""
    nearest = torch.cdist(fake, prototypes).argmin(dim=1)
    return float((nearest == target).float().mean())
