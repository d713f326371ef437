"""The NoiseReport both sides send: what a noise policy did, or would do, to a result's cells.

The sandbox builds one for each noisy answer, from the scales it used; the broker builds one for an
explained query, from the scales the plan would use (an average's interval is known only when it runs,
so it is 0 there). Both build it here, so a report reads the same whichever side made it.
"""

from __future__ import annotations

from typing import Iterable

from dsbroker.guard.noise_calibration import Calibration
from dsbroker.policy.model import Noise
from dsbroker.v1 import results_pb2


def noise_report(noise: Noise, calibration: Calibration,
                 columns: Iterable[tuple[str, float, float]]) -> results_pb2.NoiseReport:
    """The report of ``noise`` calibrated as ``calibration``; ``columns`` are (name, scale, 95% half-width)."""
    return results_pb2.NoiseReport(
        epsilon_spent=noise.epsilon, epsilon_budget=noise.budget, delta=noise.delta,
        threshold=calibration.threshold, groups_per_entity=noise.groups_per_entity,
        columns=[results_pb2.NoisyColumn(name=name, scale=scale, half_width_95=half)
                 for name, scale, half in columns])
