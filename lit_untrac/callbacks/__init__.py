from lit_untrac.callbacks.tracin_checkpoints import TracInCheckpoints  # noqa: F401
