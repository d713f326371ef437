"""Noise calibrated with OpenDP: the Laplace scale for a sensitivity and epsilon, and the threshold
that keeps a lone taxpayer's cell from appearing more often than delta.

Calibration depends on the policy and the query's shape only, never on the data, so the broker's
explain and the sandbox's run state the same scales. Discrete (integer) noise is used throughout:
counts and sums of fen are whole numbers and stay so.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import opendp.prelude as dp

from dsbroker.guard.add_noise_measures import NoisePlan, NoisyOutput
from dsbroker.policy.model import Noise

dp.enable_features("contrib")

INTEGER = "i64"
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Calibration:
    """The scales and threshold of one query's noise, and what it spends."""

    epsilon_each: float  # per released measurement (the threshold counts as one)
    threshold_scale: float
    threshold: int
    delta: float
    scales: tuple[float, ...]  # per quantity: the Laplace scale of its vector of cells


@functools.lru_cache(maxsize=256)
def vector_laplace(scale: float) -> dp.Measurement:
    """Discrete Laplace noise on a vector of whole numbers, L1 distance."""
    return dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T=INTEGER)), dp.l1_distance(T=INTEGER), scale=scale)


@functools.lru_cache(maxsize=256)
def laplace_threshold(scale: float, threshold: int) -> dp.Measurement:
    """Noisy counts per key, keys whose noisy count is under ``threshold`` dropped (OpenDP's laplace_threshold)."""
    return dp.m.make_laplace_threshold(
        dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T=INTEGER)),
        dp.l01inf_distance(dp.absolute_distance(T=INTEGER)), scale=scale, threshold=threshold)


@functools.lru_cache(maxsize=1024)
def laplace_scale(sensitivity: int, epsilon: float) -> float:
    """The least scale at which ``vector_laplace`` is epsilon-DP for an L1 sensitivity (OpenDP's own map)."""
    return dp.binary_search_param(vector_laplace, d_in=sensitivity, d_out=epsilon)


@functools.lru_cache(maxsize=256)
def threshold_calibration(groups_per_entity: int, epsilon: float, delta: float, at_least: int) -> tuple[float, int]:
    """The scale and least threshold (not under ``at_least``) at which one taxpayer, in up to
    ``groups_per_entity`` cells, changes the released keys and counts by at most (epsilon, delta)."""
    d_in = (groups_per_entity, groups_per_entity, 1)
    scale = dp.binary_search(lambda s: laplace_threshold(s, at_least).map(d_in)[0] <= epsilon, bounds=(1e-6, 1e9))
    low, high = at_least, max(at_least, 2)
    while laplace_threshold(scale, high).map(d_in)[1] > delta:
        low, high = high, high * 2
    while low < high:  # the least threshold whose delta is small enough
        middle = (low + high) // 2
        if laplace_threshold(scale, middle).map(d_in)[1] <= delta:
            high = middle
        else:
            low = middle + 1
    assert laplace_threshold(scale, high).map(d_in)[0] <= epsilon  # the search is OpenDP's; trust, but verify
    return scale, high


def calibrate(*, epsilon: float, delta: float, groups_per_entity: int, min_entities: int,
              bounds: tuple[int, ...]) -> Calibration:
    """Split ``epsilon`` evenly over the threshold and each quantity (with per-cell bounds ``bounds``)."""
    share = epsilon / (1 + len(bounds))
    threshold_scale, threshold = threshold_calibration(groups_per_entity, share, delta, min_entities)
    scales = tuple(laplace_scale(groups_per_entity * bound, share) for bound in bounds)
    return Calibration(share, threshold_scale, threshold, delta, scales)


def half_width(scale: float, confidence: float = CONFIDENCE) -> float:
    """Half the width of the interval that holds a Laplace(scale) draw with ``confidence``."""
    return scale * math.log(1 / (1 - confidence))


def plan_calibration(plan: NoisePlan, noise: Noise, min_entities: int) -> Calibration:
    """The calibration of a query's noise under a policy: the same in the broker's explain and the sandbox's run."""
    return calibrate(epsilon=noise.epsilon, delta=noise.delta, groups_per_entity=plan.groups_per_entity,
                     min_entities=min_entities, bounds=tuple(q.bound for q in plan.quantities))


def column_scale(output: NoisyOutput, calibration: Calibration) -> float:
    """The Laplace scale of a noisy output's cells (an average: of its sum)."""
    if output.kind == "entities":
        return calibration.threshold_scale
    return calibration.scales[output.column]
