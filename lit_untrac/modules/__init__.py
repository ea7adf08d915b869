"""LightningModules: the language model, gradient ascent, gradient extraction."""

from lit_untrac.modules.language_model import LanguageModel, build_model, load_checkpoint_model
from lit_untrac.modules.unlearning import NonFiniteLossError, UnlearningModule

__all__ = [
    "LanguageModel",
    "NonFiniteLossError",
    "UnlearningModule",
    "build_model",
    "load_checkpoint_model",
]
