"""Shared fixtures. Nothing here reaches a network: models are tiny and built
from configs, data is generated or written to temporary files, and W&B is
offline."""

from __future__ import annotations

import os
import tempfile

_CACHE = tempfile.mkdtemp(prefix="lit-untrac-tests-")
os.environ.setdefault("HF_DATASETS_CACHE", os.path.join(_CACHE, "datasets"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("WANDB_SILENT", "true")
# The models under test are tiny: one thread per process is as fast as two on
# a quiet machine and far faster on a busy one, and it keeps the two processes
# of the data-parallel tests from fighting over the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: A GPT-2 small enough to train in seconds, with the offline byte tokenizer.
TINY_GPT2 = {
    "config": {
        "model_type": "gpt2",
        "n_layer": 1,
        "n_head": 2,
        "n_embd": 32,
        "n_positions": 256,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
    },
    "tokenizer": "bytes",
}

#: A T5 of the same spirit, for encoder-decoder paths.
TINY_T5 = {
    "config": {
        "model_type": "t5",
        "d_model": 32,
        "d_ff": 64,
        "d_kv": 8,
        "num_layers": 1,
        "num_decoder_layers": 1,
        "num_heads": 2,
        "dropout_rate": 0.0,
    },
    "tokenizer": "bytes",
}


@pytest.fixture(autouse=True)
def _isolated_wandb(tmp_path, monkeypatch):
    """W&B offline, silent and writing under the test's temporary folder."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    yield
    import sys

    if "wandb" in sys.modules:
        sys.modules["wandb"].finish()


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield


@pytest.fixture
def tiny_spec() -> dict:
    return {"config": dict(TINY_GPT2["config"]), "tokenizer": "bytes"}


@pytest.fixture
def tiny_t5_spec() -> dict:
    return {"config": dict(TINY_T5["config"]), "tokenizer": "bytes"}


def synthetic_specs(n: int = 16, dataset: str = "synthetic_a") -> dict:
    """Train and test specs of a synthetic dataset, ``n`` examples each."""
    train = [
        {
            "name": f"train_{i}",
            "generator": dataset,
            "generator_args": {"split": f"train_{i}", "n": n},
        }
        for i in range(1, 5)
    ]
    test = [{"name": "test", "generator": dataset, "generator_args": {"split": "test", "n": n}}]
    return {"train": train, "test": test}


@pytest.fixture(scope="session")
def theta0(tmp_path_factory) -> str:
    """theta_0 for the commands' tests: a random-init tiny GPT-2 saved with
    save_pretrained (modules that need a trained one define their own)."""
    from lit_untrac.models import load_model

    torch.manual_seed(0)
    model, tokenizer = load_model(TINY_GPT2)
    folder = str(tmp_path_factory.mktemp("theta0"))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
