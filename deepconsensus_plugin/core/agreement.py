"""Combining the pickers' votes with the network's score, without ground truth.

The network scores each OR coordinate from its image alone; the pickers have
already said something about it too, and how much each picker's word is
worth can be read from the data.  A picker whose picks the others confirm
most of the time is reliable; one whose picks nobody confirms mostly finds
junk.  Dawid and Skene (1979) made this an EM problem: every coordinate has
a hidden class (particle or not); each picker picks a particle with its own
sensitivity and a non-particle with its own false-pick rate; the network's
logit is one more voter, a Gaussian per class.  EM alternates between the
posterior class of every coordinate and the voters' parameters, and the
posterior is the combined score.

Why this beats either source alone: the network cannot tell an ice blob that
looks like a particle at 32 px from a particle, but a picker that never
agrees with the others on such blobs can; the votes cannot tell a particle
that one good picker found from junk that one bad picker found, but the
picker's estimated reliability and the image can.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np

logger = logging.getLogger(__name__)

LOGIT_CLIP = 1e-6
"""Scores are clipped to [eps, 1 - eps] before the logit, so that saturated scores stay finite."""
MIN_SPREAD = 0.3
"""Floor of each class's logit standard deviation, as a share of the spread of all logits.

A network trained to saturation gives many coordinates the same clipped logit
(13.8 at LOGIT_CLIP).  Without a floor, EM can let the particle class shrink
onto that spike (standard deviation ~0) and call every other particle junk:
seen on EMPIAR-10028 with one seed (retained F1 0.60 instead of 0.80).  A
class narrower than 0.3 of the whole spread is not what two overlapping
classes look like; on runs that did not collapse the floor changes nothing.
"""
MIN_STD = 0.1
"""Absolute floor of a class's logit standard deviation (all logits equal)."""
RATE_CLIP = 1e-3
"""Sensitivities and false-pick rates stay in [eps, 1 - eps]: a picker is never infallible."""


@dataclass(frozen=True)
class AgreementModel:
    """What EM learnt about the voters, for the log, the summary and the viewer.

    ``sensitivity[p]`` is the share of particles picker ``p`` picked,
    ``false_pick_rate[p]`` the share of non-particles (among the OR set) it
    picked; ``logit_mean``/``logit_std`` are the network logit's Gaussian per
    class (index 0: not a particle, 1: particle); ``prior`` the share of
    particles in the OR set.
    """

    sensitivity: np.ndarray
    false_pick_rate: np.ndarray
    logit_mean: Optional[np.ndarray]
    logit_std: Optional[np.ndarray]
    prior: float
    iterations: int


def score_logit(scores: np.ndarray) -> np.ndarray:
    """The logit of classifier scores in [0, 1], clipped to stay finite."""
    p = np.clip(np.asarray(scores, dtype=np.float64), LOGIT_CLIP, 1 - LOGIT_CLIP)
    return np.log(p) - np.log1p(-p)


def dawid_skene(voters: np.ndarray, logit: Optional[np.ndarray] = None,
                init: Optional[np.ndarray] = None, max_iter: int = 200,
                tol: float = 1e-6) -> tuple[np.ndarray, AgreementModel]:
    """Posterior probability that each coordinate is a particle, and the fitted model.

    ``voters`` is the consensus table's (n, pickers) boolean matrix; ``logit``
    the network's logit per coordinate (None: votes alone).  EM starts from
    ``init`` (a first guess of the posterior; default: the network's score
    when given, else the share of pickers that picked each coordinate), which
    also fixes which class is "particle".  NaN logits (coordinates that
    could not be scored) are left out of the fit and get NaN.
    """
    voters = np.asarray(voters, dtype=bool)
    n, n_pickers = voters.shape
    valid = np.ones(n, dtype=bool) if logit is None else np.isfinite(logit)
    posterior = np.full(n, np.nan)
    v = voters[valid].astype(np.float64)
    z = None if logit is None else np.asarray(logit, dtype=np.float64)[valid]
    if init is not None:
        q = np.clip(np.asarray(init, dtype=np.float64)[valid], 0.0, 1.0)
    elif z is not None:
        q = 1.0 / (1.0 + np.exp(-z))
    else:
        q = v.mean(axis=1)
    if len(q) == 0:
        empty = np.zeros(n_pickers)
        return posterior, AgreementModel(empty, empty, None, None, 0.0, 0)
    min_std = None if z is None else max(MIN_STD, MIN_SPREAD * float(np.std(z)))
    log_likelihood = -np.inf
    iteration = 0
    for iteration in range(1, max_iter + 1):
        prior, sens, fpr, mean, std = _m_step(q, v, z, min_std)
        log_pos = np.log(prior) + v @ np.log(sens) + (1 - v) @ np.log1p(-sens)
        log_neg = np.log1p(-prior) + v @ np.log(fpr) + (1 - v) @ np.log1p(-fpr)
        if z is not None:
            log_pos += _log_normal(z, mean[1], std[1])
            log_neg += _log_normal(z, mean[0], std[0])
        top = np.maximum(log_pos, log_neg)
        evidence = top + np.log(np.exp(log_pos - top) + np.exp(log_neg - top))
        q = np.exp(log_pos - evidence)
        new_log_likelihood = float(evidence.sum())
        if new_log_likelihood - log_likelihood < tol * max(1.0, abs(new_log_likelihood)):
            break
        log_likelihood = new_log_likelihood
    posterior[valid] = q
    model = AgreementModel(sensitivity=sens, false_pick_rate=fpr,
                           logit_mean=mean, logit_std=std, prior=prior, iterations=iteration)
    logger.info("Picker agreement (EM, %d iterations): particles %.0f%% of the OR set; "
                "sensitivity %s; false-pick rate %s%s", iteration, 100 * prior,
                _rates(sens), _rates(fpr),
                "" if mean is None else "; network logit %.1f+-%.1f (particles) vs "
                "%.1f+-%.1f" % (mean[1], std[1], mean[0], std[0]))
    return posterior, model


def posterior_given(model: AgreementModel, voters: np.ndarray,
                    logit: Optional[np.ndarray] = None) -> np.ndarray:
    """The posterior of new coordinates under a fitted ``model`` (EM's E-step, no refit):
    what a streaming run gives a later batch, so that the coordinates already in its
    outputs keep their scores.  NaN logits give NaN."""
    v = np.asarray(voters, dtype=np.float64)
    log_pos = (np.log(model.prior) + v @ np.log(model.sensitivity)
               + (1 - v) @ np.log1p(-model.sensitivity))
    log_neg = (np.log1p(-model.prior) + v @ np.log(model.false_pick_rate)
               + (1 - v) @ np.log1p(-model.false_pick_rate))
    if logit is not None and model.logit_mean is not None:
        z = np.asarray(logit, dtype=np.float64)
        log_pos = log_pos + _log_normal(z, model.logit_mean[1], model.logit_std[1])
        log_neg = log_neg + _log_normal(z, model.logit_mean[0], model.logit_std[0])
    top = np.maximum(log_pos, log_neg)
    return np.exp(log_pos - top - np.log(np.exp(log_pos - top) + np.exp(log_neg - top)))


def _m_step(q: np.ndarray, v: np.ndarray, z: Optional[np.ndarray], min_std: Optional[float]):
    """Maximum-likelihood voter parameters given the current posteriors ``q``; each class's
    logit standard deviation is at least ``min_std``."""
    w_pos, w_neg = q.sum(), (1 - q).sum()
    prior = float(np.clip(q.mean(), RATE_CLIP, 1 - RATE_CLIP))
    sens = np.clip((q @ v) / max(w_pos, 1e-12), RATE_CLIP, 1 - RATE_CLIP)
    fpr = np.clip(((1 - q) @ v) / max(w_neg, 1e-12), RATE_CLIP, 1 - RATE_CLIP)
    if z is None:
        return prior, sens, fpr, None, None
    mean = np.array([((1 - q) @ z) / max(w_neg, 1e-12), (q @ z) / max(w_pos, 1e-12)])
    var = np.array([((1 - q) @ (z - mean[0]) ** 2) / max(w_neg, 1e-12),
                    (q @ (z - mean[1]) ** 2) / max(w_pos, 1e-12)])
    return prior, sens, fpr, mean, np.maximum(np.sqrt(var), min_std)


def _log_normal(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    return -0.5 * ((x - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)


def _rates(values: np.ndarray) -> str:
    return "[" + ", ".join("%.2f" % v for v in values) + "]"
