"""Callbacks: the InfluenceTracker of UnTrac and UnTrac-Inv."""

from lit_untrac.callbacks.influence_tracker import InfluenceTracker

__all__ = ["InfluenceTracker"]
