"""Gradient extraction on a tiny GPT-2: per-parameter tensors, the loss it
differentiates, Hessian-vector products against finite differences, and two
DDP processes reproducing the single-process gradient."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from lit_untrac.data import MixtureDataModule
from lit_untrac.modules import build_model
from lit_untrac.modules.gradients import GradientExtractor, hessian_vector_product
from lit_untrac.modules.losses import EvalSet
from tests.conftest import ROOT, TINY_GPT2, synthetic_specs
from tests.experiments import predict_trainer


def tiny_gpt2(seed: int = 0):
    torch.manual_seed(seed)
    model, tokenizer = build_model({"config": dict(TINY_GPT2["config"]), "tokenizer": "bytes"})
    model.eval()
    return model, MixtureDataModule(**synthetic_specs(n=6)).prepare(tokenizer)


def test_the_gradient_is_one_tensor_per_parameter_of_the_summed_example_losses():
    model, dm = tiny_gpt2()
    examples = list(dm.examples("train_2"))
    gradient = GradientExtractor(model).dataset_gradient(
        predict_trainer(), EvalSet.build("z", examples, dm.collator, 4).batches
    )
    params = [p for p in model.parameters() if p.requires_grad]
    assert [t.shape for t in gradient] == [p.shape for p in params]
    assert all(p.grad is None for p in params)  # taken out of .grad, nothing left behind
    # a plain loop: sum_z grad L(z), L(z) the mean token loss of one example
    model.zero_grad()
    for example in examples:
        model(**dm.collator([example])).loss.backward()
    for ours, expected in zip(gradient, (p.grad for p in params)):
        torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-6)


def float64_example_losses(model, batch):
    """The mean token loss of each example, without the float32 cast of
    :func:`~lit_untrac.modules.losses.example_losses`, so that finite
    differences are accurate."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits, targets = logits[:, :-1], batch["labels"][:, 1:]
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none"
    ).view(targets.shape)
    return nll.sum(dim=1) / (targets != -100).sum(dim=1)


def test_hessian_vector_products_match_finite_differences_of_gradients():
    model, dm = tiny_gpt2()
    model.double()
    batches = EvalSet.build("h", list(dm.examples("train_1")), dm.collator, 4).batches
    n = sum(b["input_ids"].size(0) for b in batches)
    params = [p for p in model.parameters() if p.requires_grad]
    vector = [torch.randn_like(p) for p in params]

    def mean_gradient():
        grads = [torch.zeros_like(p) for p in params]
        for batch in batches:
            parts = torch.autograd.grad(float64_example_losses(model, batch).sum() / n, params)
            for g, part in zip(grads, parts):
                g.add_(part)
        return grads

    eps = 1e-6
    with torch.no_grad():
        for p, v in zip(params, vector):
            p.add_(v, alpha=eps)
    plus = mean_gradient()
    with torch.no_grad():
        for p, v in zip(params, vector):
            p.add_(v, alpha=-2 * eps)
    minus = mean_gradient()
    with torch.no_grad():
        for p, v in zip(params, vector):
            p.add_(v, alpha=eps)
    product = hessian_vector_product(model, batches, float64_example_losses)(vector)
    for ours, a, b in zip(product, plus, minus):
        torch.testing.assert_close(ours, (a - b) / (2 * eps), rtol=1e-4, atol=1e-7)


DDP_SCRIPT = textwrap.dedent(
    """
    import sys
    import lightning.pytorch as pl
    import torch
    from tests.test_gradients import tiny_gpt2
    from lit_untrac.modules.gradients import GradientExtractor
    from lit_untrac.modules.losses import EvalSet

    model, dm = tiny_gpt2()
    batches = EvalSet.build("z", list(dm.examples("train_3")), dm.collator, 2).batches
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", inference_mode=False,
                         logger=False, enable_progress_bar=False)
    gradient = GradientExtractor(model).dataset_gradient(trainer, batches)
    torch.save(gradient, sys.argv[1] + f".rank{trainer.global_rank}")
    """
)


@pytest.mark.slow
def test_two_ddp_processes_reproduce_the_single_process_gradient(tmp_path):
    script = tmp_path / "ddp_gradient.py"
    script.write_text(DDP_SCRIPT)
    out = str(tmp_path / "gradient.pt")
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, str(script), out],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    model, dm = tiny_gpt2()
    batches = EvalSet.build("z", list(dm.examples("train_3")), dm.collator, 2).batches
    single = GradientExtractor(model).dataset_gradient(predict_trainer(), batches)
    for rank in (0, 1):  # every process holds the sum over both shards
        distributed = torch.load(f"{out}.rank{rank}", weights_only=True)
        for a, b in zip(distributed, single):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
