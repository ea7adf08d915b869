"""TracIn checkpoints: what the callback saves, from any LightningModule,
with the learning rate of each step; what the reader refuses; TracIn with
one checkpoint at lr 1 is GradDot."""

from __future__ import annotations

import json
import os

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel

from lit_untrac.attribution.graddot import graddot_scores
from lit_untrac.attribution.tracin import (
    TracInCheckpoint,
    load_tracin_weights,
    read_tracin_checkpoints,
    tracin_scores,
)
from lit_untrac.callbacks.tracin_checkpoints import TracInCheckpoints
from lit_untrac.data import MixtureDataModule
from lit_untrac.errors import UserError
from lit_untrac.modules import LanguageModel
from lit_untrac.modules.gradients import GradientExtractor
from lit_untrac.modules.losses import EvalSet
from tests.conftest import synthetic_specs
from tests.experiments import predict_trainer, quiet_trainer


def fit(module, datamodule, folder, callbacks, max_steps=-1, **kwargs):
    trainer = quiet_trainer(
        default_root_dir=str(folder),
        max_epochs=1,
        max_steps=max_steps,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=callbacks,
        **kwargs,
    )
    trainer.fit(module, datamodule=datamodule)
    return trainer


class WeightsAtEachStep(pl.Callback):
    def __init__(self):
        self.weights = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.weights[trainer.global_step] = {
            k: v.detach().clone() for k, v in pl_module.model.state_dict().items()
        }


def test_saves_weights_and_the_learning_rate_of_each_step(tmp_path, tiny_spec):
    datamodule = MixtureDataModule(**synthetic_specs(n=4), batch_size=2, train_steps=7)
    module = LanguageModel(
        tiny_spec, optimizer_args={"lr": 0.01}, scheduler="linear", warmup_steps=2, export=False
    )
    reference = WeightsAtEachStep()
    fit(module, datamodule, tmp_path, [TracInCheckpoints(every_n_steps=3), reference])
    folder = tmp_path / "tracin"
    with open(folder / "index.json") as handle:
        index = json.load(handle)
    assert index["weights"] == "model"
    assert [c["step"] for c in index["checkpoints"]] == [3, 6, 7]  # and the last step
    # transformers' linear schedule: step t (from 1) uses lr * f(t - 1), f(s) = s / 2
    # during warm-up, then (7 - s) / 5
    expected = {3: 0.01 * (7 - 2) / 5, 6: 0.01 * (7 - 5) / 5, 7: 0.01 * (7 - 6) / 5}
    for entry in index["checkpoints"]:
        assert entry["lr"] == pytest.approx(expected[entry["step"]])
        saved = torch.load(folder / entry["file"], map_location="cpu", weights_only=True)
        assert saved["step"] == entry["step"] and saved["lrs"] == [entry["lr"]]
        for key, value in reference.weights[entry["step"]].items():
            torch.testing.assert_close(saved["state_dict"][key], value, rtol=0, atol=0)
    checkpoints = read_tracin_checkpoints(str(folder))
    assert [(c.step, c.lr) for c in checkpoints] == [
        (s, pytest.approx(expected[s])) for s in (3, 6, 7)
    ]


def test_works_with_any_lightning_module(tmp_path):
    callback = TracInCheckpoints(dirpath=str(tmp_path / "ckpts"), every_n_steps=2, save_last=False)
    fit(BoringModel(), None, tmp_path, [callback], max_steps=5)
    checkpoints = read_tracin_checkpoints(str(tmp_path / "ckpts"))
    assert [c.step for c in checkpoints] == [2, 4]
    assert all(c.lr == pytest.approx(0.1) for c in checkpoints)  # BoringModel's SGD, lr 0.1
    other = BoringModel()
    load_tracin_weights(other, checkpoints[-1])
    saved = torch.load(checkpoints[-1].path, weights_only=True)
    assert saved["weights"] == "module" and set(saved["state_dict"]) == {
        "layer.weight",
        "layer.bias",
    }


def test_a_resumed_fit_continues_the_index(tmp_path):
    first = TracInCheckpoints(dirpath=str(tmp_path), every_n_steps=1)
    first.checkpoints = [{"step": 1, "file": "step_0000001.pt", "lr": 0.1, "lrs": [0.1]}]
    second = TracInCheckpoints(dirpath=str(tmp_path), every_n_steps=1)
    second.load_state_dict(first.state_dict())
    assert second.checkpoints == first.checkpoints and second.checkpoints is not first.checkpoints


def test_tracin_with_one_checkpoint_at_lr_1_is_graddot(tmp_path, tiny_spec):
    datamodule = MixtureDataModule(**synthetic_specs(n=4), batch_size=4, train_steps=1)
    module = LanguageModel(tiny_spec, optimizer="SGD", optimizer_args={"lr": 1.0}, export=False)
    fit(module, datamodule, tmp_path, [TracInCheckpoints(every_n_steps=1)])
    checkpoints = read_tracin_checkpoints(str(tmp_path / "tracin"))
    assert [(c.step, c.lr) for c in checkpoints] == [(1, 1.0)]

    trainer = predict_trainer()
    model = LanguageModel(tiny_spec, export=False).model  # other weights, until loaded
    extractor = GradientExtractor(model)

    def batches(name):
        return EvalSet.build(name, datamodule.examples(name), datamodule.collator, 3).batches

    def gradients():
        test = {"test": extractor.dataset_gradient(trainer, batches("test"))}
        return test, [
            (n, extractor.dataset_gradient(trainer, batches(n))) for n in ("train_1", "train_4")
        ]

    def gradients_at(checkpoint):
        load_tracin_weights(model, checkpoint)
        return gradients()

    tracin = tracin_scores(checkpoints, gradients_at)
    model.load_state_dict(module.model.state_dict())  # theta_1, trained by the fit
    graddot = graddot_scores(*gradients())
    assert tracin.keys() == graddot.keys() and len(tracin) == 2
    for pair, value in graddot.items():
        assert tracin[pair] == pytest.approx(value, rel=1e-6)


def write_index(folder, checkpoints):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "index.json"), "w") as handle:
        json.dump({"format": "lit-untrac/tracin-checkpoints/1", "checkpoints": checkpoints}, handle)


def test_the_reader_refuses_missing_or_incomplete_checkpoints(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_tracin_checkpoints(str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="has no index.json"):
        read_tracin_checkpoints(str(tmp_path))
    write_index(tmp_path, [])
    with pytest.raises(UserError, match="lists none"):
        read_tracin_checkpoints(str(tmp_path))
    torch.save({"state_dict": {}}, tmp_path / "step_0000001.pt")
    write_index(tmp_path, [{"step": 1, "file": "step_0000001.pt"}])
    with pytest.raises(UserError, match="step 1 .* has no learning rate"):
        read_tracin_checkpoints(str(tmp_path))
    write_index(tmp_path, [{"step": 2, "file": "step_0000002.pt", "lr": 0.1}])
    with pytest.raises(UserError, match="step_0000002.pt.* is missing"):
        read_tracin_checkpoints(str(tmp_path))
    with pytest.raises(UserError, match="at least one checkpoint"):
        tracin_scores([], lambda c: ({}, []))
    assert TracInCheckpoint(1, 0.1, "x").lr == 0.1


def test_every_n_steps_is_checked():
    with pytest.raises(UserError, match="every_n_steps=0"):
        TracInCheckpoints(every_n_steps=0)
