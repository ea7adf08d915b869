"""The fast paths: fused and foreach optimizers, torch.compile with
checkpoints that load uncompiled, gradient checkpointing, each checked
against the plain way."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from lit_untrac.data import MixtureDataModule
from lit_untrac.models import load_model
from lit_untrac.modules import LanguageModel, load_checkpoint_model
from lit_untrac.modules.language_model import build_optimizer
from tests.conftest import synthetic_specs
from tests.test_influence_tracker import trainer
from tests.test_language_model import batch_of


def fitted(tmp_path, module, **kwargs):
    data = MixtureDataModule(**synthetic_specs(n=4), batch_size=2, train_steps=2)
    trainer(tmp_path, [], **kwargs).fit(module, datamodule=data)
    return module


# ---- optimizers ----------------------------------------------------------


def test_optimizers_use_torchs_fused_implementation_where_it_has_one():
    params = list(torch.nn.Linear(3, 3).parameters())
    for name in ("Adam", "AdamW", "SGD", "Adagrad"):
        assert build_optimizer(name, {"lr": 0.1}, params).defaults["fused"] is True, name
    rmsprop = build_optimizer("RMSprop", {"lr": 0.1}, params)  # no fused kernel: torch's default
    assert rmsprop.defaults["foreach"] is None and "fused" not in rmsprop.defaults
    grouped = build_optimizer("Adam", {"lr": 0.1}, [{"params": iter(params)}])
    assert grouped.defaults["fused"] is True and len(grouped.param_groups[0]["params"]) == 2


@pytest.mark.parametrize("choice", [{"fused": False}, {"foreach": True}, {"foreach": False}])
def test_the_users_implementation_choice_wins(choice):
    params = list(torch.nn.Linear(3, 3).parameters())
    optimizer = build_optimizer("Adam", {"lr": 0.1, **choice}, params)
    assert {k: optimizer.defaults[k] for k in choice} == choice
    assert not optimizer.defaults["fused"]


@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD"])
def test_a_fused_step_equals_torchs_default_step(name):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    plain = copy.deepcopy(model)
    args = {"lr": 0.01, "weight_decay": 0.01} | ({"momentum": 0.9} if name == "SGD" else {})
    ours = build_optimizer(name, args, model.parameters())
    theirs = getattr(torch.optim, name)(plain.parameters(), **args)
    x = torch.randn(32, 8)
    for _ in range(3):
        for net, optimizer in ((model, ours), (plain, theirs)):
            optimizer.zero_grad()
            net(x).pow(2).mean().backward()
            optimizer.step()
    for a, b in zip(model.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


# ---- torch.compile ---------------------------------------------------------


def test_a_compiled_modules_checkpoint_and_export_load_uncompiled(tmp_path, tiny_spec, monkeypatch):
    """``compile: true`` compiles in place: no ``_orig_mod.`` in any saved key.
    (Dynamo's eager backend keeps the test fast; the saved keys do not depend
    on the backend.)"""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    module = LanguageModel(tiny_spec, compile=True, export_dir=str(tmp_path / "export"))
    assert module.model._compiled_call_impl is not None  # compiled, in place
    fitted(tmp_path, module, enable_checkpointing=True)
    checkpoint = next((tmp_path / "checkpoints").glob("*.ckpt"))
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert not [key for key in saved if "_orig_mod" in key]
    trained = module.model.state_dict()
    for loaded, _ in (load_checkpoint_model(str(checkpoint)), load_model(str(tmp_path / "export"))):
        assert getattr(loaded, "_compiled_call_impl", None) is None
        assert list(loaded.state_dict()) == list(trained)
        for key, value in loaded.state_dict().items():
            assert torch.equal(value, trained[key]), key


# ---- gradient checkpointing --------------------------------------------------


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tmp_path, tiny_spec):
    torch.manual_seed(0)
    plain = LanguageModel(tiny_spec, export=False)
    checkpointed = LanguageModel(tiny_spec, export=False, gradient_checkpointing=True)
    checkpointed.model.load_state_dict(plain.model.state_dict())
    assert (
        checkpointed.model.is_activation_checkpointing
        and not plain.model.is_activation_checkpointing
    )
    batch = batch_of(plain.tokenizer)
    losses = []
    for module in (plain, checkpointed):
        module.train()
        loss = module.loss(batch)
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-5)
    for (name, a), (_, b) in zip(
        plain.model.named_parameters(), checkpointed.model.named_parameters()
    ):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5, msg=name)
    fitted(tmp_path, checkpointed)  # and it trains under Lightning
    assert checkpointed.trainer.global_step == 2
