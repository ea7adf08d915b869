"""Model loading: from configs, from folders, the byte tokenizer, bad input."""

from __future__ import annotations

import pytest
import torch

from lit_untrac.errors import UserError
from lit_untrac.models import ModelSpec, byte_tokenizer, load_model, load_tokenizer, max_positions


def test_byte_tokenizer_round_trips_any_text():
    tok = byte_tokenizer()
    text = "Identify 'x'.\nChoices: a. ünïcode ✓"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.encode("utf-8"))
    assert tok.decode(ids) == text
    assert len(tok) == 258 and tok.pad_token_id != tok.eos_token_id


def test_config_model_is_float32_in_train_mode_with_the_tokenizer_vocabulary(tiny_spec):
    model, tok = load_model(tiny_spec)
    assert model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.get_input_embeddings().num_embeddings == len(tok)
    assert model.config.eos_token_id == tok.eos_token_id
    assert max_positions(model) == 256


def test_bfloat16_on_request(tiny_spec):
    model, _ = load_model({**tiny_spec, "dtype": "bfloat16"})
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())


def test_export_folder_round_trips(tmp_path, tiny_spec):
    model, tok = load_model(tiny_spec)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, loaded_tok = load_model(str(tmp_path))
    assert loaded.training
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert loaded_tok("abc")["input_ids"] == tok("abc")["input_ids"]


@pytest.mark.slow
@pytest.mark.smollm
def test_the_packaged_model_exports_and_loads_back(tmp_path):
    """A finetuned SmolLM2 (loaded from its GGUF file) saves like any model,
    and the export gives the same logits."""
    pytest.importorskip("gguf")
    model, tok = load_model("smollm2-135m-instruct")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, loaded_tok = load_model(str(tmp_path))
    ids = torch.tensor([tok("What is the number that comes after 600?")["input_ids"]])
    assert loaded_tok.decode(ids[0]) == tok.decode(ids[0])
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(ids).logits, model.eval()(ids).logits)


def test_seq2seq_from_config(tiny_t5_spec):
    model, tok = load_model(tiny_t5_spec)
    assert model.config.is_encoder_decoder
    assert model.config.decoder_start_token_id == tok.pad_token_id


def test_vocabulary_smaller_than_tokenizer_is_refused(tiny_spec):
    tiny_spec["config"]["vocab_size"] = 100
    with pytest.raises(UserError, match="has 100 embedding rows but its tokenizer has 258 tokens"):
        load_model(tiny_spec)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("./no/such/folder", "model folder './no/such/folder' does not exist"),
        ("nobody/no-such-model-xyz", "cannot load model 'nobody/no-such-model-xyz'"),
        ({"config": {"n_layer": 1}}, "needs its 'model_type'"),
        ({"config": {"model_type": "not-a-model"}}, "unknown model_type 'not-a-model'"),
        ({}, "needs a name_or_path"),
        ({"name_or_path": "x", "colour": "red"}, r"unknown model field\(s\) \['colour'\]"),
        ({"name_or_path": "x", "dtype": "float8"}, "unknown dtype 'float8'"),
    ],
)
def test_bad_models_name_the_problem(spec, message):
    with pytest.raises(UserError, match=message):
        load_model(spec)


def test_unknown_tokenizer_is_a_clear_error():
    with pytest.raises(UserError, match="cannot load tokenizer 'nobody/no-such-tokenizer'"):
        load_tokenizer("nobody/no-such-tokenizer")


def test_spec_coercion():
    assert ModelSpec.coerce("a/b").name_or_path == "a/b"
    assert ModelSpec.coerce({"name_or_path": "a/b", "dtype": "bfloat16"}).dtype == "bfloat16"
