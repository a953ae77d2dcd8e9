"""Training recipes: one typed, validated dataclass per run, read from YAML.

A recipe is a YAML mapping of [`Recipe`] fields. It is loaded by name (the files shipped in
`hf_hjprune/recipes/`) or from a path, then overridden with `key=value` strings, where the value is
YAML and a dotted key reaches into a mapping field::

    load_recipe("tiny_asr", ["max_steps=50", "target=0.3", "data_options.num_train=64"])
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import textwrap
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import HJPruneInputError, did_you_mean, unknown_keys_message
from .pruner import DENSE, TARGET_REFERENCES, VARIANTS
from .start_models import resolve_model
from .structure import rounding_multiples

RECIPES_DIR = Path(__file__).parent / "recipes"

TASKS = ("asr", "slu")
MIXED_PRECISION = ("no", "fp16", "bf16", "auto")
INITS = ("pretrained", "random")
OOD_TESTS = ("flite",)
SEP_TARGET_KEYS = ("cnn", "transformer")


_R = TypeVar("_R", bound="RecipeBase")


class RecipeBase:
    """What the recipe dataclasses ([`Recipe`], `hf_hjprune.pretrain.PretrainRecipe`) share: reading from
    and writing to a mapping, range checks, and the listing of their fields for `--help`.

    Every field explains itself in its metadata, `field(default=..., metadata={"help": ...})` (as
    transformers' example scripts do): that text is the one place its meaning is written.
    """

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[_R], values: dict[str, Any], source: str = "recipe") -> _R:
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
            raise HJPruneInputError(cls._unknown_keys_message(unknown, known, source))
        try:
            return cls(**values)
        except HJPruneInputError as err:
            raise HJPruneInputError(f"{source}: {err}") from None

    @classmethod
    def _unknown_keys_message(cls, unknown: set[str], known: list[str], source: str) -> str:
        return unknown_keys_message(unknown, known, source, what="recipe key")

    @classmethod
    def fields_help(cls) -> str:
        """Every field with its default and help, as `--help` shows them after the options."""
        lines = ["recipe fields (YAML keys of a recipe; --set KEY=VALUE overrides one), with their defaults:"]
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            lines.append(f"  {f.name}: {_yaml_value(default)}")
            lines += textwrap.wrap(f.metadata["help"], 100, initial_indent=" " * 6, subsequent_indent=" " * 6)
        return "\n".join(lines)

    def _check_choices(self, choices: dict[str, Sequence[str]]) -> None:
        for name, options in choices.items():
            value = getattr(self, name)
            if value not in options:
                raise HJPruneInputError(
                    f"{name} must be one of {', '.join(options)}, got {value!r}{did_you_mean(value, options)}"
                )

    def _check_at_least_one(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise HJPruneInputError(f"{name} must be at least 1, got {value}")

    def _check_not_negative(self, *names: str) -> None:
        for name in names:
            if getattr(self, name) < 0:
                raise HJPruneInputError(f"{name} must not be negative, got {getattr(self, name)}")

    def _check_ratio(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise HJPruneInputError(f"{name} must be in [0, 1], got {value}")


def _yaml_value(value: Any) -> str:
    """A default as it is written in a recipe (flow-style YAML)."""
    return yaml.safe_dump(value, default_flow_style=True, width=math.inf).removesuffix("\n...\n").strip()


@dataclass
class Recipe(RecipeBase):
    """Everything one training run needs. Steps count optimizer updates.

    Each field explains itself in its metadata (`help`), which `hjprune train --help` lists.
    """

    task: str = field(
        default="asr",
        metadata={"help": '"asr" (CTC on `text`) or "slu" (utterance classification of `intent`).'},
    )
    model: str = field(
        default="tiny:wav2vec2",
        metadata={
            "help": "A Hub id or local path of a wav2vec2 / HuBERT / WavLM checkpoint (stock or HJPruned), "
            "`pretrained:NAME` for a start model pretrained here and shipped with the package (e.g. "
            "`pretrained:tiny-hubert-ssl`), or `tiny:wav2vec2`, `tiny:hubert`, `tiny:wavlm` to build a small "
            "randomly initialised model."
        },
    )
    model_config: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "Config attributes to override (for `tiny:` models, their sizes). On a checkpoint, only "
            "settings that leave the shapes of its weights alone (dropout, masking, ...): a change of a body "
            "weight's shape is an error."
        },
    )
    new_vocabulary: bool = field(
        default=False,
        metadata={
            "help": "Train a new task head over the training data's characters (ASR) or intents (SLU) instead "
            "of the start model's own vocabulary or labels, which are otherwise kept and must cover the "
            "training data."
        },
    )
    init: str = field(
        default="pretrained",
        metadata={
            "help": '"pretrained" (the start model\'s weights) or "random" (its architecture with new weights: '
            "the from-scratch baseline of the same shape)."
        },
    )
    data: str = field(
        default="synthetic", metadata={"help": "A data source of `hf_hjprune.data.sources.load_source`."}
    )
    data_options: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "Keyword options of that source."}
    )
    ood_test: str | None = field(
        default=None,
        metadata={
            "help": '"flite": also evaluate the final model on the test split spoken by flite, a synthesizer '
            'never trained on (the "synthetic" source only; skipped with a warning where flite is not '
            "installed)."
        },
    )
    cache_audio: bool = field(
        default=False,
        metadata={"help": "Keep decoded audio in memory (small corpora only); otherwise decode on access."},
    )
    max_audio_seconds: float = field(
        default=60.0,
        metadata={"help": "Longer files are skipped (counted as `too_long` in `summary.json`)."},
    )
    speed_perturbation: list[float] | None = field(
        default=None,
        metadata={
            "help": "Speed factors, one drawn uniformly per training utterance and play (tempo and pitch "
            "together, by resampling), as Kaldi's and ESPnet's 3-way speed perturbation: e.g. [0.9, 1.0, 1.1]. "
            "Evaluation hears the audio as it is. null: none."
        },
    )
    group_by_length: bool = field(
        default=True,
        metadata={"help": "Batch utterances of similar lengths (shuffled groups of 50 batches)."},
    )
    variant: str = field(
        default="macs", metadata={"help": '"none" (dense fine-tuning) or an `HJPruner` variant.'}
    )
    freeze_feature_encoder: bool = field(
        default=False,
        metadata={
            "help": "Leave the CNN feature encoder's weights as they start (wav2vec 2.0 fine-tuning, fairseq's "
            "feature_grad_mult 0): no backward pass through the CNN, a third less time per step here. Only "
            'with variant "none" or "transformer": the others gate conv channels.'
        },
    )
    target: float | dict[str, float] = field(
        default=0.4,
        metadata={
            "help": 'Relative reduction to reach, in (0, 1); for "sep" also {cnn: ..., transformer: ...}.'
        },
    )
    prune_blocks: bool = field(default=False, metadata={"help": "Also gate whole attention and FFN blocks."})
    round_to: int | dict[str, int] = field(
        default=1,
        metadata={
            "help": "The pruned model keeps a multiple of this many conv channels and FFN units per layer "
            "(8: fast GEMM shapes; heads are not rounded), chosen by the gates; or one multiple per group, "
            "{conv: 64, ffn: 8} (the fastest conv widths measured here on a CPU with oneDNN)."
        },
    )
    warmup_ratio: float = field(
        default=0.1,
        metadata={
            "help": "Fraction of `max_steps` over which the model learning rate warms up (and the pruning "
            "target ramps up, unless `target_warmup_ratio` is set)."
        },
    )
    warmup_steps: int | None = field(
        default=None, metadata={"help": "The same in steps; overrides `warmup_ratio` when set."}
    )
    target_warmup_ratio: float | None = field(
        default=None,
        metadata={"help": "Fraction of `max_steps` over which the pruning target ramps up from 0."},
    )
    target_reference: str = field(
        default="start",
        metadata={
            "help": 'What the target is relative to: "start" (the start model) or "original" (the unpruned '
            "model an HJPruned start model was cut from, as recorded in its config: continuing to prune to a "
            "higher total reduction)."
        },
    )
    target_tolerance: float | None = field(
        default=0.01,
        metadata={
            "help": "At the end of pruning, units are taken away (lowest gate logit first) or given back until "
            "the reduction is within this of the target, so a run that ends off target still lands on it "
            "(null: export the gates as they are)."
        },
    )
    final_finetune_steps: int = field(
        default=0,
        metadata={
            "help": "After pruning, train the fixed pruned structure for this many more steps (its own warm-up "
            "and decay; 0: none)."
        },
    )
    final_finetune_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Peak learning rate of the final fine-tune (default: `learning_rate`)."},
    )
    distillation: dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": "Learn from a dense teacher too (`hf_hjprune.distill.DistillationConfig`: `teacher`, "
            "`temperature`, `logits_weight`, `hidden_weight`, `hidden_layers`, `task_weight`), while pruning "
            "and in the final fine-tune."
        },
    )
    seconds: float = field(
        default=1.0, metadata={"help": "Audio length for MACs counts (attention cost grows with its square)."}
    )
    max_steps: int = field(default=1000, metadata={"help": "Number of optimizer updates."})
    batch_size: int = field(default=8, metadata={"help": "Utterances per batch and process."})
    eval_batch_size: int | None = field(
        default=None, metadata={"help": "The same for evaluation (default: `batch_size`)."}
    )
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimizer update."})
    learning_rate: float = field(
        default=2e-4, metadata={"help": "Peak learning rate of the model weights (linear warm-up and decay)."}
    )
    head_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "The same for the task head (`lm_head`, or `projector`, `classifier` and `layer_weights`), "
            "which starts from scratch; default: `learning_rate`."
        },
    )
    gate_learning_rate: float = field(
        default=2e-2, metadata={"help": "Constant learning rate of the gate logits."}
    )
    gate_init_log_alpha: float = field(
        default=2.0,
        metadata={
            "help": "Initial gate logit. At 2 a unit is non-zero with probability 0.97, but a training sample "
            "scales 40% of the units below 1 (by 0.86 on average); higher starts with less noise, further "
            "from pruning."
        },
    )
    lambda_learning_rate: float = field(
        default=2e-2, metadata={"help": "Constant learning rate (ascent) of the Lagrange multipliers."}
    )
    lambda_clip: float | None = field(
        default=None,
        metadata={
            "help": "Keep λ1 within ±this (anti-windup against overshooting the target); null: unbounded."
        },
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay of the model weights."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping of the model weights."})
    eval_steps: int = field(
        default=0, metadata={"help": "Evaluate on validation every this many steps (0: only at the end)."}
    )
    checkpoint_steps: int = field(
        default=0, metadata={"help": "Save a resumable checkpoint every this many steps (0: never)."}
    )
    keep_checkpoints: int = field(
        default=0, metadata={"help": "How many of the latest checkpoints to keep (0: all)."}
    )
    log_steps: int = field(default=10, metadata={"help": "Log training metrics every this many steps."})
    seed: int = field(
        default=0, metadata={"help": "Seed of initialisation, data order, gate sampling and dropout."}
    )
    mixed_precision: str = field(
        default="no",
        metadata={
            "help": '"no", "fp16" or "bf16" (passed to `accelerate.Accelerator`), or "auto": bf16 where the '
            "device computes it natively (a GPU with bf16, a CPU with AVX512-BF16 or AMX), fp32 elsewhere. "
            "`summary.json` records the precision used (`mixed_precision`)."
        },
    )
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    output_dir: str = field(
        default="outputs/run",
        metadata={"help": "Where metrics, checkpoints, the final model and `summary.json` go."},
    )

    def __post_init__(self) -> None:
        validate_fields(self)
        self._check_choices(
            {"task": TASKS, "variant": tuple(VARIANTS), "mixed_precision": MIXED_PRECISION, "init": INITS}
        )
        resolve_model(
            self.model
        )  # an unknown `tiny:` or `pretrained:` name fails here, listing the known ones
        if self.ood_test is not None and (self.ood_test not in OOD_TESTS or self.data != "synthetic"):
            raise HJPruneInputError(
                f"ood_test must be one of {', '.join(OOD_TESTS)} with data: synthetic, got {self.ood_test!r}"
            )
        self._check_at_least_one("max_steps", "batch_size", "gradient_accumulation_steps", "log_steps")
        rounding_multiples(self.round_to)  # an unknown group or a multiple below 1 fails here
        self._check_not_negative(
            "eval_steps", "checkpoint_steps", "keep_checkpoints", "num_workers", "weight_decay"
        )
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
        self._check_at_least_one("eval_batch_size")
        if self.speed_perturbation is not None and not (
            self.speed_perturbation and all(0.5 <= factor <= 2.0 for factor in self.speed_perturbation)
        ):
            raise HJPruneInputError(
                f"speed_perturbation must list factors between 0.5 and 2.0, got {self.speed_perturbation!r}"
            )
        self._check_ratio("warmup_ratio", "target_warmup_ratio")
        self._check_choices({"target_reference": TARGET_REFERENCES})
        self._check_not_negative("final_finetune_steps")
        if self.final_finetune_steps and self.variant == DENSE:
            raise HJPruneInputError(
                "final_finetune_steps is for pruning runs; with variant: none, raise max_steps"
            )
        if self.freeze_feature_encoder and self.variant not in (DENSE, "transformer"):
            raise HJPruneInputError(
                f"freeze_feature_encoder: the {self.variant!r} variant prunes conv channels and needs the CNN's "
                'backward pass; use it with variant "none" or "transformer"'
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


def available_recipes(directory: Path = RECIPES_DIR) -> list[str]:
    """Names of the recipes shipped with the package (the training ones, or those in `directory`)."""
    return sorted(path.stem for path in directory.glob("*.yaml"))


def add_recipe_arguments(
    parser: argparse.ArgumentParser, recipe_class: type[RecipeBase], directory: Path
) -> None:
    """The arguments that `hjprune train` and `hjprune pretrain` share: a recipe of `recipe_class` (a
    file, or a name in `directory`), `--set`, `--output-dir` and `--resume`. The recipe's fields, with
    their defaults and help, are listed after the options."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keeps the lines of the listing
    parser.epilog = recipe_class.fields_help()
    parser.add_argument(
        "recipe",
        help=f"a YAML recipe file, or the name of a shipped recipe: {', '.join(available_recipes(directory))}",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe field (YAML value; dotted keys reach into mappings, e.g. data_options.num_train=64)",
    )
    parser.add_argument("--output-dir", help="where the run writes (same as --set output_dir=DIR)")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoint in the output dir"
    )


def recipe_overrides(args: argparse.Namespace) -> list[str]:
    """The command line's `--set` overrides, with `--output-dir` as the last one."""
    return [*args.overrides, *([f"output_dir={args.output_dir}"] if args.output_dir else [])]


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
            name, shipped = os.fspath(name_or_path), available_recipes(directory)
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
