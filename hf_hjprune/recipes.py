"""Training recipes: one typed, validated dataclass per run, read from YAML.

A recipe is a YAML mapping of [`Recipe`] fields. It is loaded by name (the files shipped in
`hf_hjprune/recipes/`) or from a path, then overridden with `key=value` strings, where the value is
YAML and a dotted key reaches into a mapping field::

    load_recipe("tiny_asr", ["max_steps=50", "target=0.3", "data_options.num_train=64"])
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import HJPruneInputError, did_you_mean, unknown_keys_message
from .pruner import VARIANTS
from .start_models import TINY_PREFIX as TINY_PREFIX  # re-exported: it was defined here before start_models
from .start_models import resolve_model

RECIPES_DIR = Path(__file__).parent / "recipes"

TASKS = ("asr", "slu")
MIXED_PRECISION = ("no", "fp16", "bf16")
INITS = ("pretrained", "random")
TARGET_REFERENCES = ("start", "original")
OOD_TESTS = ("flite",)
SEP_TARGET_KEYS = ("cnn", "transformer")


@dataclass
class Recipe:
    """Everything one training run needs. Steps count optimizer updates.

    Attributes:
        task: `"asr"` (CTC on `text`) or `"slu"` (utterance classification of `intent`).
        model: A Hub id or local path of a wav2vec2 / HuBERT / WavLM checkpoint (stock or HJPruned),
            `pretrained:NAME` for a start model pretrained here and shipped with the package (e.g.
            `pretrained:tiny-hubert-ssl`), or `tiny:wav2vec2`, `tiny:hubert`, `tiny:wavlm` to build a small
            randomly initialised model.
        model_config: Config attributes to override (for `tiny:` models, their sizes). On a checkpoint,
            only settings that leave the shapes of its weights alone (dropout, masking, ...): a
            change of a body weight's shape is an error.
        new_vocabulary: Train a new task head over the training data's characters (ASR) or intents
            (SLU) instead of the start model's own vocabulary or labels, which are otherwise kept
            and must cover the training data.
        init: `"pretrained"` (the start model's weights) or `"random"` (its architecture with new
            weights: the from-scratch baseline of the same shape).
        data: A data source of `hf_hjprune.data.sources.load_source`.
        data_options: Keyword options of that source.
        ood_test: `"flite"`: also evaluate the final model on the test split spoken by flite, a
            synthesizer never trained on (the `"synthetic"` source only; skipped with a warning where
            flite is not installed).
        cache_audio: Keep decoded audio in memory (small corpora only); otherwise decode on access.
        max_audio_seconds: Longer files are skipped (counted as `too_long` in `summary.json`).
        group_by_length: Batch utterances of similar lengths (shuffled groups of 50 batches).
        variant: `"none"` (dense fine-tuning) or an `HJPruner` variant.
        target: Relative reduction to reach, in (0, 1); for `"sep"` also `{cnn: ..., transformer: ...}`.
        prune_blocks: Also gate whole attention and FFN blocks.
        round_to: The pruned model keeps a multiple of this many conv channels and FFN units per
            layer (8: fast GEMM and conv shapes; heads are not rounded), chosen by the gates.
        warmup_ratio: Fraction of `max_steps` over which the model learning rate warms up (and the
            pruning target ramps up, unless `target_warmup_ratio` is set).
        warmup_steps: The same in steps; overrides `warmup_ratio` when set.
        target_warmup_ratio: Fraction of `max_steps` over which the pruning target ramps up from 0.
        target_reference: What the target is relative to: `"start"` (the start model) or
            `"original"` (the unpruned model an HJPruned start model was cut from, as recorded in its
            config: continuing to prune to a higher total reduction).
        target_tolerance: At the end of pruning, units are taken away (lowest gate logit first) or given
            back until the reduction is within this of the target, so a run that ends off target still
            lands on it (`None`: export the gates as they are).
        final_finetune_steps: After pruning, train the fixed pruned structure for this many more
            steps (its own warm-up and decay; 0: none).
        final_finetune_learning_rate: Peak learning rate of the final fine-tune (default:
            `learning_rate`).
        distillation: Learn from a dense teacher too (`hf_hjprune.distill.DistillationConfig`:
            `teacher`, `temperature`, `logits_weight`, `hidden_weight`, `hidden_layers`,
            `task_weight`), while pruning and in the final fine-tune.
        seconds: Audio length for MACs counts (attention cost grows with its square).
        max_steps: Number of optimizer updates.
        batch_size: Utterances per batch and process.
        eval_batch_size: The same for evaluation (default: `batch_size`).
        gradient_accumulation_steps: Batches per optimizer update.
        learning_rate: Peak learning rate of the model weights (linear warm-up and decay).
        head_learning_rate: The same for the task head (`lm_head`, or `projector`, `classifier` and
            `layer_weights`), which starts from scratch; default: `learning_rate`.
        gate_learning_rate: Constant learning rate of the gate logits.
        lambda_learning_rate: Constant learning rate (ascent) of the Lagrange multipliers.
        lambda_clip: Keep λ1 within ±this (anti-windup against overshooting the target); None: unbounded.
        weight_decay: AdamW weight decay of the model weights.
        max_grad_norm: Gradient clipping of the model weights.
        eval_steps: Evaluate on validation every this many steps (0: only at the end).
        checkpoint_steps: Save a resumable checkpoint every this many steps (0: never).
        keep_checkpoints: How many of the latest checkpoints to keep (0: all).
        log_steps: Log training metrics every this many steps.
        seed: Seed of initialisation, data order, gate sampling and dropout.
        mixed_precision: `"no"`, `"fp16"` or `"bf16"` (passed to `accelerate.Accelerator`).
        num_workers: DataLoader worker processes.
        output_dir: Where metrics, checkpoints, the final model and `summary.json` go.
    """

    task: str = "asr"
    model: str = "tiny:wav2vec2"
    model_config: dict[str, Any] = field(default_factory=dict)
    new_vocabulary: bool = False
    init: str = "pretrained"
    data: str = "synthetic"
    data_options: dict[str, Any] = field(default_factory=dict)
    ood_test: str | None = None
    cache_audio: bool = False
    max_audio_seconds: float = 60.0
    group_by_length: bool = True
    variant: str = "macs"
    target: float | dict[str, float] = 0.4
    prune_blocks: bool = False
    round_to: int = 1
    warmup_ratio: float = 0.1
    warmup_steps: int | None = None
    target_warmup_ratio: float | None = None
    target_reference: str = "start"
    target_tolerance: float | None = 0.01
    final_finetune_steps: int = 0
    final_finetune_learning_rate: float | None = None
    distillation: dict[str, Any] | None = None
    seconds: float = 1.0
    max_steps: int = 1000
    batch_size: int = 8
    eval_batch_size: int | None = None
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-4
    head_learning_rate: float | None = None
    gate_learning_rate: float = 2e-2
    lambda_learning_rate: float = 2e-2
    lambda_clip: float | None = None
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    eval_steps: int = 0
    checkpoint_steps: int = 0
    keep_checkpoints: int = 0
    log_steps: int = 10
    seed: int = 0
    mixed_precision: str = "no"
    num_workers: int = 0
    output_dir: str = "outputs/run"

    def __post_init__(self) -> None:
        validate_fields(self)
        named_choices = (
            ("task", TASKS),
            ("variant", tuple(VARIANTS)),
            ("mixed_precision", MIXED_PRECISION),
            ("init", INITS),
        )
        for name, choices in named_choices:
            value = getattr(self, name)
            if value not in choices:
                raise HJPruneInputError(
                    f"{name} must be one of {', '.join(choices)}, got {value!r}{did_you_mean(value, choices)}"
                )
        resolve_model(
            self.model
        )  # an unknown `tiny:` or `pretrained:` name fails here, listing the known ones
        if self.ood_test is not None and (self.ood_test not in OOD_TESTS or self.data != "synthetic"):
            raise HJPruneInputError(
                f"ood_test must be one of {', '.join(OOD_TESTS)} with data: synthetic, got {self.ood_test!r}"
            )
        for name in ("max_steps", "batch_size", "gradient_accumulation_steps", "log_steps", "round_to"):
            if getattr(self, name) < 1:
                raise HJPruneInputError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("eval_steps", "checkpoint_steps", "keep_checkpoints", "num_workers", "weight_decay"):
            if getattr(self, name) < 0:
                raise HJPruneInputError(f"{name} must not be negative, got {getattr(self, name)}")
        for name in (
            "learning_rate",
            "head_learning_rate",
            "gate_learning_rate",
            "lambda_learning_rate",
            "max_grad_norm",
            "seconds",
            "max_audio_seconds",
        ):
            value = getattr(self, name)
            if value is not None and not value > 0:  # also rejects NaN
                raise HJPruneInputError(f"{name} must be positive, got {value}")
        if self.eval_batch_size is not None and self.eval_batch_size < 1:
            raise HJPruneInputError(f"eval_batch_size must be at least 1, got {self.eval_batch_size}")
        if not 0.0 <= self.warmup_ratio <= 1.0:
            raise HJPruneInputError(f"warmup_ratio must be in [0, 1], got {self.warmup_ratio}")
        if self.target_warmup_ratio is not None and not 0.0 <= self.target_warmup_ratio <= 1.0:
            raise HJPruneInputError(f"target_warmup_ratio must be in [0, 1], got {self.target_warmup_ratio}")
        if self.target_reference not in TARGET_REFERENCES:
            raise HJPruneInputError(
                f"target_reference must be one of {', '.join(TARGET_REFERENCES)}, got {self.target_reference!r}"
            )
        if self.final_finetune_steps < 0:
            raise HJPruneInputError(
                f"final_finetune_steps must not be negative, got {self.final_finetune_steps}"
            )
        if self.final_finetune_steps and self.variant == "none":
            raise HJPruneInputError(
                "final_finetune_steps is for pruning runs; with variant: none, raise max_steps"
            )
        if self.distillation is not None:
            from .distill import DistillationConfig

            DistillationConfig.from_dict(self.distillation)  # checks keys and values now
        if self.warmup_steps is not None and not 0 <= self.warmup_steps <= self.max_steps:
            raise HJPruneInputError(
                f"warmup_steps must be in [0, max_steps={self.max_steps}], got {self.warmup_steps}"
            )
        self._check_target()

    def _check_target(self) -> None:
        """A relative reduction in (0, 1); for `sep`, a float or `{cnn: ..., transformer: ...}`."""
        if isinstance(self.target, dict):
            if self.variant != "sep":
                raise HJPruneInputError(
                    f"a {{cnn, transformer}} target is for the 'sep' variant, not {self.variant!r}"
                )
            unknown = set(self.target) - set(SEP_TARGET_KEYS)
            if unknown:
                raise HJPruneInputError(unknown_keys_message(unknown, SEP_TARGET_KEYS, "target"))
            missing = [key for key in SEP_TARGET_KEYS if key not in self.target]
            if missing:
                raise HJPruneInputError(
                    f"the 'sep' target needs both cnn and transformer; missing: {missing}"
                )
            values = {f"target.{key}": value for key, value in self.target.items()}
        else:
            values = {"target": self.target}
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
                raise HJPruneInputError(f"{name} must be a relative reduction in (0, 1), got {value!r}")
        if isinstance(self.target, dict):
            self.target = {key: float(value) for key, value in self.target.items()}

    @property
    def num_warmup_steps(self) -> int:
        """`warmup_steps`, or `warmup_ratio` of `max_steps`."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return round(self.warmup_ratio * self.max_steps)

    @property
    def num_target_warmup_steps(self) -> int:
        """Steps over which the pruning target ramps up: `target_warmup_ratio` of `max_steps`, or
        the learning-rate warm-up when it is not set."""
        if self.target_warmup_ratio is None:
            return self.num_warmup_steps
        return round(self.target_warmup_ratio * self.max_steps)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "recipe") -> Recipe:
        """A recipe from a mapping.

        Raises:
            HJPruneInputError: An unknown key (with the closest known one), a value of the wrong type or
                out of range; the message starts with `source`.
        """
        if not isinstance(values, dict):
            raise HJPruneInputError(
                f"{source} must be a mapping of recipe fields, got {type(values).__name__}"
            )
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = set(values) - set(known)
        if unknown:
            raise HJPruneInputError(unknown_keys_message(unknown, known, source, what="recipe key"))
        try:
            return cls(**values)
        except HJPruneInputError as err:
            raise HJPruneInputError(f"{source}: {err}") from None


def available_recipes() -> list[str]:
    """Names of the recipes shipped with the package."""
    return sorted(path.stem for path in RECIPES_DIR.glob("*.yaml"))


def load_recipe(name_or_path: str | os.PathLike, overrides: Sequence[str] = ()) -> Recipe:
    """Load a shipped recipe by name, or a YAML file, and apply `key=value` overrides.

    Raises:
        HJPruneInputError: Unknown recipe name (the message lists the shipped ones), invalid YAML,
            unknown key, or a value of the wrong type or out of range.
    """
    values, source = read_recipe_values(name_or_path, overrides, RECIPES_DIR)
    return Recipe.from_dict(values, source=source)


def read_recipe_values(
    name_or_path: str | os.PathLike, overrides: Sequence[str], directory: Path
) -> tuple[dict[str, Any], str]:
    """The mapping of a YAML file, or of the recipe `directory/{name}.yaml`, with `key=value`
    overrides applied; and the file it came from."""
    path = Path(name_or_path)
    if not path.is_file():
        path = directory / f"{name_or_path}.yaml"
        if not path.is_file():
            name, shipped = os.fspath(name_or_path), sorted(p.stem for p in directory.glob("*.yaml"))
            raise HJPruneInputError(
                f"unknown recipe {name!r}{did_you_mean(name, shipped)}: not a YAML file, nor one of the shipped "
                f"recipes: {', '.join(shipped)}"
            )
    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f) or {}
    except yaml.YAMLError as err:
        raise HJPruneInputError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(values, dict):
        raise HJPruneInputError(f"{path} must hold a mapping of recipe fields")
    for override in overrides:
        apply_override(values, override)
    return values, str(path)


def validate_fields(recipe: Any) -> None:
    """Check every field of a recipe dataclass against its type hint, converting ints to floats."""
    hints = typing.get_type_hints(type(recipe))
    for f in dataclasses.fields(recipe):
        setattr(recipe, f.name, _coerce(f.name, getattr(recipe, f.name), hints[f.name]))


def apply_override(values: dict[str, Any], override: str) -> None:
    """Apply one `key=value` (or `mapping_key.sub_key=value`) override to recipe values in place."""
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise HJPruneInputError(f"override {override!r} is not of the form key=value")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as err:
        raise HJPruneInputError(f"override {override!r}: the value is not valid YAML ({err})") from None
    *parents, leaf = key.strip().split(".")
    target = values
    for parent in parents:
        if not isinstance(target.get(parent), dict):
            target[parent] = {}
        target = target[parent]
    target[leaf] = value


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Check `value` against a field's type hint, converting ints and numeric strings to floats."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    for option in options:
        origin = typing.get_origin(option) or option
        if origin is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:
                return float(value)  # YAML reads 2e-4 (no dot) as a string
            except ValueError:
                continue
        if origin is dict and isinstance(value, dict):
            return dict(value)
        if origin is list and isinstance(value, list):
            (item_hint,) = typing.get_args(option) or (Any,)
            return [value_ if item_hint is Any else _coerce(name, value_, item_hint) for value_ in value]
        if origin in (int, str, bool) and type(value) is origin:
            return value
    expected = " or ".join(getattr(option, "__name__", str(option)) for option in options)
    raise HJPruneInputError(f"{name} must be {expected}, got {value!r} ({type(value).__name__})")
