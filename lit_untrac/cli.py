"""The ``lit-untrac`` command line.

``fit``, ``validate`` and ``test`` are LightningCLI's own subcommands over
:class:`~lit_untrac.modules.LanguageModel` and
:class:`~lit_untrac.data.MixtureDataModule`. The other commands each take a
YAML config of the same shape (``model``, ``data``, ``trainer``) plus the
sections they need.

Bad input is reported in one line, without a traceback, with exit status 2.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

LIGHTNING_COMMANDS = ("fit", "validate", "test")

USAGE = """usage: lit-untrac COMMAND [--config CONFIG.yaml] [options]

Commands:
  fit         train a language model on a mixture of datasets (LightningCLI)
  validate    evaluate a language model on the test datasets (LightningCLI)
  test        like validate (LightningCLI)
{extra}
Run 'lit-untrac COMMAND --help' for a command's options.
"""

#: Commands other than LightningCLI's: name -> (one-line help, "module:function").
#: Each function takes the argument list after the command name.
COMMANDS: dict[str, tuple[str, str]] = {
    "experiment": (
        "run every stage of an experiment and its report (the default experiment without --config)",
        "lit_untrac.experiment:experiment_command",
    ),
    "sweep": (
        "rerun UnTrac / UnTrac-Inv over settings and report one table (Table 4, Figure 3)",
        "lit_untrac.sweep:sweep_command",
    ),
    "report": (
        "rebuild an experiment's report from its results: lit-untrac report <folder>",
        "lit_untrac.experiment:report_command",
    ),
    "train": (
        "train theta_0 into <output_dir>/model (with TracIn checkpoints)",
        "lit_untrac.stages.model:train_command",
    ),
    "leave-out": (
        "the leave-dataset-out ground truth (Eq. 1) into <output_dir>/ground_truth",
        "lit_untrac.stages.leave_out:leave_out_command",
    ),
    "untrac": (
        "unlearn each training dataset from theta_0 and track the test losses (UnTrac)",
        "lit_untrac.stages.untrac:untrac_command",
    ),
    "untrac-inv": (
        "unlearn each test set from theta_0 and track the training losses (UnTrac-Inv)",
        "lit_untrac.stages.untrac:untrac_inv_command",
    ),
    "baselines": (
        "GradDot, GradCos, TracIn, HIF (LiSSA, Arnoldi) into <output_dir>/baselines",
        "lit_untrac.stages.baselines:baselines_command",
    ),
}


def lightning_cli(args: list[str], run: bool = True):
    """LightningCLI over the language-model module and the mixture datamodule."""
    import warnings

    from lightning.pytorch.cli import LightningCLI

    from lit_untrac.data import MixtureDataModule
    from lit_untrac.modules import LanguageModel

    warnings.filterwarnings(
        "ignore", message=".*args parameter is intended to run from within Python.*"
    )
    return LightningCLI(
        LanguageModel,
        MixtureDataModule,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": "lit-untrac"},
    )


def _usage() -> str:
    width = max([len(n) for n in COMMANDS] + [10])
    extra = "".join(f"  {name:<{width}}  {text}\n" for name, (text, _) in COMMANDS.items())
    return USAGE.format(extra=extra)


def _resolve(target: str) -> Callable[[list[str]], object]:
    import importlib

    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``lit-untrac`` console script."""
    from lit_untrac.errors import UserError

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        sys.exit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        if command in LIGHTNING_COMMANDS:
            lightning_cli([command, *rest])
        elif command in COMMANDS:
            _resolve(COMMANDS[command][1])(rest)
        else:
            known = ", ".join([*LIGHTNING_COMMANDS, *COMMANDS])
            print(
                f"lit-untrac: error: unknown command {command!r}; expected one of: {known}",
                file=sys.stderr,
            )
            sys.exit(2)
    except UserError as err:
        print(f"lit-untrac: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
