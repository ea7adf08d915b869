"""UnlearningModule: gradient ascent from theta_0, checked against plain
PyTorch updates (``maximize=True`` where the optimizer has it)."""

from __future__ import annotations

import copy
import csv
import os
import shutil

import lightning.pytorch as pl
import pytest
import torch

from lit_untrac.callbacks import InfluenceTracker
from lit_untrac.config import experiment_parser
from lit_untrac.data import MixtureDataModule
from lit_untrac.errors import UserError
from lit_untrac.models import load_model
from lit_untrac.modules import LanguageModel, NonFiniteLossError, UnlearningModule
from tests.conftest import synthetic_specs
from tests.test_influence_tracker import Recorder, trainer
from tests.test_untrac import pad

N = 4


@pytest.fixture
def theta0(tmp_path, tiny_spec) -> str:
    model, tokenizer = load_model(tiny_spec)
    folder = str(tmp_path / "theta0")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def unlearning_data(batch_size: int = 2) -> MixtureDataModule:
    return MixtureDataModule(
        **synthetic_specs(n=N), unlearn="train_1", unlearn_batch_size=batch_size, seed=5
    )


def fit(tmp_path, module, data, callbacks=(), **kwargs) -> pl.Trainer:
    fitted = trainer(tmp_path, list(callbacks), **kwargs)
    fitted.fit(module, datamodule=data)
    return fitted


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module, **tolerance) -> None:
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, msg=name, **tolerance)


# ---- theta_0 ------------------------------------------------------------------


def test_loads_theta0_from_an_export_folder(theta0):
    saved, _ = load_model(theta0)
    module = UnlearningModule(theta0)
    assert_same_weights(module.model, saved, rtol=0, atol=0)
    assert module.tokenizer.pad_token_id == saved.config.pad_token_id


def test_loads_theta0_from_a_lightning_checkpoint(tmp_path, tiny_spec):
    trained = LanguageModel(tiny_spec, export=False)
    data = MixtureDataModule(**synthetic_specs(n=N), batch_size=2, train_steps=2)
    fit(tmp_path, trained, data, enable_checkpointing=True)
    checkpoint = next((tmp_path / "checkpoints").glob("*.ckpt"))
    assert_same_weights(UnlearningModule(str(checkpoint)).model, trained.model, rtol=0, atol=0)


def test_loads_theta0_by_hub_name_from_the_cache(theta0, tmp_path, monkeypatch):
    """A hub id, resolved offline from a hub cache laid out as the hub client does."""
    import huggingface_hub.constants

    repo = tmp_path / "hub" / "models--lit-untrac--tiny-theta0"
    commit = "0" * 40
    shutil.copytree(theta0, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    saved, _ = load_model(theta0)
    assert_same_weights(UnlearningModule("lit-untrac/tiny-theta0").model, saved, rtol=0, atol=0)


# ---- the update -----------------------------------------------------------------


def test_paper_defaults(theta0):
    module = UnlearningModule(theta0)
    optimizer = module.configure_optimizers()  # constant: no scheduler
    assert type(optimizer) is torch.optim.Adam
    group = optimizer.param_groups[0]
    assert group["lr"] == 5e-5 and group["betas"] == (0.9, 0.999)
    assert module.hparams.scheduler == "constant" and module.hparams.export is False


def test_one_step_ascends_the_gradient_and_logs_the_positive_loss(tmp_path, theta0):
    lr = 0.1
    module = UnlearningModule(theta0, optimizer="SGD", optimizer_args={"lr": lr})
    start = copy.deepcopy(module.model)
    data = unlearning_data(batch_size=N)  # one batch: the whole set
    trainer = fit(tmp_path, module, data)
    batch = pad(list(data.examples("train_1")), module.tokenizer.pad_token_id)
    loss = start(**batch).loss
    loss.backward()
    expected = copy.deepcopy(start)
    with torch.no_grad():
        for p, q in zip(expected.parameters(), start.parameters()):
            p += lr * q.grad  # theta_1 = theta_0 + lr * grad L(theta_0)
    assert_same_weights(module.model, expected, rtol=1e-5, atol=1e-7)
    assert trainer.callback_metrics["unlearn/loss"].item() == pytest.approx(loss.item(), rel=1e-6)
    assert trainer.callback_metrics["unlearn/loss"].item() > 0


@pytest.mark.parametrize("every, logged_steps", [(1, [1, 2, 3, 4]), (3, [3])])
def test_the_positive_loss_is_logged_where_the_loggers_write(tmp_path, theta0, every, logged_steps):
    recorder = Recorder()
    module = UnlearningModule(theta0, optimizer_args={"lr": 1e-2})
    trainer = fit(
        tmp_path, module, unlearning_data(batch_size=1), logger=recorder, log_every_n_steps=every
    )
    logged = [(step, m["unlearn/loss"]) for step, m in recorder.metrics if "unlearn/loss" in m]
    assert [step + 1 for step, _ in logged] == logged_steps  # the step the batch made
    assert all(loss > 0 for _, loss in logged)
    assert trainer.callback_metrics["unlearn/loss"] > 0  # the last step's, for callbacks


OPTIMIZERS = {
    "SGD": "optimizer: SGD\noptimizer_args: {lr: 0.05}",
    "SGD momentum": "optimizer: SGD\noptimizer_args: {lr: 0.05, momentum: 0.9}",
    "RMSprop": "optimizer: RMSprop\noptimizer_args: {lr: 0.001}",
    "Adam": "optimizer: Adam\noptimizer_args: {lr: 0.001, betas: [0.9, 0.999]}",
    "Adafactor": "optimizer: Adafactor\noptimizer_args: {lr: 0.01}",
    "transformers Adafactor": (
        "optimizer: transformers.optimization.Adafactor\n"
        "optimizer_args: {lr: 0.001, scale_parameter: false, relative_step: false, warmup_init: false}"
    ),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_any_optimizer_from_yaml_matches_a_plain_ascent_loop(tmp_path, theta0, name):
    config = tmp_path / "experiment.yaml"
    config.write_text(
        "data:\n  train: [{name: a, generator: synthetic_a}]\nuntrac:\n"
        + "".join(f"  {line}\n" for line in OPTIMIZERS[name].splitlines())
    )
    cfg = experiment_parser().parse_args(["--config", str(config)]).untrac
    module = UnlearningModule(
        theta0, optimizer=cfg.optimizer, optimizer_args=cfg.optimizer_args, scheduler=cfg.scheduler
    )
    reference = copy.deepcopy(module.model)
    data = unlearning_data(batch_size=1)
    fit(tmp_path, module, data)

    # the same ascent in plain PyTorch: the optimizer maximises, or the loss is negated
    cls = type(module.trainer.optimizers[0])
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.optimizer_args.items()}
    maximize = "maximize" in cls.__init__.__code__.co_varnames
    if maximize:
        args["maximize"] = True
    # the same implementation (fused, foreach or the loop): the same rounding
    chosen = module.trainer.optimizers[0].defaults
    args.update({k: chosen[k] for k in ("fused", "foreach") if chosen.get(k)})
    optimizer = cls(reference.parameters(), **args)
    examples = list(data.examples("train_1"))
    order = torch.randperm(N, generator=torch.Generator().manual_seed(5)).tolist()
    before = reference(**pad(examples, module.tokenizer.pad_token_id)).loss.item()
    for i in order:
        loss = reference(**pad([examples[i]], module.tokenizer.pad_token_id)).loss
        optimizer.zero_grad()
        (loss if maximize else -loss).backward()
        optimizer.step()
    assert_same_weights(module.model, reference, rtol=1e-5, atol=1e-6)
    after = reference(**pad(examples, module.tokenizer.pad_token_id)).loss.item()
    assert after > before  # ascent raises the loss of the unlearned set


# ---- refusals ---------------------------------------------------------------------


def test_gradient_clipping_is_an_error_that_says_why(tmp_path, theta0):
    with pytest.raises(UserError, match="gradient_clip_val=0.5 is set on the trainer; unlearning"):
        fit(tmp_path, UnlearningModule(theta0), unlearning_data(), gradient_clip_val=0.5)


def test_a_non_finite_loss_stops_the_run_and_keeps_the_curves(tmp_path, theta0):
    module = UnlearningModule(theta0, optimizer="SGD", optimizer_args={"lr": 1e30})
    tracker = InfluenceTracker()
    with pytest.raises(NonFiniteLossError, match="became (nan|inf) at step 1: gradient ascent"):
        fit(tmp_path, module, unlearning_data(batch_size=1), callbacks=[tracker])
    assert tracker.steps == [0, 1]
    with open(os.path.join(tmp_path, "curves.csv")) as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["unlearned"], r["step"]) for r in rows] == [("train_1", "0"), ("train_1", "1")]
    assert float(rows[0]["delta"]) == 0.0
