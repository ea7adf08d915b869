"""The language-model LightningModule: pretraining, finetuning and leave-out
retraining of any causal or encoder-decoder transformer."""

from __future__ import annotations

import importlib
import inspect
import os
from typing import Any, Literal

import lightning.pytorch as pl
import torch

from lit_untrac.errors import UserError, choose
from lit_untrac.models import ModelSpec, load_model
from lit_untrac.modules.losses import batch_loss, example_losses, token_nll

SCHEDULERS = ("constant", "linear", "cosine")


def resolve_optimizer(name: str) -> type[torch.optim.Optimizer]:
    """An optimizer class by name: a ``torch.optim`` class name (``Adam``,
    ``SGD``, ``Adafactor``) or a dotted path
    (``transformers.optimization.Adafactor``)."""
    if "." in name:
        module_name, _, attr = name.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise UserError(f"cannot import optimizer {name!r}: {err}") from err
    else:
        known = sorted(
            n
            for n, c in vars(torch.optim).items()
            if inspect.isclass(c)
            and issubclass(c, torch.optim.Optimizer)
            and c is not torch.optim.Optimizer
        )
        if name not in known:
            raise UserError(
                f"unknown optimizer {name!r}; expected one of {known} or a dotted class path"
            )
        cls = getattr(torch.optim, name)
    if not (inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer)):
        raise UserError(f"{name!r} is not a torch optimizer class")
    return cls


def build_optimizer(name: str, args: dict[str, Any] | None, params) -> torch.optim.Optimizer:
    """Instantiate an optimizer, turning bad arguments into a clear error.

    Unless ``args`` choose ``fused`` or ``foreach`` themselves, torch's fused
    implementation is used where the class has one for the parameters'
    device (Adam, AdamW, SGD and Adagrad on CPU and CUDA), else the
    ``foreach`` one on CUDA; otherwise torch's default.
    """
    cls = resolve_optimizer(name)
    args = dict(args or {})
    for key in ("betas",):
        if isinstance(args.get(key), list):
            args[key] = tuple(args[key])
    params = [dict(p, params=list(p["params"])) if isinstance(p, dict) else p for p in params]
    args.update(fast_implementation(cls, args, params))
    try:
        return cls(params, **args)
    except (TypeError, ValueError) as err:
        raise UserError(f"bad arguments {args} for optimizer {name!r}: {err}") from err


def fast_implementation(cls: type[torch.optim.Optimizer], args: dict[str, Any], params) -> dict:
    """``{"fused": True}``, ``{"foreach": True}`` or nothing, for :func:`build_optimizer`."""
    if "fused" in args or "foreach" in args:
        return {}
    tensors = [p for item in params for p in (item["params"] if isinstance(item, dict) else [item])]
    if not tensors:
        return {}
    accepts = inspect.signature(cls.__init__).parameters
    devices = {p.device.type for p in tensors}
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        fused_devices = set(_get_fused_kernels_supported_devices())
    except ImportError:  # a private helper; torch 2.4 and later fuse on the CPU too
        fused_devices = {"cuda"}
    if (
        "fused" in accepts
        and devices <= fused_devices
        and all(p.is_floating_point() and not p.is_sparse for p in tensors)
    ):
        return {"fused": True}
    if "foreach" in accepts and devices == {"cuda"}:
        return {"foreach": True}
    return {}


def load_checkpoint_model(path: str):
    """The model and tokenizer saved in a Lightning checkpoint of a
    :class:`LanguageModel` (or :class:`~lit_untrac.modules.UnlearningModule`)."""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint {path!r} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        spec = checkpoint["hyper_parameters"]["model"]
        state = checkpoint["state_dict"]
    except Exception as err:  # torch raises many types for a corrupt file
        raise UserError(
            f"checkpoint {path!r} is not a readable lit-untrac checkpoint: {err}"
        ) from err
    model, tokenizer = build_model(spec)
    weights = {
        key[len("model.") :].replace("_orig_mod.", ""): value
        for key, value in state.items()
        if key.startswith("model.")
    }
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise UserError(f"checkpoint {path!r} does not match its model: {str(err)[:300]}") from err
    return model, tokenizer


def build_model(spec: ModelSpec | dict[str, Any] | str):
    """:func:`lit_untrac.models.load_model`, plus Lightning checkpoints."""
    spec = ModelSpec.coerce(spec)
    if spec.name_or_path and spec.name_or_path.endswith(".ckpt"):
        return load_checkpoint_model(spec.name_or_path)
    return load_model(spec)


class LanguageModel(pl.LightningModule):
    """A causal or encoder-decoder transformer with its loss, optimizer and schedule.

    Args:
        model: What to build: a :class:`~lit_untrac.models.ModelSpec`, its
            dict, or a bare name or path (hub id, folder, packaged model,
            Lightning ``.ckpt``).
        optimizer: A ``torch.optim`` class name or a dotted class path.
        optimizer_args: The optimizer's keyword arguments (``lr`` and so on).
        scheduler: ``constant``, ``linear`` or ``cosine`` (decaying to zero at
            the last step), each after ``warmup_steps`` of linear warm-up.
        warmup_steps: Steps of linear warm-up.
        export: Save the final model in ``save_pretrained`` format when
            training ends, for the other stages to load.
        export_dir: Where; by default ``<trainer.default_root_dir>/export``.
        gradient_checkpointing: Recompute activations in the backward pass.
        compile: ``torch.compile`` the model in place (checkpoints keep the
            uncompiled parameter names).

    Example::

        module = LanguageModel({"config": {"model_type": "gpt2", "n_layer": 2,
                                           "n_head": 2, "n_embd": 64},
                                "tokenizer": "bytes"},
                               optimizer_args={"lr": 1e-3})
        loss = module.loss(batch)
    """

    def __init__(
        self,
        model: ModelSpec | dict[str, Any] | str | None = None,
        optimizer: str = "AdamW",
        optimizer_args: dict[str, Any] | None = None,
        scheduler: Literal["constant", "linear", "cosine"] = "constant",
        warmup_steps: int = 0,
        export: bool = True,
        export_dir: str | None = None,
        gradient_checkpointing: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if model is None:
            raise UserError("the module needs a model: a name, a path or a model dict")
        choose("scheduler", scheduler, SCHEDULERS)
        resolve_optimizer(optimizer)
        spec = ModelSpec.coerce(model)
        self.save_hyperparameters(
            {
                "model": spec.to_dict(),
                "optimizer": optimizer,
                "optimizer_args": dict(optimizer_args or {}),
                "scheduler": scheduler,
                "warmup_steps": warmup_steps,
                "export": export,
                "export_dir": export_dir,
                "gradient_checkpointing": gradient_checkpointing,
                "compile": compile,
            }
        )
        self.model, self.tokenizer = build_model(spec)
        if gradient_checkpointing:
            enable = getattr(self.model, "activation_checkpointing_enable", None)
            (enable or self.model.gradient_checkpointing_enable)()  # older transformers
        if compile:
            self.model.compile()

    # ---- losses ---------------------------------------------------------

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The batch's training loss: the mean over its label tokens.

        Under data parallelism each process holds a share of the global
        batch and the gradients are averaged over processes; the share's
        loss is then scaled so that the update is the token mean over the
        global batch, exactly as in one process.
        """
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1 or not self.training:
            return batch_loss(self.model, batch)
        nll_sum, n_tokens = token_nll(self.model, batch)
        global_tokens = trainer.strategy.reduce(n_tokens.sum().to(nll_sum.dtype), reduce_op="sum")
        return nll_sum.sum() * trainer.world_size / global_tokens.clamp(min=1)

    def example_losses(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """L(z, theta) for each example: its mean token loss."""
        return example_losses(self.model, batch)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].size(0))
        return loss

    def validation_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._log_eval("val_loss", self.trainer.val_dataloaders, batch, dataloader_idx)

    def test_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._log_eval("test_loss", self.trainer.test_dataloaders, batch, dataloader_idx)

    def _log_eval(
        self, prefix: str, loaders, batch: dict[str, torch.Tensor], dataloader_idx: int
    ) -> None:
        """Log the mean example loss of each named evaluation set."""
        losses = self.example_losses(batch)
        name = list(loaders)[dataloader_idx] if isinstance(loaders, dict) else str(dataloader_idx)
        self.log(
            f"{prefix}/{name}", losses.mean(), batch_size=losses.numel(), add_dataloader_idx=False
        )

    # ---- optimisation ---------------------------------------------------------

    def configure_optimizers(self):
        optimizer = build_optimizer(
            self.hparams.optimizer, self.hparams.optimizer_args, self.model.parameters()
        )
        if self.hparams.scheduler == "constant" and not self.hparams.warmup_steps:
            return optimizer
        from transformers import get_scheduler

        name = {"constant": "constant_with_warmup"}.get(
            self.hparams.scheduler, self.hparams.scheduler
        )
        scheduler = get_scheduler(
            name,
            optimizer,
            num_warmup_steps=self.hparams.warmup_steps,
            num_training_steps=int(self.trainer.estimated_stepping_batches),
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # ---- export -------------------------------------------------------------

    def on_fit_end(self) -> None:
        # on_fit_end, not on_train_end: a fit resumed from a checkpoint taken
        # at its last step runs no training loop, and must still export
        if self.hparams.export:
            self.export(
                self.hparams.export_dir or os.path.join(self.trainer.default_root_dir, "export")
            )

    def export(self, path: str) -> None:
        """Save model and tokenizer with ``save_pretrained`` (on rank zero)."""
        trainer = self._trainer
        if trainer is None or trainer.is_global_zero:
            model = getattr(self.model, "_orig_mod", self.model)
            model.save_pretrained(path)
            self.tokenizer.save_pretrained(path)
        if trainer is not None:
            trainer.strategy.barrier("export")
