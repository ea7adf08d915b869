"""Callbacks: the InfluenceTracker of UnTrac and UnTrac-Inv, TracIn checkpoints,
and StopOnSigterm."""

from lit_untrac.callbacks.influence_tracker import InfluenceTracker
from lit_untrac.callbacks.stop_on_sigterm import StopOnSigterm
from lit_untrac.callbacks.tracin_checkpoints import TracInCheckpoints

__all__ = ["InfluenceTracker", "StopOnSigterm", "TracInCheckpoints"]
