"""The retirement rule as the gateway applies it: demote, then retire.

Placeholder wiring until ``bandits.retirement`` lands; replaced below.
"""

from __future__ import annotations

from collections.abc import Sequence

from bandits.state import ArmStats
from gateway.config import RuleConfig
from gateway.rules import Adjustment

__all__ = ["Retirement"]


class Retirement:
    """Apply the sequential retirement rule to one video's candidates."""

    def apply(
        self, rules: RuleConfig, stats: Sequence[ArmStats], adjustment: Adjustment
    ) -> dict[int, str]:
        return {}
