"""The experiment config: one YAML shape for every lit-untrac command.

``model``, ``data`` and ``trainer`` are the sections LightningCLI's ``fit``
reads (the language-model module, the mixture datamodule, the Trainer), so a
``fit`` config's sections can be copied into an experiment config as they
are. The other sections configure the stages: ``untrac``, ``untrac_inv``,
``ground_truth``, ``baselines``. Each command reads the sections it needs
and ignores the rest, so one experiment config drives every command.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

from lit_untrac.errors import UserError


@dataclass
class UnlearnConfig:
    """How to unlearn: UnTrac unlearns each training dataset, UnTrac-Inv each test dataset.

    Attributes:
        optimizer: A ``torch.optim`` class name or dotted path (the paper:
            Adam; its scripts: Adafactor).
        optimizer_args: The optimizer's arguments (the paper: lr 5e-5,
            betas 0.9 and 0.999).
        scheduler: ``constant`` (the paper), ``linear`` or ``cosine``.
        batch_size: Examples per unlearning step (UnTrac 1, UnTrac-Inv 256).
        epochs: Passes over the unlearned dataset (UnTrac 1, UnTrac-Inv 5).
        every_n_steps: Evaluate every n steps (and always at the last).
        reduction: ``sum`` over examples (the paper's Eq. 2 and 4) or ``mean``.
        eval_batch_size: Examples per evaluation batch.
        eval_max_tokens: Padded tokens per evaluation batch, at most.
        checkpoint_every_n_steps: Keep a resume checkpoint every n steps, so
            that a run killed part-way continues its curves when rerun
            (none: no checkpoints); removed once the run finishes.
    """

    optimizer: str = "Adam"
    optimizer_args: dict[str, Any] = field(
        default_factory=lambda: {"lr": 5.0e-5, "betas": [0.9, 0.999]}
    )
    scheduler: Literal["constant", "linear", "cosine"] = "constant"
    batch_size: int = 1
    epochs: int = 1
    every_n_steps: int = 1
    reduction: Literal["sum", "mean"] = "sum"
    eval_batch_size: int = 64
    eval_max_tokens: int | None = None
    checkpoint_every_n_steps: int | None = 100


@dataclass
class GroundTruthConfig:
    """Leave-dataset-out retraining (the paper's Eq. 1):
    I_truth(Z', Z) = sum_j L(z'_j, theta_-Z) - L(z'_j, theta_0).

    Attributes:
        variant: ``paper``: the same number of steps T as theta_0 on the
            mixture without the dataset; ``classic``: the same epochs over
            all of D without Z, so the step count follows the data:
            ceil(|D without Z| * T / |D|) (Appendix A.1).
        seeds: Retrain theta_0 and every leave-out model this many times with
            different seeds; the ground truth is the mean over seeds.
        vary_init: Whether a seed also changes the initialisation (besides
            the data order and dropout).
        reduction: ``sum`` over test examples (Eq. 1) or ``mean``.
        eval_batch_size: Examples per evaluation batch.
        checkpoint_every_n_steps: Keep a resume checkpoint every n steps of
            theta_0's training and of each retraining, so that one killed
            part-way continues when rerun (none: no checkpoints); removed
            once it finishes.
    """

    variant: Literal["paper", "classic"] = "paper"
    seeds: int = 1
    vary_init: bool = True
    reduction: Literal["sum", "mean"] = "sum"
    eval_batch_size: int = 64
    checkpoint_every_n_steps: int | None = 100


@dataclass
class LissaConfig:
    """LiSSA, the stochastic Neumann series for H^-1 v.

    The recursion h_{t+1} = v + (1 - damping) h_t - H_t h_t / scale
    (Koh & Liang; dattri) converges to (H + damping * scale * I)^-1 v when
    every Hessian eigenvalue lies in (-damping * scale, (2 - damping) * scale).

    Attributes:
        depth: Iterations (the paper: 10).
        damping: Damping, in [0, 1).
        scale: Scale; must exceed half the largest Hessian eigenvalue, or
            the series diverges (reported as an error).
        repeats: Independent runs averaged.
        batch_size: Hessian examples per iteration (a mini-batch Hessian
            H_t); by default ``baselines.batch_size``.
    """

    depth: int = 10
    damping: float = 0.01
    scale: float = 10.0
    repeats: int = 1
    batch_size: int | None = None


@dataclass
class ArnoldiConfig:
    """Arnoldi (Schioppa et al.): ``iterations`` Hessian-vector products
    build a Krylov basis; the ``top_k`` eigenpairs of largest magnitude of
    the projected Hessian give H^-1 (the paper: n=25, p=25 for finetuning,
    n=200, p=100 for pretraining). Keeps iterations + 1 gradient-sized
    vectors in memory.

    Attributes:
        iterations: n, Hessian-vector products.
        top_k: p <= n, eigenpairs kept.
    """

    iterations: int = 25
    top_k: int = 25


@dataclass
class BaselinesConfig:
    """Gradient-based baselines at dataset level. Every score is positive
    when removing the training dataset would raise the test loss (the
    direction of the ground truth).

    Attributes:
        methods: Any of ``graddot``, ``gradcos``, ``tracin``, ``hif_lissa``,
            ``hif_arnoldi``.
        batch_size: Examples per gradient and Hessian-vector-product pass.
        gradcos_normalize: ``train``: divide the summed training gradient by
            its norm (the paper's reference code); ``both``: also the test
            gradient (the plain cosine; the same ranking per test set).
        tracin_every_n_steps: Save TracIn checkpoints (weights and learning
            rate) every n steps while theta_0 trains (the paper: 128 for
            finetuning, 10,000 for pretraining).
        tracin_dir: Where the TracIn checkpoints are; by default
            ``<output_dir>/model/tracin``.
        hessian_examples: Training examples (sampled from the whole
            mixture) the Hessian is estimated on (the paper: 256).
        lissa: LiSSA settings.
        arnoldi: Arnoldi settings.
        share_gradients: Compute theta_0's dataset gradients once and share
            them between GradDot, GradCos and the HIF methods when more than
            one of them runs (it holds one gradient-sized vector per training
            and test dataset); ``false`` recomputes them for each method,
            holding one training gradient at a time.
    """

    methods: list[str] = field(
        default_factory=lambda: ["graddot", "gradcos", "tracin", "hif_lissa", "hif_arnoldi"]
    )
    batch_size: int = 8
    gradcos_normalize: Literal["train", "both"] = "train"
    tracin_every_n_steps: int = 128
    tracin_dir: str | None = None
    hessian_examples: int = 256
    lissa: LissaConfig = field(default_factory=LissaConfig)
    arnoldi: ArnoldiConfig = field(default_factory=ArnoldiConfig)
    share_gradients: bool = True


@dataclass
class RayConfig:
    """Where and how ``launcher: ray`` runs the per-dataset jobs.

    Attributes:
        address: An existing Ray cluster (``ray://host:10001`` or ``auto``);
            by default a local Ray instance is started.
        num_cpus: CPUs of the local instance (default: all of this machine).
        cpus_per_job: CPUs each job asks for.
        gpus_per_job: GPUs each job asks for.
    """

    address: str | None = None
    num_cpus: int | None = None
    cpus_per_job: float = 1.0
    gpus_per_job: float = 0.0


STAGES = ("model", "ground_truth", "untrac", "untrac_inv", "baselines", "report")


def experiment_parser(prog: str = "lit-untrac", description: str | None = None):
    """The parser of the experiment config, shared by every non-LightningCLI command."""
    from jsonargparse import ActionConfigFile, ArgumentParser
    from lightning.pytorch import Trainer

    from lit_untrac.data import MixtureDataModule
    from lit_untrac.modules import LanguageModel

    parser = ArgumentParser(
        prog=prog, description=description, env_prefix="LIT_UNTRAC", default_env=False
    )
    parser.add_argument("--config", action=ActionConfigFile, help="An experiment YAML config.")
    parser.add_argument(
        "--name", type=str, default="experiment", help="The experiment's name (W&B group)."
    )
    parser.add_argument(
        "--output_dir", type=str, default="runs/experiment", help="The experiment folder."
    )
    parser.add_argument(
        "--seed_everything", type=int, default=0, help="The seed of theta_0 and every stage."
    )
    parser.add_argument(
        "--pretrained",
        type=str | None,
        default=None,
        help="theta_0, if given rather than trained: a save_pretrained folder, hub id, packaged model or .ckpt.",
    )
    parser.add_argument(
        "--targets",
        type=str,
        nargs="+",
        default=None,
        help="Only these datasets (training datasets for untrac and leave-out, test datasets for untrac-inv).",
    )
    parser.add_class_arguments(LanguageModel, "model", instantiate=False)
    parser.add_class_arguments(MixtureDataModule, "data", instantiate=False)
    parser.add_class_arguments(Trainer, "trainer", instantiate=False)
    parser.add_class_arguments(UnlearnConfig, "untrac")
    parser.add_class_arguments(
        UnlearnConfig, "untrac_inv", default={"batch_size": 256, "epochs": 5}
    )
    parser.add_class_arguments(GroundTruthConfig, "ground_truth")
    parser.add_argument(
        "--runs",
        type=int,
        default=1,
        help="Repeat the attribution stages with different sampled examples (data.sample_seed = run).",
    )
    parser.add_argument(
        "--stages",
        type=list[str],
        default=list(STAGES),
        help=f"The stages the experiment runs, of {list(STAGES)}.",
    )
    parser.add_argument(
        "--launcher",
        type=Literal["local", "ray"],
        default="local",
        help="Run the per-dataset jobs one after another (local) or on a Ray cluster (ray).",
    )
    parser.add_class_arguments(RayConfig, "ray")
    parser.add_class_arguments(BaselinesConfig, "baselines")
    return parser


def theta0_path(cfg) -> str:
    """Where theta_0 is: ``pretrained``, or the experiment's ``model/export``."""
    return cfg.pretrained or os.path.join(cfg.output_dir, "model", "export")


def require_theta0(cfg) -> str:
    path = theta0_path(cfg)
    if cfg.pretrained is None and not os.path.isdir(path):
        raise UserError(
            f"theta_0 not found at {path!r}: train it first (lit-untrac experiment, or "
            "lit-untrac fit with export_dir there) or set pretrained"
        )
    return path
