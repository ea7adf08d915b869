"""The gradient baselines against values computed another way: closed forms
on linear regression, the full Hessian of a tiny MLP from
``torch.autograd.functional.hessian``, per-example loops on a tiny GPT-2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_untrac.attribution import METHODS, resolve_methods
from lit_untrac.attribution.graddot import gradcos_scores, graddot_scores
from lit_untrac.attribution.gradients import dot, norm
from lit_untrac.attribution.hif import (
    arnoldi_eigenbasis,
    hif_arnoldi_scores,
    hif_scores,
    lissa,
)
from lit_untrac.data import MixtureDataModule
from lit_untrac.errors import UserError
from lit_untrac.modules import build_model
from lit_untrac.modules.gradients import (
    GradientExtractor,
    hessian_vector_product,
    minibatch_hessian_vector_products,
)
from lit_untrac.modules.losses import EvalSet, example_losses
from tests.conftest import synthetic_specs
from tests.experiments import predict_trainer, quiet_trainer

# ---- helpers ------------------------------------------------------------------


def squared_loss(model, batch):
    x, y = batch
    return 0.5 * (model(x).squeeze(-1) - y) ** 2


def batches_of(
    x: torch.Tensor, y: torch.Tensor, size: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def flat(vector) -> np.ndarray:
    return np.concatenate([t.detach().double().reshape(-1).numpy() for t in vector])


def unflat(array: np.ndarray, like) -> list[torch.Tensor]:
    out, start = [], 0
    for t in like:
        out.append(torch.from_numpy(array[start : start + t.numel()].copy()).view_as(t).to(t.dtype))
        start += t.numel()
    return out


class Regression:
    """Linear regression y ~ w.x + b with squared loss 0.5 (w.x + b - y)^2:
    gradients and Hessian in closed form (numpy, float64)."""

    def __init__(self, seed: int = 0, features: int = 4) -> None:
        rng = np.random.default_rng(seed)
        true_w = rng.normal(size=features)
        self.sets = {}
        for name, n, shift in (("a", 30, 0.0), ("b", 20, 1.0), ("c", 25, -2.0)):
            x = rng.normal(size=(n, features))
            self.sets[name] = (x, x @ true_w + shift + 0.1 * rng.normal(size=n))
        for name, n in (("test_1", 15), ("test_2", 10)):
            x = rng.normal(size=(n, features)) + 0.5
            self.sets[name] = (x, x @ true_w + 0.1 * rng.normal(size=n))
        train_x = np.concatenate([self.sets[k][0] for k in "abc"])
        train_y = np.concatenate([self.sets[k][1] for k in "abc"])
        self.theta = np.linalg.lstsq(self.augment(train_x), train_y, rcond=None)[0]
        self.theta[:features] += 0.3 * rng.normal(size=features)  # away from the optimum
        self.hessian_x = self.augment(train_x)
        self.model = torch.nn.Linear(features, 1).double()
        with torch.no_grad():
            self.model.weight.copy_(torch.from_numpy(self.theta[:features]).view(1, -1))
            self.model.bias.copy_(torch.tensor([self.theta[features]]))

    @staticmethod
    def augment(x: np.ndarray) -> np.ndarray:
        return np.concatenate([x, np.ones((len(x), 1))], axis=1)

    def gradient(self, name: str) -> np.ndarray:
        x, y = self.sets[name]
        xa = self.augment(x)
        return xa.T @ (xa @ self.theta - y)

    def hessian(self) -> np.ndarray:
        return self.hessian_x.T @ self.hessian_x / len(self.hessian_x)

    def batches(self, name: str, size: int = 7):
        x, y = self.sets[name]
        return batches_of(torch.from_numpy(x), torch.from_numpy(y), size)

    def hessian_batches(self, size: int = 100):
        x = torch.from_numpy(self.hessian_x[:, :-1])
        y = torch.zeros(len(x), dtype=torch.float64)  # the Hessian does not depend on y
        return batches_of(x, y, size)

    def closed_form_hif(self, inverse: np.ndarray) -> dict[tuple[str, str], float]:
        scores = {}
        for train in "abc":
            g = self.gradient(train)
            for test in ("test_1", "test_2"):
                scores[(train, test)] = float(
                    self.gradient(test) @ inverse @ (g / np.linalg.norm(g))
                )
        return scores

    def gradients(self, trainer):
        extractor = GradientExtractor(self.model, squared_loss)
        test = {
            t: extractor.dataset_gradient(trainer, self.batches(t)) for t in ("test_1", "test_2")
        }
        train = [(n, extractor.dataset_gradient(trainer, self.batches(n))) for n in "abc"]
        return test, train


def assert_scores_close(ours, expected, rtol):
    assert ours.keys() == expected.keys()
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, rel=rtol), key


@pytest.fixture(scope="module")
def trainer():
    return predict_trainer()


@pytest.fixture(scope="module")
def regression():
    return Regression()


# ---- gradients and Hessian-vector products ----------------------------------------


def test_dataset_gradients_match_the_closed_form(regression, trainer):
    test, train = regression.gradients(trainer)
    for name, gradient in [*test.items(), *train]:
        assert [tuple(t.shape) for t in gradient] == [(1, 4), (1,)]  # one tensor per parameter
        np.testing.assert_allclose(flat(gradient), regression.gradient(name), rtol=1e-10)


def test_hessian_vector_products_match_the_full_hessian_of_an_mlp():
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)
    ).double()
    x, y = torch.randn(23, 3, dtype=torch.float64), torch.randn(23, dtype=torch.float64)
    params = list(mlp.parameters())
    shapes = [p.shape for p in params]

    def mean_loss(flat_params):
        chunks, start = [], 0
        for shape in shapes:
            chunks.append(flat_params[start : start + shape.numel()].view(shape))
            start += shape.numel()
        hidden = torch.tanh(x @ chunks[0].T + chunks[1])
        return (0.5 * ((hidden @ chunks[2].T + chunks[3]).squeeze(-1) - y) ** 2).mean()

    full = torch.autograd.functional.hessian(mean_loss, torch.cat([p.reshape(-1) for p in params]))
    vector = [torch.randn_like(p) for p in params]
    hvp = hessian_vector_product(mlp, batches_of(x, y, 5), squared_loss)  # uneven batches
    np.testing.assert_allclose(
        flat(hvp(vector)), full.numpy() @ flat(vector), rtol=1e-10, atol=1e-12
    )


def test_minibatch_products_cycle_through_the_batches(regression):
    batches = regression.hessian_batches(size=16)
    hvp = minibatch_hessian_vector_products(regression.model, batches, squared_loss)
    vector = [torch.ones_like(p) for p in regression.model.parameters()]
    for index in [0, 1, 2, 3, 4, 0]:
        x = Regression.augment(batches[index % len(batches)][0].numpy())
        expected = x.T @ x / len(x) @ flat(vector)
        np.testing.assert_allclose(flat(hvp(vector)), expected, rtol=1e-10)


def test_the_extractor_refuses_inference_mode(regression):
    extractor = GradientExtractor(regression.model, squared_loss)
    with pytest.raises(UserError, match="inference_mode=False"):
        extractor.dataset_gradient(quiet_trainer(), [])


# ---- HIF: exact inverse, LiSSA, Arnoldi --------------------------------------------


def test_hif_with_the_exact_inverse_equals_the_closed_form(regression, trainer):
    inverse = np.linalg.inv(regression.hessian())
    test, train = regression.gradients(trainer)
    like = test["test_1"]
    ours = hif_scores(test, train, lambda v: unflat(inverse @ flat(v), like))
    assert_scores_close(ours, regression.closed_form_hif(inverse), rtol=1e-9)


def test_lissa_converges_to_the_exact_inverse_as_depth_grows(regression, trainer):
    hvp = hessian_vector_product(regression.model, regression.hessian_batches(), squared_loss)
    largest = np.linalg.eigvalsh(regression.hessian()).max()
    expected = regression.closed_form_hif(np.linalg.inv(regression.hessian()))
    test, train = regression.gradients(trainer)
    errors = []
    for depth in (5, 50, 500):
        ours = hif_scores(
            test, train, lambda v, d=depth: lissa(hvp, v, depth=d, damping=0.0, scale=largest)
        )
        errors.append(max(abs(ours[k] - v) / abs(v) for k, v in expected.items()))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-3


def test_lissa_damping_converges_to_the_damped_inverse(regression, trainer):
    hvp = hessian_vector_product(regression.model, regression.hessian_batches(), squared_loss)
    scale, damping = 2.0 * np.linalg.eigvalsh(regression.hessian()).max(), 0.05
    damped = np.linalg.inv(regression.hessian() + damping * scale * np.eye(5))
    test, train = regression.gradients(trainer)
    ours = hif_scores(test, train, lambda v: lissa(hvp, v, 200, damping, scale, repeats=2))
    assert_scores_close(ours, regression.closed_form_hif(damped), rtol=1e-6)


def test_arnoldi_with_as_many_iterations_as_parameters_is_exact(regression, trainer):
    hvp = hessian_vector_product(regression.model, regression.hessian_batches(), squared_loss)
    start = [torch.randn_like(p) for p in regression.model.parameters()]
    eigenbasis = arnoldi_eigenbasis(hvp, start, iterations=5, top_k=5)
    np.testing.assert_allclose(
        np.sort(eigenbasis.eigenvalues.numpy()), np.linalg.eigvalsh(regression.hessian()), rtol=1e-8
    )
    test, train = regression.gradients(trainer)
    ours = hif_arnoldi_scores(test, train, eigenbasis)
    assert_scores_close(ours, regression.closed_form_hif(np.linalg.inv(regression.hessian())), 1e-4)


def test_arnoldi_is_exact_on_an_indefinite_mlp_hessian(trainer):
    torch.manual_seed(1)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1)
    ).double()
    x, y = torch.randn(40, 2, dtype=torch.float64), torch.randn(40, dtype=torch.float64)
    batches = batches_of(x, y, 8)
    params = list(mlp.parameters())
    n = sum(p.numel() for p in params)
    hvp = hessian_vector_product(mlp, batches, squared_loss)
    full = np.stack([flat(hvp(unflat(np.eye(n)[i], params))) for i in range(n)])
    assert np.linalg.eigvalsh(full).min() < 0  # not convex: LiSSA would need damping
    extractor = GradientExtractor(mlp, squared_loss)
    test = {"t": extractor.dataset_gradient(trainer, batches[:2])}
    train = [("z", extractor.dataset_gradient(trainer, batches[2:]))]
    eigenbasis = arnoldi_eigenbasis(hvp, [torch.randn_like(p) for p in params], n, n)
    ours = hif_arnoldi_scores(test, train, eigenbasis)
    g = flat(train[0][1])
    expected = flat(test["t"]) @ np.linalg.solve(full, g / np.linalg.norm(g))
    assert ours[("z", "t")] == pytest.approx(expected, rel=1e-4)


# ---- signs: removing a helpful dataset raises the test loss -------------------------


def test_every_baseline_has_the_sign_of_leave_out_retraining(trainer):
    """Dataset 'good' follows the test's rule y = 2x; 'bad' follows y = -2x.
    Retraining without 'good' raises the test loss, without 'bad' lowers it."""
    rng = np.random.default_rng(0)
    x = {name: rng.normal(size=(n, 1)) for name, n in (("good", 30), ("bad", 10), ("test", 20))}
    y = {"good": 2 * x["good"][:, 0], "bad": -2 * x["bad"][:, 0], "test": 2 * x["test"][:, 0]}

    def fit(names):
        xs = np.concatenate([x[n] for n in names])
        return np.linalg.lstsq(xs, np.concatenate([y[n] for n in names]), rcond=None)[0]

    def test_loss(w):
        return float(0.5 * np.sum((x["test"] @ w - y["test"]) ** 2))

    theta0 = fit(["good", "bad"])
    truth = {
        n: test_loss(fit([m for m in ("good", "bad") if m != n])) - test_loss(theta0)
        for n in ("good", "bad")
    }
    assert truth["good"] > 0 > truth["bad"]

    model = torch.nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        model.weight.fill_(float(theta0[0]))
    data = {n: batches_of(torch.from_numpy(x[n]), torch.from_numpy(y[n]), 8) for n in x}
    extractor = GradientExtractor(model, squared_loss)
    test = {"test": extractor.dataset_gradient(trainer, data["test"])}
    train = [(n, extractor.dataset_gradient(trainer, data[n])) for n in ("good", "bad")]
    hvp = hessian_vector_product(model, data["good"] + data["bad"], squared_loss)
    scale = 2.0 * float(np.mean(np.concatenate([x["good"], x["bad"]]) ** 2))
    methods = {
        "graddot": graddot_scores(test, train),
        "gradcos": gradcos_scores(test, train),
        "hif_lissa": hif_scores(test, train, lambda v: lissa(hvp, v, 100, 0.0, scale)),
        "hif_arnoldi": hif_arnoldi_scores(
            test, train, arnoldi_eigenbasis(hvp, [torch.ones(1, 1, dtype=torch.float64)], 1, 1)
        ),
    }
    for method, scores in methods.items():
        for name in ("good", "bad"):
            assert np.sign(scores[(name, "test")]) == np.sign(truth[name]), (method, name)


# ---- invariances on a tiny GPT-2 -------------------------------------------------


@pytest.fixture(scope="module")
def gpt2():
    from tests.conftest import TINY_GPT2

    torch.manual_seed(0)
    model, tokenizer = build_model({"config": dict(TINY_GPT2["config"]), "tokenizer": "bytes"})
    model.eval()
    datamodule = MixtureDataModule(**synthetic_specs(n=6)).prepare(tokenizer)
    return model, datamodule


def test_graddot_is_the_sum_of_per_example_dot_products(gpt2, trainer):
    model, dm = gpt2
    params = [p for p in model.parameters() if p.requires_grad]
    extractor = GradientExtractor(model)
    test_examples = list(dm.examples("test"))
    test = {
        "test": extractor.dataset_gradient(
            trainer, EvalSet.build("t", test_examples, dm.collator, 4).batches
        )
    }
    train_examples = list(dm.examples("train_2"))
    train = [
        (
            "train_2",
            extractor.dataset_gradient(
                trainer, EvalSet.build("z", train_examples, dm.collator, 4).batches
            ),
        )
    ]
    ours = graddot_scores(test, train)[("train_2", "test")]

    def example_gradient(example):
        loss = example_losses(model, dm.collator([example])).sum()
        return torch.autograd.grad(loss, params)

    test_gradient = [sum(parts) for parts in zip(*(example_gradient(e) for e in test_examples))]
    per_example = sum(dot(example_gradient(e), test_gradient) for e in train_examples)
    assert ours == pytest.approx(per_example, rel=1e-5)


def test_one_big_batch_equals_many_small_ones(gpt2, trainer):
    model, dm = gpt2
    examples = list(dm.examples("train_1")) + list(dm.examples("train_3"))
    extractor = GradientExtractor(model)
    big = extractor.dataset_gradient(trainer, [dm.collator(examples)])
    for size in (1, 5):
        small = extractor.dataset_gradient(
            trainer, EvalSet.build("z", examples, dm.collator, size).batches
        )
        for a, b in zip(big, small):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert norm(big) > 0


def test_gradcos_normalises_the_training_gradient(regression, trainer):
    test, train = regression.gradients(trainer)
    train = dict(train)
    dots = graddot_scores(test, train.items())
    for (tr, te), value in gradcos_scores(test, train.items()).items():
        assert value == pytest.approx(dots[(tr, te)] / norm(train[tr]), rel=1e-12)
    for (tr, te), value in gradcos_scores(test, train.items(), normalize="both").items():
        assert value == pytest.approx(dots[(tr, te)] / norm(train[tr]) / norm(test[te]), rel=1e-12)
        assert -1 <= value <= 1


# ---- bad input -----------------------------------------------------------------------


def test_arnoldi_refuses_more_eigenpairs_than_iterations(regression):
    hvp = hessian_vector_product(regression.model, regression.hessian_batches(), squared_loss)
    start = [torch.ones_like(p) for p in regression.model.parameters()]
    with pytest.raises(UserError, match=r"top_k \(p=6\) cannot exceed iterations \(n=5\)"):
        arnoldi_eigenbasis(hvp, start, iterations=5, top_k=6)


def test_a_diverging_lissa_is_reported_not_turned_into_nan(regression):
    hvp = hessian_vector_product(regression.model, regression.hessian_batches(), squared_loss)
    largest = np.linalg.eigvalsh(regression.hessian()).max()
    vector = [torch.ones_like(p) for p in regression.model.parameters()]
    too_small = largest / 4  # |1 - lambda_max / scale| = 3
    with pytest.raises(UserError, match=f"scale={too_small}.*larger baselines.lissa.scale"):
        lissa(hvp, vector, depth=10, damping=0.0, scale=too_small)


def test_unknown_method_names_are_refused_with_the_known_ones():
    assert resolve_methods("graddot, tracin") == ["graddot", "tracin"]
    with pytest.raises(
        UserError, match="'gradfoo'.*graddot, gradcos, tracin, hif_lissa, hif_arnoldi"
    ):
        resolve_methods(["graddot", "gradfoo"])
    assert set(METHODS) == {"graddot", "gradcos", "tracin", "hif_lissa", "hif_arnoldi"}
