"""What every stage command shares: parsing the experiment config, building
a fresh Trainer and datamodule per job, and saving the resolved config."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lit_untrac.config import experiment_parser
from lit_untrac.errors import UserError

#: Trainer settings every stage job uses unless its config says otherwise.
STAGE_TRAINER_DEFAULTS: dict[str, Any] = {
    "logger": False,
    "enable_model_summary": False,
    "num_sanity_val_steps": 0,
    "limit_val_batches": 0,
}


@dataclass
class Context:
    """A parsed experiment config and the parser that can re-instantiate it."""

    parser: Any
    cfg: Any

    @property
    def output_dir(self) -> str:
        return self.cfg.output_dir

    def instantiate(self, cfg=None):
        """Instantiate the config's classes afresh (new loggers, new callbacks)."""
        cfg = self.cfg if cfg is None else cfg
        instantiate = getattr(self.parser, "instantiate", None) or self.parser.instantiate_classes
        return instantiate(cfg)

    def save_config(self, folder: str) -> None:
        """Write the resolved config to ``folder/config.yaml`` (atomically)."""
        from lit_untrac.results import atomic_write_text

        atomic_write_text(
            os.path.join(folder, "config.yaml"), self.parser.dump(self.cfg, skip_none=False)
        )


def parse(args: Sequence[str], prog: str, description: str | None = None, extra=None) -> Context:
    """Parse a command's arguments. ``extra(parser)`` may add command flags."""
    parser = experiment_parser(prog=prog, description=description)
    if extra is not None:
        extra(parser)
    cfg = parser.parse_args(list(args))
    return Context(parser, cfg)


def build_datamodule(ctx: Context, **overrides: Any):
    """A fresh :class:`~lit_untrac.data.MixtureDataModule` from ``data``, with overrides."""
    from lit_untrac.data import MixtureDataModule

    kwargs = dict(vars(ctx.instantiate().data))
    if kwargs.get("cache_dir") is None:  # every job of an experiment tokenises once
        kwargs["cache_dir"] = os.path.join(ctx.cfg.output_dir, "cache", "tokenised")
    kwargs.update(overrides)
    return MixtureDataModule(**kwargs)


def _is_wandb(logger_cfg: Any) -> bool:
    return str(getattr(logger_cfg, "class_path", "")).endswith("WandbLogger")


def _name_loggers(trainer_cfg, folder: str, run_name: str | None, group: str | None) -> None:
    """Give each W&B logger of a job its run name, group and folder."""
    loggers = trainer_cfg.logger if isinstance(trainer_cfg.logger, list) else [trainer_cfg.logger]
    for logger in loggers:
        if _is_wandb(logger):
            init = logger.init_args
            if run_name is not None:
                init.name = run_name
            if group is not None:
                init["group"] = group
            if getattr(init, "save_dir", None) in (None, "."):
                init.save_dir = folder
            if not getattr(init, "offline", False):
                reason = wandb_offline_reason()
                if reason is not None:
                    _warn_offline(reason, init.save_dir)
                    init.offline = True


def wandb_offline_reason() -> str | None:
    """Why W&B cannot log online here (None when it can): ``WANDB_MODE``, no
    account (no ``WANDB_API_KEY`` and no ``wandb login``), or no network to
    the W&B server. Checked once per process."""
    global _WANDB_REASON
    if _WANDB_REASON is _UNCHECKED:
        _WANDB_REASON = _check_wandb()
    return _WANDB_REASON


_UNCHECKED = object()
_WANDB_REASON: Any = _UNCHECKED
_WARNED: set[str] = set()


def _check_wandb() -> str | None:
    import netrc
    import socket
    from urllib.parse import urlparse

    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        return f"WANDB_MODE={mode}"
    server = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    if not os.environ.get("WANDB_API_KEY"):
        try:
            account = netrc.netrc().authenticators(server.hostname or "")
        except (OSError, netrc.NetrcParseError):
            account = None
        if not account:
            return "no W&B account here (no WANDB_API_KEY and no `wandb login`)"
    port = server.port or (443 if server.scheme == "https" else 80)
    try:
        socket.create_connection((server.hostname, port), timeout=3).close()
    except OSError as err:
        return f"no network to {server.hostname} ({err})"
    return None


def _warn_offline(reason: str, folder: str | None) -> None:
    import warnings

    if reason.startswith("WANDB_MODE") or reason in _WARNED:
        return
    _WARNED.add(reason)
    warnings.warn(
        f"W&B logs offline: {reason}. The runs go to {folder or '.'}/wandb; "
        "`wandb sync` uploads them later.",
        stacklevel=3,
    )


def build_trainer(
    ctx: Context,
    folder: str,
    callbacks: Sequence[Any] = (),
    run_name: str | None = None,
    group: str | None = None,
    logger_dir: str | None = None,
    **overrides: Any,
):
    """A fresh Trainer from the ``trainer`` section for one job.

    The job's folder is its ``default_root_dir``; loggers and callbacks of the
    config are instantiated anew; ``callbacks`` are added; ``overrides``
    replace config values. W&B loggers get ``run_name``, ``group`` and, unless
    the config sets one, ``logger_dir`` (by default the job's folder) as their
    ``save_dir``. Batches are sharded by the datamodule's own sampler, so
    Lightning's distributed sampler is turned off. A SIGTERM stops the job
    after the current step, keeping its resume checkpoint (:class:`StopOnSigterm`).
    """
    from lightning.pytorch import Trainer

    cfg = copy.deepcopy(ctx.cfg)
    _name_loggers(cfg.trainer, logger_dir or folder, run_name, group)
    kwargs = dict(vars(ctx.instantiate(cfg).trainer))
    for key, value in STAGE_TRAINER_DEFAULTS.items():
        if kwargs.get(key) == _trainer_default(key):  # not set by the config
            kwargs[key] = value
    kwargs.update(overrides)
    from lit_untrac.callbacks import StopOnSigterm

    kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + list(callbacks) + [StopOnSigterm()]
    kwargs["default_root_dir"] = folder
    kwargs["use_distributed_sampler"] = False
    os.makedirs(folder, exist_ok=True)
    try:
        return Trainer(**kwargs)
    except (ValueError, TypeError) as err:
        raise UserError(f"bad trainer settings: {err}") from err


def finish_loggers(trainer) -> None:
    """End the W&B runs of a job's trainer, so that the next job's
    ``WandbLogger`` starts its own run rather than reusing this one."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()


def _trainer_default(key: str) -> Any:
    import inspect

    from lightning.pytorch import Trainer

    return inspect.signature(Trainer.__init__).parameters[key].default


def is_global_zero() -> bool:
    """Whether this process collects, aggregates and reports. Lightning's
    ``ddp`` runs the whole command in every process: each takes part in
    every training, and only rank zero reads the jobs' files back and writes
    the stage's own."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def resumable(folder: str, every_n_steps: int | None) -> tuple[list[Any], str | None]:
    """Checkpointing for a job that can be killed and resumed.

    Returns a ModelCheckpoint that keeps ``<folder>/checkpoints/last.ckpt``
    every ``every_n_steps`` steps (none when it is unset), and that file when
    an earlier, unfinished run left it: pass it to ``fit`` as ``ckpt_path``.
    The module's weights, the optimizer, the loop and the callbacks' states
    (the InfluenceTracker's curves) continue from there, and the datamodule
    skips the batches already consumed.
    """
    if not every_n_steps:
        return [], None
    from lightning.pytorch.callbacks import ModelCheckpoint

    directory = os.path.join(folder, "checkpoints")
    last = os.path.join(directory, "last.ckpt")
    checkpoint = ModelCheckpoint(
        dirpath=directory,
        every_n_train_steps=every_n_steps,
        save_last=True,
        save_top_k=0,
        enable_version_counter=False,
    )
    return [checkpoint], last if os.path.isfile(last) else None


def discard_checkpoints(folder: str) -> None:
    """Remove a finished job's resume checkpoints (they can be large)."""
    import shutil

    shutil.rmtree(os.path.join(folder, "checkpoints"), ignore_errors=True)
