"""Gradient extraction for the gradient baselines: dataset-level gradients
(a LightningModule driven by ``Trainer.predict``) and Hessian-vector products.

The loss of an example is L(z, theta), its mean token loss
(:func:`~lit_untrac.modules.losses.example_losses`), as in UnTrac. The
gradient of a dataset D is the sum over its examples,

    g(D, theta) = sum_{z in D} grad_theta L(z, theta),

so it does not depend on how D is cut into batches, and under data
parallelism each process sums its share and the shares are summed across
processes. Gradients are :data:`~lit_untrac.attribution.gradients.Vector`
objects: one tensor per trainable parameter, never one flattened vector.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch.utils.data import DataLoader, IterableDataset

from lit_untrac.errors import UserError
from lit_untrac.modules.losses import example_losses

#: ``loss_fn(model, batch)`` -> the per-example losses of the batch, shape ``[B]``.
LossFn = Callable[[torch.nn.Module, Any], torch.Tensor]
#: One tensor per trainable parameter, in the order of ``model.parameters()``.
Vector = list[torch.Tensor]


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters gradients are taken with respect to, in a fixed order."""
    return [p for p in model.parameters() if p.requires_grad]


def batch_size_of(batch: Any) -> int:
    """Examples in a batch: a dict, tuple or list of tensors, or a tensor."""
    if isinstance(batch, dict):
        batch = next(iter(batch.values()))
    elif isinstance(batch, (tuple, list)):
        batch = batch[0]
    return int(batch.size(0))


class _Batches(IterableDataset):
    def __init__(self, batches: list[Any]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[Any]:
        return iter(self.batches)


class GradientExtractor(pl.LightningModule):
    """Dataset-level gradients g(D, theta) of any model, computed by ``Trainer.predict``.

    Each :meth:`dataset_gradient` call runs one ``predict`` over the given
    batches: ``predict_step`` backpropagates the sum of the batch's example
    losses into ``.grad`` (with grad enabled inside Lightning's no-grad
    evaluation context), and at the end each parameter's gradient is summed
    across processes, tensor by tensor. The gradient is then taken out of
    ``.grad``, so extracting one costs the model plus one gradient of memory.
    The model is in eval mode (no dropout), as Lightning sets it for predict.

    The Trainer must be built with ``inference_mode=False``. Under data
    parallelism every process must run the same calls (use the ``ddp``
    strategy, one process per device; ``ddp_spawn`` keeps the gradients in
    the spawned processes).

    Args:
        model: Any ``torch.nn.Module``.
        loss_fn: ``loss_fn(model, batch)``: the batch's per-example losses;
            by default :func:`~lit_untrac.modules.losses.example_losses`
            (each example's mean token loss).

    Example::

        extractor = GradientExtractor(language_model)
        trainer = pl.Trainer(inference_mode=False, logger=False)
        batches = EvalSet.build("train_1", examples, collator, 8).batches
        gradient = extractor.dataset_gradient(trainer, batches)
    """

    def __init__(self, model: torch.nn.Module, loss_fn: LossFn | None = None) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn or example_losses
        self._batches: list[Any] = []
        self._gradient: Vector = []

    def dataset_gradient(self, trainer: pl.Trainer, batches: Sequence[Any]) -> Vector:
        """sum_{z in batches} grad L(z, theta): one tensor per trainable parameter."""
        if trainer.predict_loop.inference_mode:
            raise UserError(
                "gradient extraction needs a Trainer built with inference_mode=False: "
                "inference mode forbids gradients"
            )
        self._batches, self._gradient = list(batches), []
        try:
            trainer.predict(self, return_predictions=False)
            return self._gradient
        finally:
            self._batches, self._gradient = [], []

    def predict_dataloader(self) -> DataLoader:
        """This process's share of the batches (already collated); an
        iterable dataset, which Lightning never re-shards."""
        rank, world_size = self.trainer.global_rank, self.trainer.world_size
        return DataLoader(_Batches(self._batches[rank::world_size]), batch_size=None)

    def on_predict_start(self) -> None:
        self.model.zero_grad(set_to_none=True)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Add the batch's gradient to ``.grad``; returns its summed loss."""
        with torch.enable_grad():
            loss = self.loss_fn(self.model, batch).sum()
            loss.backward()
        return loss.detach()

    def on_predict_end(self) -> None:
        """Sum each parameter's gradient across processes and take it out of
        ``.grad``, on the device (before Lightning moves the model back)."""
        gradient = []
        for parameter in trainable_parameters(self.model):
            grad = parameter.grad if parameter.grad is not None else torch.zeros_like(parameter)
            gradient.append(self.trainer.strategy.reduce(grad, reduce_op="sum"))
            parameter.grad = None
        self._gradient = gradient


@contextlib.contextmanager
def twice_differentiable_attention() -> Iterator[None]:
    """Attention through PyTorch's math kernel, whose backward can itself be
    differentiated (the fused CPU and GPU kernels cannot)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        yield


def hessian_vector_product(
    model: torch.nn.Module,
    batches: Sequence[Any],
    loss_fn: LossFn | None = None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Callable[[Vector], Vector]:
    """v -> H v, for H the Hessian of the mean example loss over the batches.

    H = (1/N) sum_i hess L(z_i, theta) over the N examples of ``batches``,
    applied by double backpropagation, batch by batch: the Hessian is never
    formed. The model stays in the mode it is in (put it in eval mode for
    deterministic products).

    Args:
        model: Any ``torch.nn.Module``.
        batches: Collated batches; moved to the model's device as needed.
        loss_fn: Per-example losses, as for :class:`GradientExtractor`.
        reduce: Sums a tensor across processes (``lambda t:
            trainer.strategy.reduce(t, reduce_op="sum")``) when the batches
            are this process's share.
    """
    loss_fn = loss_fn or example_losses
    params = trainable_parameters(model)
    batches = list(batches)
    local_examples = sum(batch_size_of(b) for b in batches)

    def hvp(vector: Vector) -> Vector:
        product = [torch.zeros_like(p) for p in params]
        device = params[0].device
        n_examples = local_examples
        if reduce is not None:  # in every call, so that every process calls it alike
            n_examples = int(reduce(torch.tensor(float(n_examples), device=device)).item())
        for batch in batches:
            batch = move_data_to_device(batch, device)
            with torch.enable_grad(), twice_differentiable_attention():
                loss = loss_fn(model, batch).sum() / n_examples
                grads = torch.autograd.grad(loss, params, create_graph=True)
                inner = sum((g * v.to(g.dtype)).sum() for g, v in zip(grads, vector))
                if not inner.requires_grad:  # the loss is linear in every parameter
                    continue
                terms = torch.autograd.grad(inner, params, allow_unused=True)
            for total, term in zip(product, terms):
                if term is not None:
                    total.add_(term)
        if reduce is not None:
            product = [reduce(t) for t in product]
        return product

    return hvp


def minibatch_hessian_vector_products(
    model: torch.nn.Module,
    batches: Sequence[Any],
    loss_fn: LossFn | None = None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Callable[[Vector], Vector]:
    """v -> H_k v, where each call takes the next batch k (cycling): the
    stochastic Hessian estimates of LiSSA."""
    products = itertools.cycle(
        [hessian_vector_product(model, [b], loss_fn, reduce) for b in batches]
    )
    return lambda vector: next(products)(vector)
