"""Start models: the one place where a start model's name becomes a config or a model.

A recipe's `model` (and a pretraining recipe's `init_from`) is one of

- `tiny:FAMILY` (`tiny:wav2vec2`, `tiny:hubert`, `tiny:wavlm`): a small model (about 2M parameters,
  `TINY_CONFIG`) built in code with random weights;
- `pretrained:NAME`: a start model that ships with the package, the folder `hf_hjprune/pretrained/NAME`.
  They are small encoders pretrained here with `hjprune pretrain` (each folder's README.md, its model
  card, says with which recipe and command, and how it does downstream);
- anything else: a Hub id or a local path.

`resolve_model` turns a name into what `from_pretrained` takes; `load_start_model` builds the model
that training, benchmarking and pretraining start from.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForAudioClassification,
    AutoModelForCTC,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers import logging as transformers_logging
from transformers.utils import cached_file

from .errors import HJPruneInputError, did_you_mean
from .structure import FAMILIES

TINY_PREFIX = "tiny:"
PRETRAINED_PREFIX = "pretrained:"
PRETRAINED_DIR = Path(__file__).parent / "pretrained"

TINY_CONFIG: dict[str, Any] = dict(
    hidden_size=192,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=768,
    conv_dim=(128, 64, 64, 64, 64, 64, 64),
    num_conv_pos_embeddings=64,
    num_conv_pos_embedding_groups=16,
    classifier_proj_size=64,
    layerdrop=0.0,  # skipped layers would leave DDP with unused parameters
)
"""The `tiny:` models (about 2M parameters): stock conv strides, small widths; `model_config`
overrides any of it."""

AUTO_CLASSES = {"base": AutoModel, "ctc": AutoModelForCTC, "classification": AutoModelForAudioClassification}
"""The Auto class that loads a checkpoint with each head (`structure.HEADS`)."""

LoadingInfo = dict[str, list]
"""What `from_pretrained(..., output_loading_info=True)` reports: missing, unexpected and mismatched keys."""


def available_pretrained_models() -> list[str]:
    """The `pretrained:` names of the shipped start models."""
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(
        PRETRAINED_PREFIX + p.name for p in PRETRAINED_DIR.iterdir() if (p / "config.json").is_file()
    )


def is_tiny(name: str) -> bool:
    """Whether `name` is a `tiny:` model (built in code: no files, random weights)."""
    return name.startswith(TINY_PREFIX)


def resolve_model(name: str) -> str:
    """The path of a shipped `pretrained:` model; any other name (`tiny:`, Hub id, local path) unchanged.

    Raises:
        HJPruneInputError: A `tiny:` name of an unknown family, or a `pretrained:` name that is not
            shipped (the message lists those that are).
    """
    if is_tiny(name):
        if name[len(TINY_PREFIX) :] not in FAMILIES:
            raise HJPruneInputError(
                f"model {name!r}: tiny models are {', '.join(TINY_PREFIX + f for f in FAMILIES)}"
            )
        return name
    if not name.startswith(PRETRAINED_PREFIX):
        return name
    path = PRETRAINED_DIR / name[len(PRETRAINED_PREFIX) :]
    if not (path / "config.json").is_file():
        from .pretrain import ship_command  # it imports this module

        shipped = available_pretrained_models()
        make = ship_command(path.name)
        raise HJPruneInputError(
            f"unknown pretrained start model {name!r}{did_you_mean(name, shipped)}; shipped: "
            f"{', '.join(shipped) or 'none'}" + (f"; make it with `{make}`" if make else "")
        )
    return str(path)


def start_model_file(name: str, filename: str) -> str | None:
    """The path of `filename` saved with the start model (a local folder or a Hub repository), or None."""
    if is_tiny(name):
        return None
    return cached_file(
        resolve_model(name),
        filename,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )


def new_model(family: str, head: str, config: Mapping[str, Any]) -> PreTrainedModel:
    """A stock model of `family` with `head` and random weights, its config built from `config`."""
    family_ = FAMILIES[family]
    return family_.stock_models[head](family_.stock_config(**config))


def load_start_model_config(name: str) -> PretrainedConfig:
    """The config of the start model `name`, as saved (for `tiny:`, `TINY_CONFIG`).

    Raises:
        HJPruneInputError: The model cannot be loaded (not a local checkpoint, not on the Hub, or offline).
    """
    path = resolve_model(name)
    if is_tiny(name):
        return FAMILIES[path[len(TINY_PREFIX) :]].stock_config(**TINY_CONFIG)
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:  # not a checkpoint, not on the Hub, or offline
        raise HJPruneInputError(f"cannot load the model {name!r}: {err}") from err


def load_start_model(
    name: str,
    head: str = "base",
    overrides: Mapping[str, Any] | None = None,
    *,
    random_init: bool = False,
    dtype: torch.dtype | None = None,
) -> tuple[PreTrainedModel, LoadingInfo | None]:
    """The start model `name` with a `head` (`"base"`, `"ctc"` or `"classification"`), its config
    updated with `overrides`.

    A `tiny:` model is built from `TINY_CONFIG`; with `random_init`, any other has the checkpoint's
    architecture with new weights; else the checkpoint's weights are loaded, and those that do not fit
    (a new or resized head) are initialised anew. Transformers' loading table is not printed: the
    returned loading info (None when no weights were loaded) says what was new, for the caller to judge.

    Raises:
        HJPruneInputError: The model cannot be loaded.
    """
    overrides = dict(overrides or {})
    if is_tiny(name):
        return new_model(resolve_model(name)[len(TINY_PREFIX) :], head, {**TINY_CONFIG, **overrides}), None
    path, auto_class = resolve_model(name), AUTO_CLASSES[head]
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # its loading table; the caller judges the loading info
    try:
        if random_init:  # the start model's architecture with new weights
            return auto_class.from_config(AutoConfig.from_pretrained(path, **overrides)), None
        if dtype is not None:
            overrides["dtype"] = dtype
        return auto_class.from_pretrained(
            path, ignore_mismatched_sizes=True, output_loading_info=True, **overrides
        )
    except (OSError, ValueError) as err:  # not a checkpoint, not on the Hub, or offline
        raise HJPruneInputError(f"cannot load the model {name!r}: {err}") from err
    finally:
        transformers_logging.set_verbosity(verbosity)
