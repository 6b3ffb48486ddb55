"""Bandit maths shared by the streaming learner and the gateway."""

from bandits.state import ArmStats

__all__ = ["ArmStats"]
