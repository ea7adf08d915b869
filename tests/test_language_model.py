"""The language-model module: its loss, optimizers, schedules, checkpoints, export."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from lit_untrac.data import Collator, MixtureDataModule
from lit_untrac.data.formats import prompt_completion_example
from lit_untrac.errors import UserError
from lit_untrac.models import load_model
from lit_untrac.modules import LanguageModel, load_checkpoint_model
from lit_untrac.modules.language_model import build_optimizer, resolve_optimizer
from tests.conftest import synthetic_specs

PAIRS = [("What is 2 + 2?", "4"), ("Name a colour.", "dark blue"), ("Spell seven.", "s e v e n")]


def batch_of(tok, encoder_decoder=False):
    examples = [
        prompt_completion_example(p, c, tok, encoder_decoder=encoder_decoder) for p, c in PAIRS
    ]
    return Collator(tok.pad_token_id)(examples)


@pytest.mark.parametrize("which", ["tiny_spec", "tiny_t5_spec"])
def test_loss_equals_transformers_own_loss(request, which):
    module = LanguageModel(request.getfixturevalue(which))
    module.eval()
    batch = batch_of(module.tokenizer, module.model.config.is_encoder_decoder)
    with torch.no_grad():
        ours = module.loss(batch)
        theirs = module.model(**batch).loss  # transformers' mean over label tokens
        per_example = module.example_losses(batch)
        one_by_one = torch.stack(
            [
                module.model(**{k: v[i : i + 1] for k, v in batch.items()}).loss
                for i in range(len(PAIRS))
            ]
        )
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(per_example, one_by_one, rtol=1e-5, atol=1e-6)


def one_epoch_trainer(root) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )


def test_training_lowers_the_loss_and_exports(tmp_path, tiny_spec):
    dm = MixtureDataModule(**synthetic_specs(n=8), batch_size=8, train_steps=60)
    module = LanguageModel(tiny_spec, optimizer_args={"lr": 3e-3})
    trainer = one_epoch_trainer(tmp_path)
    dm.prepare(module.tokenizer)
    batch = Collator(module.tokenizer.pad_token_id)(list(dm.examples("train_1")))
    with torch.no_grad():
        before = module.loss(batch).item()
    trainer.fit(module, datamodule=dm)
    module.eval()
    with torch.no_grad():
        after = module.loss(batch).item()
    assert after < 0.6 * before
    exported, _ = load_model(str(tmp_path / "export"))
    for (name, a), (_, b) in zip(module.model.state_dict().items(), exported.state_dict().items()):
        assert torch.equal(a, b), name
    checkpoint = next((tmp_path / "checkpoints").glob("*.ckpt"))
    from_ckpt, _ = load_checkpoint_model(str(checkpoint))
    for (name, a), (_, b) in zip(module.model.state_dict().items(), from_ckpt.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_fit_resumed_from_its_last_step_still_exports(tmp_path, tiny_spec):
    """Killed after the final checkpoint but before the export, a rerun
    restores a finished loop, trains nothing, and exports the trained model."""

    def fit(root, export, ckpt_path=None):
        dm = MixtureDataModule(**synthetic_specs(n=8), batch_size=8, train_steps=4)
        module = LanguageModel(tiny_spec, optimizer_args={"lr": 3e-3}, export=export)
        one_epoch_trainer(root).fit(module, datamodule=dm, ckpt_path=ckpt_path)
        return module

    trained = fit(tmp_path / "first", export=False)
    assert not (tmp_path / "first" / "export").exists()
    checkpoint = next((tmp_path / "first" / "checkpoints").glob("*step=4.ckpt"))
    fit(tmp_path / "second", export=True, ckpt_path=str(checkpoint))
    exported, _ = load_model(str(tmp_path / "second" / "export"))
    for (name, a), (_, b) in zip(trained.model.state_dict().items(), exported.state_dict().items()):
        assert torch.equal(a, b), name


def test_hyperparameters_hold_primitives_only(tiny_spec):
    module = LanguageModel(tiny_spec)

    def primitive(value):
        if isinstance(value, dict):
            return all(isinstance(k, str) and primitive(v) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return all(primitive(v) for v in value)
        return value is None or isinstance(value, (str, int, float, bool))

    assert primitive(dict(module.hparams))


def test_optimizers_by_name_and_path(tiny_spec):
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(build_optimizer("SGD", {"lr": 0.1, "momentum": 0.9}, params), torch.optim.SGD)
    assert isinstance(
        build_optimizer("torch.optim.RMSprop", {"lr": 0.1}, params), torch.optim.RMSprop
    )
    assert resolve_optimizer("Adafactor") is torch.optim.Adafactor
    with pytest.raises(UserError, match="unknown optimizer 'Adamm'"):
        resolve_optimizer("Adamm")
    with pytest.raises(UserError, match="cannot import optimizer 'torch.optim.Nope'"):
        resolve_optimizer("torch.optim.Nope")
    with pytest.raises(UserError, match="bad arguments"):
        build_optimizer("SGD", {"lr": 0.1, "betas": (0.9, 0.99)}, params)
    with pytest.raises(UserError, match="unknown scheduler 'steep'"):
        LanguageModel(tiny_spec, scheduler="steep")


def test_linear_schedule_with_warmup_matches_its_formula(tmp_path, tiny_spec):
    lrs = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    dm = MixtureDataModule(**synthetic_specs(n=4), batch_size=2, train_steps=10)
    module = LanguageModel(
        tiny_spec, optimizer="SGD", optimizer_args={"lr": 1.0}, scheduler="linear", warmup_steps=4
    )
    pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[Record()],
        default_root_dir=str(tmp_path),
    ).fit(module, datamodule=dm)
    expected = [s / 4 if s < 4 else (10 - s) / 6 for s in range(10)]
    assert lrs == pytest.approx(expected)


@pytest.mark.slow
def test_tiny_config_learns_every_training_set(tmp_path):
    """Acceptance: each training set's loss falls under a quarter of its start."""
    import yaml

    from lit_untrac.cli import main
    from tests.conftest import ROOT

    config = f"{ROOT}/configs/fit/tiny_synthetic_a.yaml"
    with open(config) as handle:
        spec = yaml.safe_load(handle)["model"]["model"]
    torch.manual_seed(0)  # seed_everything: 0 in the config gives the same theta at init
    start, tok = load_model(spec)
    main(
        [
            "fit",
            "--config",
            config,
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
        ]
    )
    end, _ = load_model(str(tmp_path / "export"))
    dm = MixtureDataModule(**synthetic_specs(n=256)).prepare(tok)
    for name in dm.train_names:
        batch = Collator(tok.pad_token_id)(list(dm.examples(name)))
        with torch.no_grad():
            before = start.eval()(**batch).loss.item()
            after = end.eval()(**batch).loss.item()
        print(f"{name}: {before:.3f} -> {after:.3f} ({after / before:.3f})")
        assert after < before / 4, name
