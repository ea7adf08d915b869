"""Callbacks: the InfluenceTracker of UnTrac and UnTrac-Inv, and TracIn checkpoints."""

from lit_untrac.callbacks.influence_tracker import InfluenceTracker
from lit_untrac.callbacks.tracin_checkpoints import TracInCheckpoints

__all__ = ["InfluenceTracker", "TracInCheckpoints"]
