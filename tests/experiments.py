"""Tiny experiment configs for the stage commands' tests."""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl
import torch
import yaml

from tests.conftest import TINY_GPT2, synthetic_specs


def write_experiment(folder: str, n: int = 8, train_steps: int | None = 6, **sections: Any) -> str:
    """An experiment YAML in ``folder``: the tiny GPT-2 on synthetic A with
    ``n`` examples per dataset, batch 4; ``sections`` update the top level."""
    config: dict[str, Any] = {
        "name": "tiny",
        "output_dir": os.path.join(folder, "experiment"),
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False},
        "model": {
            "model": {"config": dict(TINY_GPT2["config"]), "tokenizer": "bytes"},
            "optimizer": "AdamW",
            "optimizer_args": {"lr": 3e-3},
        },
        "data": {
            **synthetic_specs(n=n),
            "batch_size": 4,
            "train_steps": train_steps,
            "eval_batch_size": 16,
        },
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path = os.path.join(folder, "experiment.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump(config, handle)
    return path


class DataRecorder(pl.Callback):
    """Records, per training run (its root folder), the token sequences of
    every training batch, the step count, and sum_j L(z'_j) of the final
    model on given test examples, computed one example at a time with
    transformers' own loss."""

    def __init__(self, test_examples: list[dict] | None = None) -> None:
        self.test_examples = test_examples or []
        self.seen: dict[str, list[tuple[int, ...]]] = {}
        self.steps: dict[str, int] = {}
        self.test_loss: dict[str, float] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        runs = self.seen.setdefault(trainer.default_root_dir, [])
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
            runs.append(tuple(ids[mask.bool()].tolist()))

    def on_train_end(self, trainer, pl_module) -> None:
        self.steps[trainer.default_root_dir] = trainer.global_step
        model = pl_module.model
        model.eval()
        total = 0.0
        with torch.no_grad():
            for example in self.test_examples:
                ids = torch.as_tensor(example["input_ids"]).view(1, -1).to(pl_module.device)
                labels = torch.as_tensor(example["labels"]).view(1, -1).to(pl_module.device)
                total += float(model(input_ids=ids, labels=labels).loss)
        model.train()
        self.test_loss[trainer.default_root_dir] = total


def quiet_trainer(**kwargs: Any) -> pl.Trainer:
    """A one-CPU Trainer without logger, progress bar, summary or checkpoints."""
    settings = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
    }
    return pl.Trainer(**{**settings, **kwargs})


def predict_trainer() -> pl.Trainer:
    """A Trainer for gradient extraction."""
    return quiet_trainer(inference_mode=False)


def sequences(examples) -> set[tuple[int, ...]]:
    return {tuple(torch.as_tensor(e["input_ids"]).tolist()) for e in examples}


class KillAfter(pl.Callback):
    """Kills its own process (SIGKILL: no cleanup, as a crash or a preempted
    job) once training reaches ``step`` optimizer steps."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            import signal

            os.kill(os.getpid(), signal.SIGKILL)


class TermAt(pl.Callback):
    """Sends its own process SIGTERM (as ``kill`` or a scheduler's
    preemption) when optimizer step ``step`` starts."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            import signal

            os.kill(os.getpid(), signal.SIGTERM)
