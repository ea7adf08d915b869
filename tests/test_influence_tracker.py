"""The InfluenceTracker against losses evaluated by hand, one example at a
time: its reductions, its steps, its logging and state, and attaching it to
trainings that know nothing of lit-untrac."""

from __future__ import annotations

import copy
import csv

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader

from lit_untrac.callbacks import InfluenceTracker
from lit_untrac.data import MixtureDataModule
from lit_untrac.errors import UserError
from lit_untrac.modules import LanguageModel
from tests.conftest import synthetic_specs

N = 6


def trainer(tmp_path, callbacks, **kwargs) -> pl.Trainer:
    defaults = dict(
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=str(tmp_path),
    )
    return pl.Trainer(callbacks=callbacks, **{**defaults, **kwargs})


def by_hand(model, examples, reduction: str = "sum") -> float:
    """sum_j L(z_j, theta) (or its mean), each example alone, transformers' own loss."""
    model.eval()
    with torch.no_grad():
        losses = [
            model(input_ids=e["input_ids"][None], labels=e["labels"][None]).loss.double().item()
            for e in examples
        ]
    return sum(losses) if reduction == "sum" else sum(losses) / len(losses)


class Snapshots(pl.Callback):
    """Copies of the model's weights before the first step and after each."""

    def __init__(self, attribute: str = "model") -> None:
        self.attribute, self.states = attribute, {}

    def _keep(self, trainer, module) -> None:
        model = getattr(module, self.attribute)
        self.states[trainer.global_step] = copy.deepcopy(model.state_dict())

    def on_train_start(self, trainer, module) -> None:
        self._keep(trainer, module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._keep(trainer, module)

    def model_at(self, module, step: int):
        model = copy.deepcopy(getattr(module, self.attribute))
        model.load_state_dict(self.states[step])
        return model


def assert_tracks_by_hand(tracker, snapshots, module, sets, reduction="sum", rel=1e-6):
    for name, examples in sets.items():
        for step, loss in zip(tracker.steps, tracker.losses[name]):
            expected = by_hand(snapshots.model_at(module, step), examples, reduction)
            assert loss == pytest.approx(expected, rel=rel), (name, step)
        assert tracker.deltas(name)[0] == 0.0


@pytest.fixture
def mixture() -> MixtureDataModule:
    return MixtureDataModule(**synthetic_specs(n=N), batch_size=2, train_steps=5)


# ---- reductions ---------------------------------------------------------------


@pytest.mark.parametrize("eval_batch_size", [1, 4])
def test_sum_is_the_sum_of_batch_mean_losses_and_mean_is_per_example(
    tmp_path, tiny_spec, mixture, eval_batch_size
):
    """``sum``: the reference code's sum over batches of one example of the
    batch-mean loss; ``mean``: the mean over examples."""
    module = LanguageModel(tiny_spec)
    trackers = [
        InfluenceTracker(reduction=r, eval_batch_size=eval_batch_size, dirpath=str(tmp_path / r))
        for r in ("sum", "mean")
    ]
    trainer(tmp_path, trackers, max_steps=1).fit(module, datamodule=mixture)
    test = list(mixture.examples("test"))
    assert len(trackers[0].losses["test"]) == 2
    model = module.model
    model.eval()
    with torch.no_grad():
        batch_means = [
            model(input_ids=e["input_ids"][None], labels=e["labels"][None]).loss.item()
            for e in test
        ]
    # with padding (batch 4) the float32 forward differs in the last bits only
    rel = 1e-6 if eval_batch_size == 1 else 1e-5
    assert trackers[0].losses["test"][-1] == pytest.approx(sum(batch_means), rel=rel)
    assert trackers[1].losses["test"][-1] == pytest.approx(sum(batch_means) / N, rel=rel)
    assert trackers[1].losses["test"][0] * N == pytest.approx(trackers[0].losses["test"][0])


# ---- attaching ------------------------------------------------------------------


def test_attached_to_a_plain_fit_of_the_language_model(tmp_path, tiny_spec, mixture):
    module = LanguageModel(tiny_spec, optimizer_args={"lr": 1e-2})
    tracker = InfluenceTracker(every_n_steps=2)
    snapshots = Snapshots()
    trainer(tmp_path, [snapshots, tracker]).fit(module, datamodule=mixture)
    assert tracker.steps == [0, 2, 4, 5]  # every 2 steps, and always the last
    assert_tracks_by_hand(tracker, snapshots, module, {"test": list(mixture.examples("test"))})
    assert tracker.influence()["test"] < 0  # training on the mixture lowers the test loss
    rows = list(csv.DictReader(open(tmp_path / "curves.csv")))
    assert [(r["method"], r["unlearned"], r["evaluated"], r["step"]) for r in rows] == [
        ("untrac", "training", "test", str(s)) for s in (0, 2, 4, 5)
    ]
    influence = list(csv.DictReader(open(tmp_path / "influence.csv")))
    assert influence == [
        {
            "method": "untrac",
            "train_dataset": "training",
            "test_dataset": "test",
            "influence": repr(tracker.influence()["test"]),
        }
    ]


class UserModel(pl.LightningModule):
    """A user's own module: a transformers model, nothing from lit-untrac."""

    def __init__(self, with_loss: bool = False) -> None:
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel

        config = GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=1, n_head=2)
        self.net = GPT2LMHeadModel(config)
        if with_loss:
            self.loss = lambda batch: self.net(**batch).loss

    def training_step(self, batch, batch_idx):
        assert self.training and self.net.training
        return self.net(**batch).loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def user_examples(n: int, seed: int) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(n):
        ids = torch.randint(1, 64, (int(torch.randint(5, 12, (1,), generator=generator)),))
        labels = ids.clone()
        labels[:2] = -100  # no loss on a two-token prompt
        examples.append({"input_ids": ids, "labels": labels})
    return examples


def user_collate(examples: list[dict]) -> dict[str, torch.Tensor]:
    width = max(len(e["input_ids"]) for e in examples)
    input_ids = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        input_ids[i, : len(e["input_ids"])] = e["input_ids"]
        labels[i, : len(e["labels"])] = e["labels"]
        mask[i, : len(e["input_ids"])] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def per_example_loss(module: UserModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The user's loss_fn: each example's mean loss over its label tokens."""
    assert not module.training and not torch.is_grad_enabled()
    logits = module.net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels, reduction="none")
    mask = labels != -100
    return (nll * mask).sum(1) / mask.sum(1)


@pytest.mark.parametrize("how", ["loss_fn", "loss"])
def test_attached_to_a_users_own_module(tmp_path, how):
    """Through ``loss_fn(module, batch)``, or a module's scalar ``loss(batch)``."""
    torch.manual_seed(0)
    module = UserModel(with_loss=how == "loss")
    sets = {"probe": user_examples(5, seed=1), "other": user_examples(3, seed=2)}
    tracker = InfluenceTracker(
        sets=sets,
        pad_token_id=0,
        loss_fn=per_example_loss if how == "loss_fn" else None,
        eval_batch_size=2,
    )
    snapshots = Snapshots("net")
    loader = DataLoader(user_examples(8, seed=3), batch_size=2, collate_fn=user_collate)
    trainer(tmp_path, [snapshots, tracker]).fit(module, train_dataloaders=loader)
    assert tracker.steps == [0, 1, 2, 3, 4]
    assert module.training and module.net.training  # restored after each evaluation
    rel = 1e-5 if how == "loss_fn" else 1e-6  # batches of one when only loss(batch) is known
    assert_tracks_by_hand(tracker, snapshots, module, sets, rel=rel)
    assert all(abs(v) > 1e-3 for v in tracker.influence().values())


def test_a_module_without_a_loss_needs_loss_fn(tmp_path):
    module = UserModel()
    tracker = InfluenceTracker(sets={"probe": user_examples(2, seed=1)}, pad_token_id=0)
    loader = DataLoader(user_examples(2, seed=3), batch_size=2, collate_fn=user_collate)
    with pytest.raises(
        UserError, match="UserModel has neither example_losses.*give the tracker loss_fn"
    ):
        trainer(tmp_path, [tracker]).fit(module, train_dataloaders=loader)


def test_loss_fn_must_return_one_loss_per_example(tmp_path):
    tracker = InfluenceTracker(
        sets={"probe": user_examples(2, seed=1)},
        pad_token_id=0,
        loss_fn=lambda module, batch: module.net(**batch).loss,
    )
    loader = DataLoader(user_examples(2, seed=3), batch_size=2, collate_fn=user_collate)
    with pytest.raises(UserError, match=r"loss_fn returned shape \(\) for a batch of 2"):
        trainer(tmp_path, [tracker]).fit(UserModel(), train_dataloaders=loader)


# ---- steps, modes, precision --------------------------------------------------


def test_evaluates_each_step_once_with_gradient_accumulation(tmp_path, tiny_spec):
    data = MixtureDataModule(**synthetic_specs(n=N), batch_size=1, train_steps=7)
    tracker = InfluenceTracker(every_n_steps=1)
    trainer(tmp_path, [tracker], accumulate_grad_batches=2).fit(
        LanguageModel(tiny_spec), datamodule=data
    )
    assert tracker.steps == [0, 1, 2, 3, 4]  # 7 batches: 4 optimizer steps, the last partial


def test_restores_each_submodules_mode(tmp_path, tiny_spec, mixture):
    module = LanguageModel(tiny_spec)
    frozen = module.model.transformer.h[0]

    class Freeze(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            frozen.eval()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            assert not frozen.training and pl_module.model.lm_head.training

    trainer(tmp_path, [Freeze(), InfluenceTracker()], max_steps=3).fit(module, datamodule=mixture)


def test_evaluates_under_the_trainers_precision(tmp_path, tiny_spec, mixture):
    autocast = []

    def recording(module, batch):
        autocast.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return module.example_losses(batch)

    module = LanguageModel(tiny_spec)
    tracker = InfluenceTracker(eval_batch_size=1, loss_fn=recording)
    trainer(tmp_path, [tracker], max_steps=1, precision="bf16-mixed").fit(
        module, datamodule=mixture
    )
    assert set(autocast) == {(True, torch.bfloat16)}
    module.eval()
    test = list(mixture.examples("test"))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = sum(module.example_losses(mixture.collator([e])).double().item() for e in test)
    assert tracker.losses["test"][-1] == pytest.approx(expected, rel=1e-6)


# ---- logging, state, files -------------------------------------------------------


class Recorder(Logger):
    """A logger that keeps what it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: list[tuple[int, dict]] = []

    name = "recorder"
    version = 0

    def log_metrics(self, metrics, step=None) -> None:
        self.metrics.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


def test_logs_every_evaluation_at_its_step(tmp_path, tiny_spec, mixture):
    recorder = Recorder()
    tracker = InfluenceTracker(every_n_steps=3)
    trainer(tmp_path, [tracker], logger=recorder).fit(LanguageModel(tiny_spec), datamodule=mixture)
    logged = [(step, m) for step, m in recorder.metrics if "influence/test" in m]
    assert [step for step, _ in logged] == [0, 3, 5]
    for (_, metrics), loss, delta in zip(logged, tracker.losses["test"], tracker.deltas("test")):
        assert metrics == {"eval_loss/test": loss, "influence/test": delta}


def test_a_resumed_run_continues_the_curves(tmp_path, tiny_spec, mixture):
    """Two epochs in one go, and one epoch then a resume from its checkpoint."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    def run(folder, max_epochs, ckpt_path=None):
        torch.manual_seed(0)
        module = LanguageModel(tiny_spec, optimizer_args={"lr": 1e-2})
        tracker = InfluenceTracker()
        checkpoint = ModelCheckpoint(dirpath=str(folder), save_last=True)
        trainer(
            folder, [tracker, checkpoint], max_epochs=max_epochs, enable_checkpointing=True
        ).fit(module, datamodule=mixture, ckpt_path=ckpt_path)
        return tracker

    whole = run(tmp_path / "whole", 2)
    run(tmp_path / "first", 1)
    resumed = run(tmp_path / "second", 2, ckpt_path=str(tmp_path / "first" / "last.ckpt"))
    assert whole.steps == resumed.steps == list(range(11))
    assert resumed.losses["test"] == pytest.approx(whole.losses["test"], rel=1e-6)
    assert resumed.deltas("test")[0] == 0.0


def test_an_exception_keeps_the_curves_so_far(tmp_path, tiny_spec, mixture):
    class Stop(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 2:
                raise RuntimeError("stop here")

    tracker = InfluenceTracker()
    with pytest.raises(RuntimeError, match="stop here"):
        trainer(tmp_path, [tracker, Stop()]).fit(LanguageModel(tiny_spec), datamodule=mixture)
    rows = list(csv.DictReader(open(tmp_path / "curves.csv")))
    assert [int(r["step"]) for r in rows] == [0, 1, 2]
    assert not (tmp_path / "influence.csv").exists()


# ---- bad arguments ---------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"every_n_steps": 0}, "every_n_steps=0 must be an integer >= 1"),
        ({"reduction": "median"}, "unknown reduction 'median'; expected one of: 'mean', 'sum'"),
        ({"group": "dev"}, "unknown evaluation group 'dev'; expected one of: 'test', 'train'"),
        ({"eval_batch_size": 0}, "eval_batch_size=0 must be >= 1"),
        (
            {"sets": {"a": [{"input_ids": torch.ones(2)}]}},
            "explicit sets need a collator or a pad_token_id",
        ),
        ({"sets": {"a": []}, "pad_token_id": 0}, r"set\(s\) \['a'\] have no examples"),
        ({"loss_fn": "mean"}, "loss_fn must be callable"),
    ],
)
def test_bad_arguments_are_refused_at_once(kwargs, message):
    with pytest.raises(UserError, match=message):
        InfluenceTracker(**kwargs)


def test_without_named_sets_it_asks_for_a_mixture_or_sets(tmp_path):
    loader = DataLoader(user_examples(2, seed=3), batch_size=2, collate_fn=user_collate)
    with pytest.raises(UserError, match="the tracker needs named sets"):
        trainer(tmp_path, [InfluenceTracker(loss_fn=per_example_loss)]).fit(
            UserModel(), train_dataloaders=loader
        )


# ---- data parallel ----------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_give_the_single_process_sums(tmp_path, tiny_spec):
    """ddp_spawn on two CPU processes: each evaluates half the batches, and the
    reduced sums equal a single-process evaluation by hand."""
    data = MixtureDataModule(**synthetic_specs(n=N), batch_size=2, train_steps=2)
    module = LanguageModel(tiny_spec, optimizer_args={"lr": 1e-2}, export=False)
    start = copy.deepcopy(module.model)
    tracker = InfluenceTracker(eval_batch_size=2, group="train", dirpath=str(tmp_path))
    trainer(
        tmp_path,
        [tracker],
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        use_distributed_sampler=False,  # the datamodule shards its batches itself
    ).fit(module, datamodule=data)
    data.prepare(module.tokenizer)
    rows = list(csv.DictReader(open(tmp_path / "curves.csv")))
    for name in data.train_names:
        curve = {int(r["step"]): float(r["loss"]) for r in rows if r["evaluated"] == name}
        assert sorted(curve) == [0, 1, 2]
        examples = list(data.examples(name))
        assert curve[0] == pytest.approx(by_hand(start, examples), rel=1e-5)
        assert curve[2] == pytest.approx(by_hand(module.model, examples), rel=1e-5)
        assert curve[2] != pytest.approx(curve[0], rel=1e-4)
