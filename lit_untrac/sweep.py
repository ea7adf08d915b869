"""Sensitivity sweeps: how UnTrac and UnTrac-Inv depend on their settings
(the paper's Table 4: optimizers and learning rates; Figure 3: unlearning
epochs and batch sizes).

``lit-untrac sweep --config <sweep.yaml>`` takes a base experiment, trains
its theta_0 and ground truth once (or reuses them), then reruns UnTrac
and/or UnTrac-Inv for every setting of the sweep and writes one table: the
correlation of each setting with the ground truth. A sweep config::

    base: ../experiments/tiny_synthetic_a.yaml   # relative to the sweep file
    name: optimizers
    methods: [untrac]
    variants:                                    # each a name and overrides
      - {name: sgd, set: {untrac.optimizer: SGD}}
      - {name: adam, set: {untrac.optimizer: Adam}}
    grid:                                        # crossed with every variant
      untrac.optimizer_args.lr: [5.0e-6, 5.0e-5, 5.0e-4]

Settings are dotted paths into the experiment config; a path into a dict
(``untrac.optimizer_args.lr``) sets that entry. Results go to
``<base output_dir>/sweeps/<name>/``: one folder per setting, ``sweep.csv``
(``setting,method,test_dataset,run,pearson,spearman``), ``sweep.md`` and
``correlation_by_step.png``.
"""

from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lit_untrac.errors import UserError

SWEEP_COLUMNS = ("setting", "method", "test_dataset", "run", "pearson", "spearman")
SWEEPABLE = ("untrac", "untrac_inv")


@dataclass
class Variant:
    """One named setting: overrides of the base experiment."""

    name: str
    set: dict[str, Any] = field(default_factory=dict)


def _format_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def settings(variants: Sequence[Variant], grid: dict[str, list[Any]]) -> list[Variant]:
    """Every variant crossed with every point of the grid."""
    variants = list(variants) or [Variant("base")]
    keys = list(grid)
    points = list(itertools.product(*(grid[k] for k in keys))) if keys else [()]
    combined = []
    for variant, point in itertools.product(variants, points):
        overrides = {**variant.set, **dict(zip(keys, point))}
        suffix = "_".join(f"{k.rsplit('.', 1)[-1]}={_format_value(v)}" for k, v in zip(keys, point))
        combined.append(Variant(f"{variant.name}_{suffix}" if suffix else variant.name, overrides))
    names = [v.name for v in combined]
    if len(set(names)) != len(names):
        raise UserError(f"sweep settings need distinct names, got {names}")
    return combined


def set_path(cfg: Any, path: str, value: Any) -> None:
    """Set a dotted path of the experiment config; dict entries included."""
    value = copy.deepcopy(value)  # settings share their values; configs must not
    parts = path.split(".")
    node = cfg
    for i, part in enumerate(parts[:-1]):
        node = node.get(part) if isinstance(node, dict) else getattr(node, part, None)
        if node is None:
            raise UserError(
                f"sweep setting {path!r}: the config has no {'.'.join(parts[: i + 1])!r}"
            )
    if isinstance(node, dict):
        node[parts[-1]] = value
    elif hasattr(node, parts[-1]):
        setattr(node, parts[-1], value)
    else:
        raise UserError(f"sweep setting {path!r}: the config has no {path!r}")


def sweep_parser():
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(
        prog="lit-untrac sweep", description="Rerun UnTrac with other settings."
    )
    parser.add_argument("--config", action=ActionConfigFile, help="A sweep YAML config.")
    parser.add_argument("--base", type=str, required=True, help="The base experiment's config.")
    parser.add_argument("--name", type=str, required=True, help="The sweep's name (its folder).")
    parser.add_argument(
        "--methods", type=list[str], default=["untrac"], help=f"Any of {list(SWEEPABLE)}."
    )
    parser.add_argument("--variants", type=list[Variant], default=[], help="Named overrides.")
    parser.add_argument(
        "--grid", type=dict[str, list[Any]], default={}, help="Values crossed with the variants."
    )
    parser.add_argument(
        "--output_dir", type=str | None, default=None, help="Default: <base>/sweeps/<name>."
    )
    return parser


def _base_path(config_path: str | None, base: str) -> str:
    if os.path.isabs(base) or config_path is None:
        return base
    return os.path.join(os.path.dirname(os.path.abspath(config_path)), base)


def run_sweep(sweep_cfg, config_path: str | None = None, show_progress: bool = True) -> str:
    """Run every setting of a sweep; returns the path of ``sweep.md``."""
    import pandas as pd

    from lit_untrac.evaluation.correlations import correlation_by_step, correlations
    from lit_untrac.experiment import Progress, run_experiment
    from lit_untrac.results import read_csv, write_csv
    from lit_untrac.stages.common import Context, parse
    from lit_untrac.stages.untrac import UNTRAC, UNTRAC_INV, unlearn_each

    unknown = [m for m in sweep_cfg.methods if m not in SWEEPABLE]
    if unknown:
        raise UserError(f"unknown sweep method(s) {unknown}; a sweep reruns {list(SWEEPABLE)}")
    base = parse(["--config", _base_path(config_path, sweep_cfg.base)], prog="lit-untrac sweep")
    variants = settings(sweep_cfg.variants, sweep_cfg.grid)
    prepared = []
    for variant in variants:  # every override is checked before anything runs
        cfg = copy.deepcopy(base.cfg)
        for path, value in variant.set.items():
            set_path(cfg, path, value)
        prepared.append((variant, cfg))
    folder = sweep_cfg.output_dir or os.path.join(base.cfg.output_dir, "sweeps", sweep_cfg.name)
    progress = Progress(show_progress)
    progress.stage(f"sweep {sweep_cfg.name}: theta_0 and the ground truth of {base.cfg.name}")
    reference = Context(base.parser, copy.deepcopy(base.cfg))
    reference.cfg.stages = ["model", "ground_truth"]
    run_experiment(reference, show_progress=show_progress)
    truth = read_csv(os.path.join(base.cfg.output_dir, "ground_truth", "influence.csv"))
    theta0 = base.cfg.pretrained or os.path.join(base.cfg.output_dir, "model", "export")
    methods = {"untrac": UNTRAC, "untrac_inv": UNTRAC_INV}
    tables, curves = [], []
    for index, (variant, cfg) in enumerate(prepared, 1):
        cfg.pretrained = theta0
        cfg.targets = None
        ctx = Context(base.parser, cfg)
        for name in sweep_cfg.methods:
            stage = os.path.join(folder, variant.name, name)
            progress.stage(f"[{index}/{len(prepared)}] {variant.name}: {name}")
            try:
                unlearn_each(ctx, methods[name], stage=stage)
            except UserError as error:  # a diverging setting is a result, not the end of the sweep
                progress.console.print(f"    [red]{error}[/red]")
                continue
            influence = read_csv(os.path.join(stage, "influence.csv"))
            table = correlations(pd.concat([truth, influence], ignore_index=True))
            tables.append(table.assign(setting=variant.name))
            by_step = correlation_by_step(read_csv(os.path.join(stage, "curves.csv")), truth)
            curves.append(by_step.assign(setting=variant.name))
    if not tables:
        raise UserError(f"sweep {sweep_cfg.name!r}: no setting finished")
    table = pd.concat(tables, ignore_index=True)[list(SWEEP_COLUMNS)]
    write_csv(os.path.join(folder, "sweep.csv"), table.to_dict("records"), SWEEP_COLUMNS)
    _plot(pd.concat(curves, ignore_index=True), os.path.join(folder, "correlation_by_step.png"))
    path = os.path.join(folder, "sweep.md")
    _write_markdown(table, path, sweep_cfg.name, [v.name for v in variants])
    progress.stage(f"sweep table: {path}")
    return path


def _write_markdown(table, path: str, name: str, order: list[str]) -> None:
    from lit_untrac.evaluation.plots import label
    from lit_untrac.results import atomic_write_text

    datasets = sorted(table["test_dataset"].unique())
    header = ["setting", "method"] + [f"{d} {s}" for d in datasets for s in ("Pearson", "Spearman")]
    lines = [
        f"# Sweep: {name}",
        "",
        "Correlation with the ground truth per setting.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for setting in order:
        for method in sorted(table[table["setting"] == setting]["method"].unique()):
            rows = table[(table["setting"] == setting) & (table["method"] == method)]
            cells = [setting, label(method)]
            for dataset in datasets:
                match = rows[rows["test_dataset"] == dataset]
                for statistic in ("pearson", "spearman"):
                    cells.append(f"{match[statistic].mean():.2f}" if not match.empty else "n/a")
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "![Correlation against unlearning step](correlation_by_step.png)", ""]
    atomic_write_text(path, "\n".join(lines))


def _plot(by_step, path: str) -> None:
    from lit_untrac.evaluation.plots import _pyplot, label

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for (setting, method), rows in by_step.groupby(["setting", "method"]):
        mean = rows.groupby("step")["pearson"].mean()
        ax.plot(mean.index, mean.values, label=f"{setting} ({label(method)})")
    ax.axhline(0.0, color="black", linewidth=0.5)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("unlearning step")
    ax.set_ylabel("Pearson with ground truth")
    ax.legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sweep_command(args: Sequence[str]) -> str:
    """Entry point of ``lit-untrac sweep``."""
    parser = sweep_parser()
    cfg = parser.parse_args(list(args))
    config_path = None
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            config_path = args[i + 1]
        elif arg.startswith("--config="):
            config_path = arg.split("=", 1)[1]
    cfg = (
        parser.instantiate(cfg)
        if hasattr(parser, "instantiate")
        else parser.instantiate_classes(cfg)
    )
    return run_sweep(cfg, config_path)
