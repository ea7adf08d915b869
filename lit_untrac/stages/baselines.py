"""``lit-untrac baselines``: the gradient baselines at dataset level.

Each method writes ``<output_dir>/baselines/<method>/influence.csv`` (with
its ``config.yaml`` and a ``done.json`` holding its wall time); a finished
method is not run again. ``--methods graddot,gradcos`` overrides
``baselines.methods``. Every score is positive when removing the training
dataset would raise the test loss, like the ground truth:

* ``graddot``: <g(Z), g(Z')> at theta_0;
* ``gradcos``: <g(Z)/||g(Z)||, g(Z')> (``baselines.gradcos_normalize``);
* ``tracin``: sum_t lr_t <g_t(Z), g_t(Z')> over theta_0's TracIn checkpoints;
* ``hif_lissa``, ``hif_arnoldi``: <g(Z'), H^-1 g(Z)/||g(Z)||>, H the Hessian
  of the mean example loss over ``baselines.hessian_examples`` examples.

g(D) is the sum over D's examples of the gradient of each example's mean
token loss; training datasets use their attribution sample
(``data.attribution_samples``), test datasets every example, each subset on
its own (``dataset/subset``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch

from lit_untrac.attribution import resolve_methods
from lit_untrac.attribution.gradients import Scores, Vector
from lit_untrac.errors import UserError, choose
from lit_untrac.stages.common import Context, build_trainer, parse

FOLDER = "baselines"


class GradientJob:
    """theta_0, the batches and the Trainer that every baseline draws its
    gradients and Hessian-vector products from.

    Args:
        model: theta_0 (its weights are restored after TracIn).
        trainer: A Trainer with ``inference_mode=False``.
        train: Collated batches of each training dataset.
        test: Collated batches of each test set (or subset).
        hessian_rows: The examples the Hessian is estimated on, in a
            random order.
        collator: Collates ``hessian_rows`` into batches.
        seed: Seeds the Arnoldi start vector.
        share: Keep theta_0's gradients once computed (:meth:`theta0_gradients`),
            for the next method.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        trainer: Any,
        train: dict[str, list],
        test: dict[str, list],
        hessian_rows: Sequence[dict],
        collator: Callable,
        seed: int = 0,
        share: bool = True,
    ) -> None:
        from lit_untrac.modules.gradients import GradientExtractor

        self.model, self.trainer = model, trainer
        self.train, self.test = train, test
        self.hessian_rows, self.collator, self.seed = list(hessian_rows), collator, seed
        self.extractor = GradientExtractor(model)
        self.share = share
        self._theta0: tuple[dict[str, Vector], list[tuple[str, Vector]]] | None = None

    @property
    def device(self) -> torch.device:
        return self.trainer.strategy.root_device

    def gradient(self, batches: list) -> Vector:
        return self.extractor.dataset_gradient(self.trainer, batches)

    def test_gradients(self) -> dict[str, Vector]:
        """Every test gradient, held together (there are few)."""
        return {name: self.gradient(batches) for name, batches in self.test.items()}

    def train_gradients(self) -> Iterator[tuple[str, Vector]]:
        """The training gradients, one at a time."""
        for name, batches in self.train.items():
            yield name, self.gradient(batches)

    def theta0_gradients(self) -> tuple[dict[str, Vector], Iterable[tuple[str, Vector]]]:
        """The test and training gradients at theta_0: with ``share``,
        computed by the first method that asks and handed to the next ones;
        otherwise computed afresh, the training ones streamed."""
        if not self.share:
            return self.test_gradients(), self.train_gradients()
        if self._theta0 is None:
            self._theta0 = (self.test_gradients(), list(self.train_gradients()))
        return self._theta0

    def hessian_batches(self, batch_size: int) -> list[dict]:
        """This process's share of every Hessian mini-batch, collated.

        Each global mini-batch is split across the processes (rather than
        the mini-batches dealt out), so that LiSSA's k-th stochastic Hessian
        is the same mini-batch whatever the number of processes.
        """
        rank, world_size = self.trainer.global_rank, self.trainer.world_size
        rows = self.hessian_rows
        if min(batch_size, len(rows)) < world_size:
            raise UserError(
                f"Hessian mini-batches of {min(batch_size, len(rows))} examples cannot be shared by "
                f"{world_size} processes; use a batch size (and hessian_examples) of at least {world_size}"
            )
        return [
            self.collator(rows[i : i + batch_size][rank::world_size])
            for i in range(0, len(rows), batch_size)
        ]

    def on_device(self, hvp: Callable[[Vector], Vector]) -> Callable[[Vector], Vector]:
        """``hvp`` with theta_0 on the device and in eval mode (Lightning's
        predict hands the model back on the CPU)."""

        def product(vector: Vector) -> Vector:
            self.model.to(self.device).eval()
            return hvp(vector)

        return product

    def reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.trainer.strategy.reduce(tensor, reduce_op="sum")

    def random_vector(self) -> Vector:
        generator = torch.Generator().manual_seed(self.seed)
        return [
            torch.randn(p.shape, generator=generator, dtype=p.dtype).to(self.device)
            for p in self.model.parameters()
            if p.requires_grad
        ]


# ---- the methods ----------------------------------------------------------


def run_graddot(job: GradientJob, settings: Any) -> Scores:
    from lit_untrac.attribution.graddot import graddot_scores

    return graddot_scores(*job.theta0_gradients())


def run_gradcos(job: GradientJob, settings: Any) -> Scores:
    from lit_untrac.attribution.graddot import gradcos_scores

    return gradcos_scores(*job.theta0_gradients(), normalize=settings.gradcos_normalize)


def run_tracin(job: GradientJob, settings: Any) -> Scores:
    from lit_untrac.attribution.tracin import (
        load_tracin_weights,
        read_tracin_checkpoints,
        tracin_scores,
    )

    checkpoints = read_tracin_checkpoints(settings.tracin_dir)
    theta0 = {key: value.detach().clone() for key, value in job.model.state_dict().items()}

    def gradients_at(checkpoint):
        load_tracin_weights(job.model, checkpoint)
        return job.test_gradients(), job.train_gradients()

    try:
        return tracin_scores(checkpoints, gradients_at)
    finally:
        job.model.load_state_dict(theta0)


def run_hif_lissa(job: GradientJob, settings: Any) -> Scores:
    from lit_untrac.attribution.hif import hif_scores, lissa
    from lit_untrac.modules.gradients import minibatch_hessian_vector_products

    options = settings.lissa
    batches = job.hessian_batches(options.batch_size or settings.batch_size)
    hvp = job.on_device(minibatch_hessian_vector_products(job.model, batches, reduce=job.reduce))
    return hif_scores(
        *job.theta0_gradients(),
        lambda v: lissa(hvp, v, options.depth, options.damping, options.scale, options.repeats),
    )


def run_hif_arnoldi(job: GradientJob, settings: Any) -> Scores:
    from lit_untrac.attribution.hif import arnoldi_eigenbasis, hif_arnoldi_scores
    from lit_untrac.modules.gradients import hessian_vector_product

    options = settings.arnoldi
    batches = job.hessian_batches(settings.batch_size)
    hvp = job.on_device(hessian_vector_product(job.model, batches, reduce=job.reduce))
    eigenbasis = arnoldi_eigenbasis(hvp, job.random_vector(), options.iterations, options.top_k)
    return hif_arnoldi_scores(*job.theta0_gradients(), eigenbasis)


#: The methods that use theta_0's gradients (:meth:`GradientJob.theta0_gradients`).
THETA0_METHODS = {"graddot", "gradcos", "hif_lissa", "hif_arnoldi"}

RUNNERS: dict[str, Callable[[GradientJob, Any], Scores]] = {
    "graddot": run_graddot,
    "gradcos": run_gradcos,
    "tracin": run_tracin,
    "hif_lissa": run_hif_lissa,
    "hif_arnoldi": run_hif_arnoldi,
}


# ---- the stage ---------------------------------------------------------------


def check_settings(settings: Any, methods: Sequence[str]) -> None:
    """Every setting the chosen methods use, checked before anything runs."""
    from lit_untrac.attribution.graddot import NORMALIZATIONS
    from lit_untrac.attribution.hif import check_arnoldi_settings
    from lit_untrac.attribution.tracin import read_tracin_checkpoints

    if settings.batch_size < 1:
        raise UserError(f"baselines.batch_size={settings.batch_size} must be >= 1")
    if "gradcos" in methods:
        choose("baselines.gradcos_normalize", settings.gradcos_normalize, NORMALIZATIONS)
    if "tracin" in methods:
        read_tracin_checkpoints(settings.tracin_dir)
    if {"hif_lissa", "hif_arnoldi"} & set(methods) and settings.hessian_examples < 1:
        raise UserError(f"baselines.hessian_examples={settings.hessian_examples} must be >= 1")
    if "hif_lissa" in methods:
        lissa = settings.lissa
        if lissa.depth < 1 or lissa.repeats < 1 or (lissa.batch_size or 1) < 1:
            raise UserError(
                f"baselines.lissa needs depth, repeats and batch_size >= 1, got {lissa.depth}, "
                f"{lissa.repeats} and {lissa.batch_size}"
            )
        if not lissa.scale > 0 or not 0 <= lissa.damping < 1:
            raise UserError(
                f"baselines.lissa needs scale > 0 and damping in [0, 1), got scale={lissa.scale} "
                f"and damping={lissa.damping}"
            )
    if "hif_arnoldi" in methods:
        check_arnoldi_settings(settings.arnoldi.iterations, settings.arnoldi.top_k)


def hessian_rows(datamodule: Any, n: int, seed: int) -> list[dict]:
    """A seeded sample of ``n`` examples of the whole training mixture, in a random order."""
    rows = [row for name in datamodule.train_names for row in datamodule.examples(name).rows]
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))
    return [rows[i] for i in order[:n].tolist()]


def run_baselines(
    ctx: Context, methods: str | Sequence[str] | None = None, folder: str | None = None
) -> dict[str, str]:
    """Run the baselines not yet done, each in ``<folder>/<method>`` (by default
    ``<output_dir>/baselines``); returns ``{method: influence.csv path}``."""
    from lit_untrac.config import require_theta0
    from lit_untrac.models import max_positions
    from lit_untrac.modules import build_model
    from lit_untrac.modules.losses import EvalSet
    from lit_untrac.results import INFLUENCE_COLUMNS, influence_rows, is_done, mark_done, write_csv
    from lit_untrac.stages.common import build_datamodule
    from lit_untrac.stages.model import tracin_folder

    cfg = ctx.cfg
    methods = resolve_methods(methods or cfg.baselines.methods)
    cfg.baselines.methods = methods
    cfg.baselines.tracin_dir = tracin_folder(ctx)
    settings = cfg.baselines
    folder = folder or os.path.join(ctx.output_dir, FOLDER)
    paths = {m: os.path.join(folder, m, "influence.csv") for m in methods}
    todo = [m for m in methods if not is_done(os.path.dirname(paths[m]))]
    for method in methods:
        if method not in todo:
            print(f"{method}: already done")
    if not todo:
        return paths
    check_settings(settings, todo)
    theta0_path = require_theta0(cfg)

    model, tokenizer = build_model(theta0_path)
    model.eval()
    datamodule = build_datamodule(ctx).prepare(
        tokenizer,
        encoder_decoder=bool(getattr(model.config, "is_encoder_decoder", False)),
        max_positions=max_positions(model),
    )
    test_sets = datamodule.eval_sets("test")
    if not test_sets:
        raise UserError("the baselines need test datasets: data.test is empty")

    def batches(name: str, examples) -> list:
        return EvalSet.build(name, examples, datamodule.collator, settings.batch_size).batches

    trainer = build_trainer(
        ctx,
        folder,
        logger=False,
        inference_mode=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    job = GradientJob(
        model,
        trainer,
        train={n: batches(n, datamodule.attribution_examples(n)) for n in datamodule.train_names},
        test={name: batches(name, examples) for name, examples in test_sets.items()},
        hessian_rows=hessian_rows(datamodule, settings.hessian_examples, cfg.seed_everything),
        collator=datamodule.collator,
        seed=cfg.seed_everything,
        # held only when more than one method will use them
        share=settings.share_gradients and len(set(todo) & THETA0_METHODS) > 1,
    )
    for method in todo:
        start = time.perf_counter()
        scores = RUNNERS[method](job, settings)
        seconds = time.perf_counter() - start
        if trainer.is_global_zero:
            method_folder = os.path.dirname(paths[method])
            write_csv(paths[method], influence_rows(method, scores), INFLUENCE_COLUMNS)
            ctx.save_config(method_folder)
            mark_done(method_folder, seconds=round(seconds, 3))
        print(f"{method}: {seconds:.1f} s, {paths[method]}")
    return paths


def _add_methods_flag(parser: Any) -> None:
    parser.add_argument(
        "--methods",
        type=str | None,
        default=None,
        help="Comma-separated methods to run, overriding baselines.methods "
        "(graddot,gradcos,tracin,hif_lissa,hif_arnoldi).",
    )


def baselines_command(args: Sequence[str]) -> None:
    """Entry point of ``lit-untrac baselines``."""
    ctx = parse(
        args,
        prog="lit-untrac baselines",
        description=__doc__.splitlines()[0],
        extra=_add_methods_flag,
    )
    from lit_untrac.results import read_csv

    methods = ctx.cfg.pop("methods", None)
    for path in run_baselines(ctx, methods).values():
        print(f"{path}:\n{read_csv(path).to_string(index=False)}")
