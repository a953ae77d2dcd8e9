"""Fine-tune and HJ-prune a wav2vec2 / HuBERT / WavLM model for ASR (CTC) or SLU (intent classification).

One Accelerate training loop, in the style of accelerate's `examples/by_feature`::

    python -m hf_hjprune.train tiny_asr --set max_steps=50
    accelerate launch -m hf_hjprune.train wav2vec2_base_librispeech_hjmac --set output_dir=runs/w2v2
    hjprune train tiny_slu --set variant=sep --set target.cnn=0.3 --set target.transformer=0.5 --resume

A run writes to `output_dir`: `metrics.jsonl` (and TensorBoard logs when tensorboard is installed),
`checkpoints/step_N/` (resumable with `--resume`), the final model with its processor in `model/`, and
`summary.json` (recipe, parameters and MACs, test metrics before and after training, skipped and
converted files). Every file is written crash-safely (`hf_hjprune.atomic`): a run killed at any
moment resumes with `--resume` to the same final weights as an uninterrupted run, and SIGTERM (what
job schedulers send) saves a checkpoint before the process exits.

Map of this module, in order: the pieces of a run's state (`EpochSampler`, `JsonlTracker`, `Progress`)
→ the start model (`load_start_config`, `load_tokenizer`, `load_feature_extractor`, `load_label2id`,
`build_model`) → `evaluate` → data (`build_dataloaders`, `build_ood_dataloader`, `prepare_data`) → one
update (`task_loss`, `build_optimizer`) → accelerator, checkpoints and stopping (`build_accelerator`,
`save_checkpoint`, `StopSignal`, `end_of_step`, `load_checkpoint`, `start_tracking`, `end_trackers`,
`end_process_group`; `hf_hjprune.pretrain` uses them too) → `train()` in numbered phases: `_set_up_run`
(1. checks, 2. data and model, 3. dataloaders and optimizer, 4. resume or evaluate), `_train_loop`
(5. train), `_finish_run` (6. export and summary), sharing a `TrainingRun` → `train_with_final_finetune`
(prune, then fine-tune) and `train_all` (several runs) → `add_arguments` / `run` / `main` (the command line).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import gc
import json
import logging
import multiprocessing
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import jiwer
import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.logging import get_logger
from accelerate.state import AcceleratorState
from accelerate.tracking import GeneralTracker
from accelerate.utils import gather_object, is_tensorboard_available, set_seed
from torch import nn
from torch.utils.data import DataLoader, Sampler
from transformers import (
    PretrainedConfig,
    PreTrainedModel,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Processor,
)

from .atomic import (
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    partial_directory,
    publish_directory,
    read_jsonl,
    read_jsonl_lines,
)
from .cost import count_macs, count_params
from .data.collate import (
    SAMPLING_RATE,
    PreparedSplit,
    SpeechCollator,
    build_feature_extractor,
    build_label2id,
    build_tokenizer,
    normalize_transcript,
    prepare_split,
)
from .data.corpus import SPLITS
from .data.flite import flite_available
from .data.sources import check_columns, check_options, load_flite_test, load_source
from .distill import DistillationConfig, Distiller
from .errors import HJPruneInputError, did_you_mean
from .memory import peak_rss_mib
from .progress import ProgressReporter, quiet_progress_bars
from .pruner import DENSE, HJPruner
from .recipes import RECIPES_DIR, Recipe, add_recipe_arguments, load_recipe, recipe_overrides
from .start_models import load_start_model, load_start_model_config, resolve_model, start_model_file

logger = get_logger(__name__)


def _log(level: int, message: str) -> None:
    """Log on the main process only; unlike accelerate's logger, also before any `Accelerator` exists."""
    if PartialState().is_main_process:
        logger.logger.log(level, message)


HEAD_MODULES = ("lm_head", "projector", "classifier", "layer_weights")
"""Top-level modules (and parameters) of the task heads, which `head_learning_rate` trains. Only
these may start from scratch (or change shape) when a checkpoint is loaded."""

OUTPUT_LAYERS = {"ctc": "lm_head", "classification": "classifier"}
"""The head layer whose rows are the vocabulary or the labels: new with `new_vocabulary`."""

NEW_BODY_WEIGHTS_OK = ("masked_spec_embed",)
"""Body weights that may start from scratch: SpecAugment's learned mask vector, absent from
checkpoints saved with masking off."""

CHECKPOINT_PATTERN = re.compile(r"step_(\d+)")


class EpochSampler(Sampler[int]):
    """A shuffle that depends only on the seed and the epoch, so a resumed run sees the same order.

    With `group_size`, the shuffled items are then sorted by decreasing length within consecutive
    groups of that many items (as transformers' `group_by_length`): batches of similar lengths
    waste less compute on padding.
    """

    def __init__(self, lengths: list[int], seed: int, group_size: int = 0):
        self.lengths = lengths
        self.seed = seed
        self.group_size = group_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.lengths)).tolist()
        if self.group_size:
            groups = (
                order[start : start + self.group_size] for start in range(0, len(order), self.group_size)
            )
            order = [i for group in groups for i in sorted(group, key=lambda i: -self.lengths[i])]
        return iter(order)

    def __len__(self) -> int:
        return len(self.lengths)


class JsonlTracker(GeneralTracker):
    """An Accelerate tracker appending each `accelerator.log` call to a JSON-lines file."""

    name = "jsonl"
    requires_logging_directory = False

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)

    @property
    def tracker(self) -> Path:
        return self.path

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs) -> None:
        """Append one record in a single write: a kill never leaves half of it (see `append_jsonl`)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_jsonl(self.path, {"step": step, **values})


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint through `register_for_checkpointing`."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    train_seconds: float = 0.0
    metrics_before: dict[str, float] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)


LOADING_ARGUMENTS = ("attn_implementation",)
"""`model_config` keys that are `from_pretrained` arguments rather than config attributes."""


def load_start_config(recipe: Recipe) -> PretrainedConfig:
    """The config of the start model; `recipe.model_config` must name attributes it has (or `LOADING_ARGUMENTS`).

    Raises:
        HJPruneInputError: The model cannot be loaded (not a local checkpoint, not on the Hub, or
            offline), or a `model_config` key is not one of its config's attributes.
    """
    config = load_start_model_config(recipe.model)
    known = {**config.to_dict(), **dict.fromkeys(LOADING_ARGUMENTS)}
    unknown = [key for key in recipe.model_config if key not in known and not hasattr(config, key)]
    if unknown:
        hints = ", ".join(f"{key!r}{did_you_mean(key, known)}" for key in unknown)
        raise HJPruneInputError(f"model_config: {type(config).__name__} has no attribute {hints}")
    return config


def uses_own_vocabulary(recipe: Recipe) -> bool:
    """Whether an ASR run keeps the start model's own tokenizer (it has one and `new_vocabulary` is off)."""
    return not recipe.new_vocabulary and start_model_file(recipe.model, "vocab.json") is not None


def missing_characters(tokenizer: Wav2Vec2CTCTokenizer, transcripts: Iterable[str]) -> Counter[str]:
    """Characters of `transcripts` that `tokenizer` would turn into `<unk>`, with their counts."""
    vocabulary = tokenizer.get_vocab()
    counts: Counter[str] = Counter()
    for text in transcripts:
        text = normalize_transcript(text)
        counts.update(text.lower() if getattr(tokenizer, "do_lower_case", False) else text)
    if " " in counts and tokenizer.word_delimiter_token in vocabulary:
        del counts[" "]  # spaces become the word delimiter
    return Counter({char: n for char, n in counts.items() if char not in vocabulary})


def load_tokenizer(recipe: Recipe, transcripts: list[str]) -> Wav2Vec2CTCTokenizer:
    """The start model's own tokenizer (saved with a local checkpoint or in its Hub repository),
    else a new one over the characters of `transcripts` (the training transcripts).

    Raises:
        HJPruneInputError: The transcripts use characters outside the start model's vocabulary and
            `recipe.new_vocabulary` is off.
    """
    if not uses_own_vocabulary(recipe):
        if recipe.new_vocabulary and start_model_file(recipe.model, "vocab.json") is not None:
            _log(
                logging.WARNING,
                f"new_vocabulary: the vocabulary of {recipe.model} is replaced by the training characters; "
                f"its {OUTPUT_LAYERS['ctc']} starts from scratch",
            )
        return build_tokenizer(transcripts)
    tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(resolve_model(recipe.model))
    missing = missing_characters(tokenizer, transcripts)
    if missing:
        listed = ", ".join(f"{char!r} ({n}x)" for char, n in missing.most_common(20))
        letters = [char for char in tokenizer.get_vocab() if len(char) == 1 and char.isalpha()]
        case = ""
        if letters and all(char.isupper() for char in letters) and any(c.islower() for c in missing):
            case = " (its letters are upper-case: keep the transcripts' case, e.g. data_options.normalize_text: false)"
        raise HJPruneInputError(
            f"the training transcripts use {len(missing)} character(s) that the vocabulary of {recipe.model} "
            f"lacks{case}: {listed}. Normalise the transcripts to its characters, or set new_vocabulary: true "
            f"to train a new {OUTPUT_LAYERS['ctc']} over the training characters"
        )
    return tokenizer


def load_feature_extractor(recipe: Recipe) -> Wav2Vec2FeatureExtractor:
    """The start model's own feature extractor (`preprocessor_config.json`), else the project's default.

    Raises:
        HJPruneInputError: The start model's feature extractor expects another sample rate than 16 kHz.
    """
    if start_model_file(recipe.model, "preprocessor_config.json") is None:
        return build_feature_extractor()
    feature_extractor = Wav2Vec2FeatureExtractor.from_pretrained(resolve_model(recipe.model))
    if feature_extractor.sampling_rate != SAMPLING_RATE or feature_extractor.feature_size != 1:
        raise HJPruneInputError(
            f"the feature extractor of {recipe.model} expects {feature_extractor.feature_size}-channel audio at "
            f"{feature_extractor.sampling_rate} Hz; hf_hjprune trains on mono 16 kHz audio"
        )
    return feature_extractor


def load_label2id(recipe: Recipe, intents: list[str], config: PretrainedConfig) -> dict[str, int]:
    """The start model's own labels when it is an intent classifier, else labels over `intents`.

    Raises:
        HJPruneInputError: The training intents include labels the start classifier does not have and
            `recipe.new_vocabulary` is off.
    """
    architectures = getattr(config, "architectures", None) or []
    own = {str(label): int(i) for i, label in (getattr(config, "id2label", None) or {}).items()}
    is_classifier = any(name.endswith("ForSequenceClassification") for name in architectures)
    if not is_classifier or recipe.new_vocabulary or all(re.fullmatch(r"LABEL_\d+", label) for label in own):
        return build_label2id(intents)
    missing = sorted(set(intents) - set(own))
    if missing:
        raise HJPruneInputError(
            f"the training data has {len(missing)} intent(s) that the classifier {recipe.model} does not know: "
            f"{missing[:20]}; set new_vocabulary: true to train a new classifier over the training intents"
        )
    return own


def build_model(
    recipe: Recipe,
    tokenizer: Wav2Vec2CTCTokenizer | None = None,
    label2id: dict[str, int] | None = None,
) -> PreTrainedModel:
    """The model to train: a CTC model over `tokenizer`'s vocabulary (ASR) or a classifier over
    `label2id` (SLU), built from `recipe.model`.

    Only the task head (`HEAD_MODULES`) may start from scratch: when the checkpoint has none, when
    its size differs from the vocabulary or labels, or with `recipe.new_vocabulary`.

    Raises:
        HJPruneInputError: The model cannot be loaded, or a body weight of the checkpoint does not fit
            the model (a `model_config` override changed its shape, or the layers differ).
    """
    config = load_start_config(recipe)
    if recipe.task == "asr":
        head = "ctc"
        vocab_size = len(tokenizer)
        if uses_own_vocabulary(recipe):  # a checkpoint may pad its head beyond its tokenizer
            vocab_size = max(vocab_size, getattr(config, "vocab_size", 0) or 0)
        task_config = dict(
            vocab_size=vocab_size,
            pad_token_id=tokenizer.pad_token_id,
            ctc_loss_reduction="mean",
            ctc_zero_infinity=True,
        )
    else:
        head = "classification"
        task_config = dict(
            num_labels=len(label2id), label2id=label2id, id2label={i: name for name, i in label2id.items()}
        )
    model, info = load_start_model(
        recipe.model, head, {**task_config, **recipe.model_config}, random_init=recipe.init == "random"
    )
    if info is None:  # built with new weights: nothing to check
        return model
    _check_body_loaded(model, info, recipe.model)
    # transformers initialised the missing and resized head modules, except a new `layer_weights`
    # (weighted layer sum), left as uninitialised memory, which made runs irreproducible.
    new = {key.split(".")[0] for key in info["missing_keys"]} | {key for key, *_ in info["mismatched_keys"]}
    new = {key.split(".")[0] for key in new} & set(HEAD_MODULES)
    if "layer_weights" in new:
        reset_head_module(model, "layer_weights")
    if recipe.new_vocabulary and OUTPUT_LAYERS[head] not in new:  # same size as the old vocabulary
        reset_head_module(model, OUTPUT_LAYERS[head])
        new.add(OUTPUT_LAYERS[head])
    if new:
        _log(logging.INFO, f"Task head trained from scratch: {', '.join(sorted(new))}")
    return model


def _check_body_loaded(model: PreTrainedModel, info: dict[str, Any], source: str) -> None:
    """Raise when a weight outside the task head is missing from the checkpoint, unused, or of another shape."""
    body = model.base_model_prefix + "."
    problems = [
        f"{key}: {tuple(saved)} in the checkpoint, {tuple(expected)} in the model"
        for key, saved, expected in sorted(info["mismatched_keys"])
        if key.split(".")[0] not in HEAD_MODULES
    ]
    problems += [
        f"{key}: not in the checkpoint"
        for key in sorted(info["missing_keys"])
        if key.split(".")[0] not in HEAD_MODULES and key.rsplit(".", 1)[-1] not in NEW_BODY_WEIGHTS_OK
    ]
    problems += [
        f"{key}: in the checkpoint, not in the model"
        for key in sorted(info["unexpected_keys"])
        if key.startswith(body) and key.rsplit(".", 1)[-1] not in NEW_BODY_WEIGHTS_OK
    ]
    if problems:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise HJPruneInputError(
            f"the weights of {source} do not fit the model outside its task head ({len(problems)} tensor(s)): "
            f"{shown}. Only the task head ({', '.join(HEAD_MODULES)}) may change; remove the model_config "
            "overrides that change sizes"
        )


@torch.no_grad()
def reset_head_module(model: PreTrainedModel, name: str) -> None:
    """Start a task head module from scratch as transformers initialises a new Linear (normal with
    std `initializer_range`, zero bias); `layer_weights` starts as an equal mix of the layers."""
    module = getattr(model, name)
    if isinstance(module, nn.Parameter):
        module.fill_(1.0 / len(module))
        return
    nn.init.normal_(module.weight, mean=0.0, std=model.config.initializer_range)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def speech_model(model: nn.Module, accelerator: Accelerator) -> PreTrainedModel:
    """The transformers model inside an Accelerate wrapper and an `HJPruner`."""
    model = accelerator.unwrap_model(model)
    return model.model if isinstance(model, HJPruner) else model


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataloader: DataLoader,
    accelerator: Accelerator,
    tokenizer: Wav2Vec2CTCTokenizer | None = None,
) -> dict[str, float]:
    """WER and CER (ASR, when `tokenizer` is given) or intent accuracy (SLU) over all processes.

    CTC outputs are decoded greedily over the valid frames of each utterance only: the frames of
    the padding are not silence for models whose conv stack normalises over time.
    """
    was_training = model.training
    model.eval()
    lengths_of = speech_model(model, accelerator)._get_feat_extract_output_lengths
    pairs, correct, total = [], 0, 0
    for batch in dataloader:
        with accelerator.autocast():
            logits = model(input_values=batch["input_values"], attention_mask=batch["attention_mask"]).logits
        if tokenizer is not None:
            frames = lengths_of(batch["attention_mask"].sum(-1))
            predicted = logits.argmax(-1)
            hypotheses = tokenizer.batch_decode([ids[:n].tolist() for ids, n in zip(predicted, frames)])
            references = tokenizer.batch_decode(
                [ids[ids != -100].tolist() for ids in batch["labels"]], group_tokens=False
            )
            pairs += accelerator.gather_for_metrics(list(zip(references, hypotheses)), use_gather_object=True)
        else:
            predicted, labels = accelerator.gather_for_metrics((logits.argmax(-1), batch["labels"]))
            correct += int((predicted == labels).sum())
            total += len(labels)
    model.train(was_training)
    if tokenizer is None:
        return {"accuracy": correct / total, "num_utterances": total}
    references, hypotheses = (list(column) for column in zip(*pairs))
    return {
        "wer": jiwer.wer(references, hypotheses),
        "cer": jiwer.cer(references, hypotheses),
        "num_utterances": len(pairs),
    }


def linear_schedule(warmup_steps: int, max_steps: int) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up from 0 over `warmup_steps`, then linear decay to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        return max(0.0, (max_steps - step) / max(1, max_steps - warmup_steps))

    return factor


def build_dataloaders(
    recipe: Recipe, splits: dict[str, PreparedSplit], collator: SpeechCollator
) -> tuple[DataLoader, DataLoader, DataLoader]:
    """Train (shuffled by seed and epoch, grouped by length, speed-perturbed if the recipe says so),
    validation and test dataloaders."""
    speed_factors = tuple(recipe.speed_perturbation or ())
    train_collator = dataclasses.replace(collator, speed_factors=speed_factors)

    def dataloader(split: str, batch_size: int, sampler: Iterable[int]) -> DataLoader:
        return DataLoader(
            splits[split],
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=train_collator if split == "train" else collator,
            num_workers=recipe.num_workers,
            # Its own generator: creating an iterator then draws no number from the global RNG.
            generator=torch.Generator().manual_seed(recipe.seed),
        )

    group_size = 50 * recipe.batch_size if recipe.group_by_length else 0
    train_sampler = EpochSampler(splits["train"].lengths, recipe.seed, group_size)
    eval_batch_size = recipe.eval_batch_size or recipe.batch_size
    return (
        dataloader("train", recipe.batch_size, train_sampler),
        dataloader("validation", eval_batch_size, _by_length(splits["validation"].lengths)),
        dataloader("test", eval_batch_size, _by_length(splits["test"].lengths)),
    )


def build_ood_dataloader(
    recipe: Recipe,
    test_split: Any,
    target_column: str,
    encode: Callable[[Any], Any],
    collator: SpeechCollator,
) -> DataLoader | None:
    """The out-of-domain test set of `recipe.ood_test` (flite), or None when there is none or flite is
    not installed (a warning says so)."""
    if recipe.ood_test is None:
        return None
    if not flite_available():
        logger.warning(
            "ood_test: flite is not installed (apt-get install flite); skipping it", main_process_only=True
        )
        return None
    with PartialState().main_process_first():
        ood = load_flite_test(test_split, **recipe.data_options)
    prepared = prepare_split(ood, target_column, encode, "ood_test", keep_audio=recipe.cache_audio)
    return DataLoader(prepared, batch_size=recipe.eval_batch_size or recipe.batch_size,
                      sampler=_by_length(prepared.lengths), collate_fn=collator)  # fmt: skip


def prepare_data(recipe: Recipe) -> None:
    """Build (or find cached) the recipe's data and out-of-domain test set: before runs that share
    them start side by side."""
    quiet_progress_bars()
    dataset = load_source(recipe.data, **recipe.data_options)
    if recipe.ood_test is not None and flite_available():
        load_flite_test(dataset["test"], **recipe.data_options)


def _by_length(lengths: list[int]) -> list[int]:
    """Evaluation order: by length, which changes no metric and pads least."""
    return sorted(range(len(lengths)), key=lengths.__getitem__)


def task_loss(
    trained: nn.Module,
    batch: dict[str, torch.Tensor],
    distiller: Distiller | None,
    distill: nn.Module | None,
    model: PreTrainedModel,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The task loss of a batch, and what to minimise: the task loss, or its mix with distillation
    (`distill` is the distiller, possibly wrapped for several processes)."""
    if distiller is None:
        loss = trained(**batch).loss
        return loss, loss
    outputs = trained(**batch, output_hidden_states=distiller.needs_hidden_states)
    weight = distiller.config.task_weight
    return outputs.loss, weight * outputs.loss + distill(outputs, batch, model)


def build_optimizer(
    recipe: Recipe, model: nn.Module, pruner: HJPruner | None, distiller: Distiller | None = None
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the model weights (warm-up and decay, weight decay), the gate logits and the
    Lagrange multipliers (constant learning rates, no weight decay). A distiller's projections train
    with the task head (they start from scratch too)."""
    head = [param for name, param in model.named_parameters() if name.split(".")[0] in HEAD_MODULES]
    body = [param for name, param in model.named_parameters() if name.split(".")[0] not in HEAD_MODULES]
    if distiller is not None:
        head += list(distiller.parameters())
    groups = [{"params": body, "lr": recipe.learning_rate, "weight_decay": recipe.weight_decay}]
    if head:
        head_lr = recipe.head_learning_rate or recipe.learning_rate
        groups.append({"params": head, "lr": head_lr, "weight_decay": recipe.weight_decay})
    num_model_groups = len(groups)
    if pruner is not None:
        groups.append(
            {"params": pruner.gate_parameters(), "lr": recipe.gate_learning_rate, "weight_decay": 0.0}
        )
        groups.append(
            {"params": pruner.lagrangian_parameters(), "lr": recipe.lambda_learning_rate, "weight_decay": 0.0}
        )
    # The fused kernel updates every tensor in one pass: on a CPU, a third of the time of the default.
    fused = all(param.device.type in ("cpu", "cuda") for group in groups for param in group["params"])
    optimizer = torch.optim.AdamW(groups, fused=fused)
    schedule = linear_schedule(recipe.num_warmup_steps, recipe.max_steps)
    schedules = [schedule] * num_model_groups + [lambda _: 1.0] * (len(groups) - num_model_groups)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedules)


def checkpoints(output_dir: Path) -> list[Path]:
    """The complete `checkpoints/step_N` directories, oldest first (`.partial` ones are unfinished)."""
    found = [
        (int(match.group(1)), path)
        for path in (output_dir / "checkpoints").glob("step_*")
        if (match := CHECKPOINT_PATTERN.fullmatch(path.name))
    ]
    return [path for _, path in sorted(found)]


def build_accelerator(recipe: Any, output_dir: Path, log_with: list[Any]) -> Accelerator:
    """The run's `Accelerator`: the recipe's accumulation and precision (`auto` resolved for this device),
    logging into `output_dir`."""
    precision = resolve_precision(recipe.mixed_precision)
    # Runs share accelerate's process-wide state; a second run in the same process (the demo, a comparison,
    # a notebook) may ask for another precision, which accelerate refuses unless its state is reset. The
    # distributed state (`PartialState`) stays: it is the same for every run of the process.
    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != precision:
        AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        mixed_precision=precision,
        log_with=log_with,
        project_dir=str(output_dir),
        # The schedule counts optimizer updates: the scheduler steps once per update, not once per process.
        step_scheduler_with_optimizer=False,
    )
    if accelerator.device.type == "cpu" and precision != "no" and not cpu_computes_natively(precision):
        logger.warning(
            f"mixed_precision={precision} on a CPU without native {precision} "
            f"({torch.backends.cpu.get_cpu_capability()}): autocast emulates it, and a training step runs "
            "about 9 times slower than in fp32 (mixed_precision: no, or auto) on an AVX2 CPU "
            "(`python -m hf_hjprune.benchmarks.precision` measures it)"
        )
    return accelerator


def resolve_precision(requested: str) -> str:
    """The precision a run uses: `requested`, or for "auto" bf16 where this process's device computes it
    natively (a GPU with bf16, a CPU with AVX512-BF16 or AMX) and fp32 ("no") elsewhere, where bf16
    autocast is emulated and slower than fp32."""
    if requested != "auto":
        return requested
    device = PartialState().device
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
    else:
        native = device.type == "cpu" and cpu_computes_natively("bf16")
    return "bf16" if native else "no"


def cpu_computes_natively(precision: str) -> bool:
    """Whether this CPU computes `precision` ("bf16" or "fp16") natively (AVX512-BF16, AVX512-FP16 or AMX),
    where CPU autocast pays off; elsewhere oneDNN emulates it."""
    check = {"bf16": "_is_mkldnn_bf16_supported", "fp16": "_is_mkldnn_fp16_supported"}.get(precision)
    try:
        return check is not None and bool(getattr(torch.ops.mkldnn, check)())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def end_trackers(accelerator: Accelerator) -> None:
    """The end of a run: `accelerator.end_training()` without destroying the process group, which
    belongs to the process (`end_process_group`): a process may run several trainings (a final
    fine-tune after pruning), and the group may only go once the run's DDP models are gone."""
    for tracker in accelerator.trackers:
        tracker.finish()


def end_process_group() -> None:
    """Destroy the process group of `accelerate launch` (if any) at the end of a command.

    Only once the runs' models are released: a DDP reducer that outlives the group's registration
    becomes its last holder and destroys it with the GIL held, while a gloo worker thread may still
    need the GIL to free the last collective's tensors, and the process hangs at exit
    (pytorch/pytorch#56297; seen here in CI)."""
    gc.collect()  # DDP wrappers in reference cycles go first
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def save_checkpoint(accelerator: Accelerator, output_dir: Path, step: int, keep: int) -> None:
    """`accelerator.save_state` into `checkpoints/step_{step}.partial`, renamed to `step_{step}` once
    complete and fsynced (`publish_directory`); then keep the last `keep` (0: all).

    A kill at any moment leaves the previous checkpoints intact and at worst a `.partial` folder,
    which `checkpoints` ignores and the next save replaces.
    """
    directory = output_dir / "checkpoints" / f"step_{step}"
    partial = directory.with_name(f"{directory.name}.partial")
    if accelerator.is_main_process:
        partial_directory(directory)  # empty, without the leftovers of a killed save
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        publish_directory(partial, directory)
        for old in checkpoints(output_dir)[:-keep] if keep else []:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop the records logged after `step` (by a killed run after its last checkpoint, or by an
    earlier run in the same directory when `step` is 0) and a torn last line; rewritten atomically."""
    if path.is_file():
        kept = [line + "\n" for line, record in read_jsonl_lines(path) if (record.get("step") or 0) <= step]
        atomic_write_text(path, "".join(kept))


class TrainingStopped(Exception):
    """Training stopped early on a signal (SIGTERM) after saving a checkpoint; `--resume` continues it.

    Attributes:
        signal_number: The signal received.
        step: The step of the saved checkpoint.
        checkpoint: Its directory.
    """

    def __init__(self, signal_number: int, step: int, checkpoint: Path):
        name = signal.Signals(signal_number).name
        super().__init__(
            f"stopped by {name} at step {step}; checkpoint saved in {checkpoint}: run the same command with "
            "--resume to continue"
        )
        self.signal_number, self.step, self.checkpoint = signal_number, step, checkpoint

    @property
    def exit_status(self) -> int:
        """128 + the signal number, as a shell reports a process ended by that signal."""
        return 128 + self.signal_number


class StopSignal:
    """SIGTERM (what job schedulers send before they kill a job) as a request to stop at the next step.

    Inside the `with` block the signals only set a flag; the loop asks `requested` after each
    optimizer update and, when it returns a signal number, saves a checkpoint and stops. With several
    processes the flag is combined across them (a maximum), so that all stop at the same step. The
    previous handlers come back when the block ends. Outside the main thread, nothing is installed.
    """

    def __init__(self, signals: Sequence[int] = (signal.SIGTERM,)):
        self.signals = tuple(signals)
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for number in self.signals:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def _handle(self, number: int, frame: Any) -> None:
        self.received = number

    def requested(self, accelerator: Accelerator | None = None) -> int | None:
        """The signal that asks this process, or any of the run's processes, to stop; else None."""
        received = self.received or 0
        if accelerator is not None and accelerator.num_processes > 1:
            flag = torch.tensor([float(received)], device=accelerator.device)
            received = int(accelerator.reduce(flag, reduction="max").item())
        return received or None

    def checkpoint_and_stop(
        self, accelerator: Accelerator, output_dir: Path, step: int, keep: int, saved: bool = False
    ) -> None:
        """Call after each optimizer update (on every process): when a stop was requested, save a
        checkpoint of `step` (unless `saved` already), end the trackers and raise `TrainingStopped`."""
        received = self.requested(accelerator)
        if received is None:
            return
        if not saved:
            save_checkpoint(accelerator, output_dir, step, keep)
        end_trackers(accelerator)
        raise TrainingStopped(received, step, output_dir / "checkpoints" / f"step_{step}")


def end_of_step(stop: StopSignal, accelerator: Accelerator, recipe: Any, output_dir: Path, step: int) -> None:
    """Call after each optimizer update (on every process): save a checkpoint every `checkpoint_steps`;
    before the last step, a requested stop saves one of this step (unless just saved) and raises
    `TrainingStopped`."""
    saved = bool(recipe.checkpoint_steps) and step % recipe.checkpoint_steps == 0
    if saved:
        save_checkpoint(accelerator, output_dir, step, recipe.keep_checkpoints)
    if step < recipe.max_steps:  # after the last step the run finishes instead
        stop.checkpoint_and_stop(accelerator, output_dir, step, recipe.keep_checkpoints, saved)


def load_checkpoint(accelerator: Accelerator, checkpoint: Path | None) -> Progress:
    """The run's `Progress`, registered for checkpointing; with a `checkpoint`, it and everything
    prepared by `accelerator` (model, optimizer, scheduler, RNG states) are loaded from it."""
    progress = Progress()
    accelerator.register_for_checkpointing(progress)
    if checkpoint is not None:
        logger.info(f"Resuming from {checkpoint}", main_process_only=True)
        accelerator.load_state(str(checkpoint))
    return progress


def start_tracking(
    accelerator: Accelerator, output_dir: Path, step: int, project: str, config: dict[str, Any] | None = None
) -> None:
    """Start the trackers, once `metrics.jsonl` holds only the records up to `step` (where the run
    starts or resumes)."""
    if accelerator.is_main_process:
        _truncate_metrics(output_dir / "metrics.jsonl", step)
    accelerator.init_trackers(project, config=config)


def _flat_config(values: dict[str, Any]) -> dict[str, Any]:
    """Recipe values as trackers accept them: scalars, anything else (mappings, None) as JSON."""
    return {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v) for k, v in values.items()}


def _start(output_dir: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from, or None to start from the beginning."""
    found = checkpoints(output_dir)
    if found and not resume:
        raise HJPruneInputError(
            f"{output_dir} holds checkpoints of an earlier run (up to {found[-1].name}): pass --resume to "
            "continue it, or choose another output_dir"
        )
    if resume and not found:
        # A job requeued after being killed before its first checkpoint runs the same command again.
        _log(
            logging.WARNING,
            f"--resume: no checkpoint in {output_dir / 'checkpoints'} yet; starting from the beginning",
        )
    return found[-1] if found else None


def _display_values(metrics: dict[str, float]) -> dict[str, str]:
    """The numbers of a training log record that the progress line shows: loss, expected reduction
    against the target and λ1/λ2 per budget."""
    values = {"loss": f"{metrics['train/loss']:.3f}"}
    suffix = "/expected_reduction"
    budgets = [key[len("pruning/") : -len(suffix)] for key in metrics if key.endswith(suffix)]
    for name in budgets:
        prefix = f"pruning/{name}/"
        reduction, target = metrics[prefix + "expected_reduction"], metrics[prefix + "target"]
        values[f"{name} reduction"] = f"{reduction:.3f} (target {target:.3f})"
        values[f"λ {name}"] = f"{metrics[prefix + 'lambda1']:.3g}/{metrics[prefix + 'lambda2']:.3g}"
    return values


@torch.no_grad()
def export_difference(gated: nn.Module, exported: nn.Module, batch: dict[str, torch.Tensor]) -> float:
    """Largest absolute difference between the logits of the gated model in eval mode and of its
    export on `batch`, in float32 (the export must reproduce the gated model)."""
    was_training = gated.training
    gated.eval()
    inputs = {"input_values": batch["input_values"], "attention_mask": batch["attention_mask"]}
    difference = (gated(**inputs).logits.float() - exported(**inputs).logits.float()).abs().max()
    gated.train(was_training)
    return float(difference)


@dataclass
class TrainingRun:
    """One run as `_set_up_run` builds it, for `_train_loop` and `_finish_run`.

    It lives only inside `train`: the DDP-wrapped model it holds must be gone before the process group
    is (see `end_process_group`).
    """

    recipe: Recipe
    output_dir: Path
    accelerator: Accelerator
    model: PreTrainedModel  # the transformers model, which the pruner gates in place
    pruner: HJPruner | None
    trained: nn.Module  # the pruner, else the model, as `accelerator.prepare` wrapped it
    distiller: Distiller | None
    distill: nn.Module | None  # the distiller, wrapped when it has learned projections
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    tokenizer: Wav2Vec2CTCTokenizer | None  # ASR only
    processor: Wav2Vec2Processor | Wav2Vec2FeatureExtractor  # saved with the final model
    collator: SpeechCollator
    splits: dict[str, PreparedSplit]
    train_dataloader: DataLoader
    validation_dataloader: DataLoader
    test_dataloader: DataLoader
    ood_dataloader: DataLoader | None
    before: dict[str, Any]  # parameters and MACs of the start model
    progress: Progress


class TaskTargets(NamedTuple):
    """What a run predicts and how a row's target becomes one: the tokenizer (ASR) or the labels (SLU)."""

    tokenizer: Wav2Vec2CTCTokenizer | None
    label2id: dict[str, int] | None
    processor: Wav2Vec2Processor | Wav2Vec2FeatureExtractor
    column: str
    encode: Callable[[str], Any]


def train(recipe: Recipe, resume: bool = False) -> dict[str, Any]:
    """Run a recipe to the end and return its summary (also written to `output_dir/summary.json`).

    Everything that can be wrong with the input (recipe against the start model, data source, missing
    column, vocabulary, no usable audio, unreachable pruning target, an earlier run in `output_dir`)
    raises `HJPruneInputError` before the first step. With `resume`, the run continues from its latest
    checkpoint, or starts from the beginning when it has none yet.

    Raises:
        TrainingStopped: A SIGTERM arrived; a checkpoint of the last finished step was saved.
    """
    if recipe.final_finetune_steps:
        return train_with_final_finetune(recipe, resume)
    run = _set_up_run(recipe, resume)
    _train_loop(run)
    return _finish_run(run)


def _set_up_run(recipe: Recipe, resume: bool) -> TrainingRun:
    """Phases 1 to 4: check the input, build data, model, pruner and optimizer, resume or evaluate."""
    output_dir = Path(recipe.output_dir)
    checkpoint = _start(output_dir, resume)
    quiet_progress_bars()

    # 1. Check the recipe against the start model and the data source before building anything.
    start_config = load_start_config(recipe)
    check_options(recipe.data, recipe.data_options)

    log_with: list[Any] = [JsonlTracker(output_dir / "metrics.jsonl")]
    if is_tensorboard_available():
        log_with.append("tensorboard")
    accelerator = build_accelerator(recipe, output_dir, log_with)
    set_seed(recipe.seed)

    # 2. Data, vocabulary or labels, model and pruner: every check that needs no audio comes first.
    with accelerator.main_process_first():  # the main process builds or downloads, the others reuse
        dataset = load_source(recipe.data, **recipe.data_options)
    check_columns(dataset, recipe.task)
    feature_extractor = load_feature_extractor(recipe)
    targets = _task_targets(recipe, dataset, start_config, feature_extractor)
    model = build_model(recipe, targets.tokenizer, targets.label2id)
    if recipe.freeze_feature_encoder:
        model.freeze_feature_encoder()  # the CNN then runs without autograd
    before = {"params": count_params(model).as_dict(), "macs": count_macs(model, recipe.seconds).as_dict()}
    # The pruner gates the model in place; keep the starting model aside for its evaluation.
    starting_model = copy.deepcopy(model) if recipe.variant != DENSE and checkpoint is None else model
    pruner = _build_pruner(recipe, model)

    # 3. Decode and check every audio file once, then the dataloaders, optimizer and schedule.
    splits = {split: _prepare_split(recipe, dataset[split], targets, split) for split in SPLITS}
    collator = SpeechCollator(feature_extractor)
    train_dataloader, validation_dataloader, test_dataloader = build_dataloaders(recipe, splits, collator)
    ood_dataloader = build_ood_dataloader(recipe, dataset["test"], targets.column, targets.encode, collator)
    distiller = None
    if recipe.distillation is not None:
        distiller = Distiller(DistillationConfig.from_dict(recipe.distillation), model, recipe.task)
    optimizer, scheduler = build_optimizer(recipe, model, pruner, distiller)

    trained = pruner if pruner is not None else model
    trained, optimizer, train_dataloader, validation_dataloader, test_dataloader, scheduler = (
        accelerator.prepare(
            trained, optimizer, train_dataloader, validation_dataloader, test_dataloader, scheduler
        )
    )
    if ood_dataloader is not None:
        ood_dataloader = accelerator.prepare(ood_dataloader)
    distill = distiller
    if distiller is not None and distiller.needs_hidden_states:  # learned projections: synchronised
        distill = accelerator.prepare(distiller)
    progress = load_checkpoint(accelerator, checkpoint)

    # 4. Resume, or evaluate the starting model.
    if checkpoint is not None:
        if progress.batches_in_epoch >= len(train_dataloader):
            progress.epoch, progress.batches_in_epoch = progress.epoch + 1, 0
    else:
        progress.metrics_before = evaluate(
            starting_model.to(accelerator.device), test_dataloader, accelerator, targets.tokenizer
        )
        logger.info(f"Test metrics before training: {progress.metrics_before}", main_process_only=True)
    del starting_model
    start_tracking(accelerator, output_dir, progress.step, "hjprune", config=_flat_config(recipe.to_dict()))
    return TrainingRun(
        recipe, output_dir, accelerator, model, pruner, trained, distiller, distill, optimizer, scheduler,
        targets.tokenizer, targets.processor, collator, splits, train_dataloader, validation_dataloader,
        test_dataloader, ood_dataloader, before, progress,
    )  # fmt: skip


def _task_targets(
    recipe: Recipe, dataset: Any, start_config: PretrainedConfig, feature_extractor: Wav2Vec2FeatureExtractor
) -> TaskTargets:
    """The tokenizer over the training transcripts (ASR) or the labels over the training intents (SLU)."""
    if recipe.task == "asr":
        tokenizer = load_tokenizer(recipe, list(dataset["train"]["text"]))

        def encode(text: str) -> list[int]:
            return tokenizer(normalize_transcript(text)).input_ids

        processor = Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer)
        return TaskTargets(tokenizer, None, processor, "text", encode)
    label2id = load_label2id(recipe, list(dataset["train"]["intent"]), start_config)
    # `encode` gives None for an intent unseen in training: the row is skipped.
    return TaskTargets(None, label2id, feature_extractor, "intent", label2id.get)


def _prepare_split(recipe: Recipe, split: Any, targets: TaskTargets, name: str) -> PreparedSplit:
    """`prepare_split` with the recipe's audio settings: every file decoded and checked once."""
    return prepare_split(split, targets.column, targets.encode, name, keep_audio=recipe.cache_audio,
                         max_seconds=recipe.max_audio_seconds)  # fmt: skip


def _build_pruner(recipe: Recipe, model: PreTrainedModel) -> HJPruner | None:
    """The recipe's `HJPruner` around `model` (gated in place), or None for dense fine-tuning."""
    if recipe.variant == DENSE:
        return None
    return HJPruner(
        model,
        variant=recipe.variant,
        target=recipe.target,
        warmup_steps=recipe.num_target_warmup_steps,
        target_reference=recipe.target_reference,
        lambda_clip=recipe.lambda_clip,
        seconds=recipe.seconds,
        prune_blocks=recipe.prune_blocks,
        round_to=recipe.round_to,
        init_log_alpha=recipe.gate_init_log_alpha,
    )


def _train_loop(run: TrainingRun) -> None:
    """Phase 5: train to `max_steps`, logging, evaluating and saving checkpoints as the recipe asks.

    Raises:
        TrainingStopped: A SIGTERM arrived; a checkpoint of the last finished step was saved.
    """
    recipe, accelerator, progress = run.recipe, run.accelerator, run.progress
    # 5. Train: one optimizer update per `gradient_accumulation_steps` batches; SIGTERM stops after one.
    model_parameters = list(run.model.parameters())
    window = torch.zeros(3, device=accelerator.device)  # task loss, penalty, batches since the last log
    reporter = ProgressReporter(
        recipe.max_steps, progress.step, enabled=accelerator.is_local_main_process, logger=logger.logger
    )
    run.trained.train()
    started, seconds_before = time.perf_counter(), progress.train_seconds
    with StopSignal() as stop, contextlib.closing(reporter):
        while progress.step < recipe.max_steps:
            run.train_dataloader.set_epoch(progress.epoch)
            batches = accelerator.skip_first_batches(run.train_dataloader, progress.batches_in_epoch)
            for batch in batches:
                with accelerator.accumulate(run.trained):
                    loss, objective = task_loss(run.trained, batch, run.distiller, run.distill, run.model)
                    penalty = (
                        run.pruner.penalty(progress.step)
                        if run.pruner is not None
                        else torch.zeros_like(loss)
                    )
                    accelerator.backward(objective + penalty)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(model_parameters, recipe.max_grad_norm)
                    run.optimizer.step()
                    run.optimizer.zero_grad()
                progress.batches_in_epoch += 1
                window += torch.stack([loss.detach(), penalty.detach(), torch.ones_like(loss)]).float()
                if not accelerator.sync_gradients:
                    continue

                run.scheduler.step()
                progress.step += 1
                progress.train_seconds = seconds_before + time.perf_counter() - started
                _log_step(run, window, reporter)
                end_of_step(stop, accelerator, recipe, run.output_dir, progress.step)
                if progress.step >= recipe.max_steps:
                    break
            else:
                progress.epoch, progress.batches_in_epoch = progress.epoch + 1, 0


def _log_step(run: TrainingRun, window: torch.Tensor, reporter: ProgressReporter) -> None:
    """After an optimizer update: log the training metrics every `log_steps` (means over the batches
    since the last log, then `window` restarts) and the validation metrics every `eval_steps`."""
    recipe, accelerator, step = run.recipe, run.accelerator, run.progress.step
    if step % recipe.log_steps == 0:
        loss_sum, penalty_sum, count = accelerator.reduce(window, reduction="sum").tolist()
        window.zero_()
        metrics = {
            "train/loss": loss_sum / count,
            "train/penalty": penalty_sum / count,
            "train/lr": run.scheduler.get_last_lr()[0],
            "train/seconds": run.progress.train_seconds,
        }
        if run.pruner is not None:
            metrics.update({f"pruning/{name}": value for name, value in run.pruner.stats(step).items()})
        accelerator.log(metrics, step=step)
        reporter.update(step, _display_values(metrics))
    else:
        reporter.update(step)
    if recipe.eval_steps and step % recipe.eval_steps == 0:
        metrics = evaluate(run.trained, run.validation_dataloader, accelerator, run.tokenizer)
        accelerator.log({f"validation/{name}": value for name, value in metrics.items()}, step=step)


def _finish_run(run: TrainingRun) -> dict[str, Any]:
    """Phase 6: export the pruned model, evaluate it, and write the model and `summary.json`."""
    recipe, accelerator = run.recipe, run.accelerator
    # 6. Export, evaluate and write the model and the summary, each complete or not at all.
    accelerator.wait_for_everyone()
    adjusted = (
        run.pruner.match_target(recipe.target_tolerance)
        if run.pruner is not None and recipe.target_tolerance is not None
        else None
    )
    final = run.pruner.export() if run.pruner is not None else run.model
    metrics_after = evaluate(final, run.test_dataloader, accelerator, run.tokenizer)
    logger.info(f"Test metrics after training: {metrics_after}", main_process_only=True)
    model_dir = run.output_dir / "model"
    partial = model_dir.with_name(model_dir.name + ".partial")
    if accelerator.is_main_process:
        partial_directory(model_dir)
    accelerator.wait_for_everyone()
    final.save_pretrained(
        partial, is_main_process=accelerator.is_main_process, save_function=accelerator.save
    )
    summary = _summary(run, final, metrics_after, adjusted)
    if accelerator.is_main_process:
        run.processor.save_pretrained(partial)
        publish_directory(partial, model_dir)
        atomic_write_json(run.output_dir / "summary.json", summary)
    accelerator.wait_for_everyone()
    end_trackers(accelerator)
    return summary


def _summary(
    run: TrainingRun, final: PreTrainedModel, metrics_after: dict[str, float], adjusted: dict[str, Any] | None
) -> dict[str, Any]:
    """The run's `summary.json`; evaluates `final` on the out-of-domain test set, and (on every process)
    the export against the gated model."""
    recipe, accelerator, progress, splits = run.recipe, run.accelerator, run.progress, run.splits
    summary = {
        "recipe": recipe.to_dict(),
        "variant": recipe.variant,
        "target": recipe.target if recipe.variant != DENSE else None,
        "steps": progress.step,
        "train_seconds": progress.train_seconds,
        "num_processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
        "params": {"before": run.before["params"], "after": count_params(final).as_dict()},
        "macs": {
            "seconds": recipe.seconds,
            "before": run.before["macs"],
            "after": count_macs(final, recipe.seconds).as_dict(),
        },
        "metrics": {"before": progress.metrics_before, "after": metrics_after},
        "skipped_files": {split: splits[split].skipped_counts for split in SPLITS},
        "converted_files": {split: splits[split].converted_counts for split in SPLITS},
    }
    if recipe.ood_test is not None:
        summary["ood_test"] = {"source": recipe.ood_test}
        if run.ood_dataloader is None:
            summary["ood_test"]["skipped"] = "flite is not installed"
        else:
            summary["ood_test"]["metrics"] = evaluate(final, run.ood_dataloader, accelerator, run.tokenizer)
            logger.info(f"Out-of-domain ({recipe.ood_test}) test metrics: {summary['ood_test']['metrics']}",
                        main_process_only=True)  # fmt: skip
    if run.pruner is not None:
        summary["pruning"] = run.pruner.stats(progress.step)
        if adjusted is not None:
            summary["pruning"] |= {"units_removed_to_meet_target": adjusted["removed"],
                                   "units_added_to_meet_target": adjusted["added"]}  # fmt: skip
        test_items = [splits["test"][i] for i in range(min(len(splits["test"]), recipe.batch_size))]
        batch = {name: value.to(accelerator.device) for name, value in run.collator(test_items).items()}
        summary["export_max_abs_difference"] = export_difference(run.model, final, batch)
    summary["peak_rss_mib"] = gather_object([peak_rss_mib()])  # one per process
    return summary


def train_with_final_finetune(recipe: Recipe, resume: bool = False) -> dict[str, Any]:
    """Prune (into `output_dir/prune`), then fine-tune the fixed pruned structure for
    `final_finetune_steps` (into `output_dir/finetune`); the final model and the combined summary go
    where any run puts them (`output_dir/model`, `output_dir/summary.json`). With `resume`, a finished
    phase is kept and an interrupted one continues from its checkpoints."""
    output_dir = Path(recipe.output_dir)
    prune = dataclasses.replace(recipe, final_finetune_steps=0, output_dir=str(output_dir / "prune"))
    pruned = _phase(prune, resume)
    finetune = dataclasses.replace(
        prune,
        model=str(output_dir / "prune" / "model"),
        model_config={},  # the pruned checkpoint's config already has the recipe's overrides
        init="pretrained",
        new_vocabulary=False,  # the pruned model's head is over the new vocabulary already
        variant="none",
        max_steps=recipe.final_finetune_steps,
        warmup_steps=None,
        learning_rate=recipe.final_finetune_learning_rate or recipe.learning_rate,
        head_learning_rate=None,  # the head is trained by now
        output_dir=str(output_dir / "finetune"),
    )
    tuned = _phase(finetune, resume)
    summary = {
        **pruned,
        "recipe": recipe.to_dict(),
        "steps": pruned["steps"] + tuned["steps"],
        "train_seconds": pruned["train_seconds"] + tuned["train_seconds"],
        "params": {"before": pruned["params"]["before"], "after": tuned["params"]["after"]},
        "macs": {**pruned["macs"], "after": tuned["macs"]["after"]},
        "metrics": {
            **pruned["metrics"],
            "after": tuned["metrics"]["after"],
            "after_pruning": pruned["metrics"]["after"],
        },
        "final_finetune": {
            "steps": tuned["steps"],
            "train_seconds": tuned["train_seconds"],
            "learning_rate": finetune.learning_rate,
        },  # fmt: skip
    }
    if "ood_test" in tuned:
        summary["ood_test"] = {
            **tuned["ood_test"],
            "after_pruning": pruned.get("ood_test", {}).get("metrics"),
        }
    if PartialState().is_main_process:
        partial = partial_directory(output_dir / "model")
        shutil.copytree(output_dir / "finetune" / "model", partial, dirs_exist_ok=True)
        publish_directory(partial, output_dir / "model")
        lines = _read_records(output_dir / "prune" / "metrics.jsonl")
        lines += [{**line, "step": line["step"] + pruned["steps"]}
                  for line in _read_records(output_dir / "finetune" / "metrics.jsonl")]  # fmt: skip
        atomic_write_text(output_dir / "metrics.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
        atomic_write_json(output_dir / "summary.json", summary)
    PartialState().wait_for_everyone()
    return summary


def _phase(recipe: Recipe, resume: bool) -> dict[str, Any]:
    """Run one phase of a chained run; with `resume`, a finished phase (its `summary.json`, written
    last and atomically) is reused as it is."""
    summary_path = Path(recipe.output_dir) / "summary.json"
    if resume and summary_path.is_file():
        return json.loads(summary_path.read_text(encoding="utf-8"))
    return train(recipe, resume=resume and bool(checkpoints(Path(recipe.output_dir))))


def _read_records(path: Path) -> list[dict[str, Any]]:
    return read_jsonl(path) if path.is_file() else []


def train_or_continue(recipe: Recipe) -> dict[str, Any]:
    """`train`, continuing from the latest checkpoint when `output_dir` has one: what running a batch of
    runs again wants after it was killed (its SIGTERM saved checkpoints)."""
    return train(recipe, resume=bool(checkpoints(Path(recipe.output_dir))))


def _train_or_error(recipe: Recipe, keep_going: bool, resume: bool = False) -> dict[str, Any]:
    try:
        return train_or_continue(recipe) if resume else train(recipe)
    except HJPruneInputError as err:  # bad input, found before the first step
        if not keep_going:
            raise
        _log(logging.WARNING, f"{recipe.output_dir}: not trained: {err}")
        return {"error": str(err), "error_type": type(err).__name__}


def _stop_with_parent(parent: int) -> None:
    """Pool initializer: a worker gets SIGTERM when its parent dies (Linux), so a killed comparison does
    not leave workers training its queued runs: the current run saves a checkpoint and stops."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    _exit_if_orphaned(parent)


def _exit_if_orphaned(parent: int) -> None:
    # Without its parent a pool worker would wait for work forever (or start a run queued before the
    # parent died): it exits, with SIGTERM's status.
    if os.getppid() != parent:
        os._exit(143)


def _train_in_worker(job: tuple[dict[str, Any], int, bool, bool, int]) -> dict[str, Any]:
    values, threads, keep_going, resume, parent = job
    _exit_if_orphaned(parent)  # a run queued before the parent died is not started
    try:
        return _train_one_in_worker(values, threads, keep_going, resume)
    finally:
        _exit_if_orphaned(parent)  # the parent died during the run, which saved a checkpoint and stopped


def _train_one_in_worker(
    values: dict[str, Any], threads: int, keep_going: bool, resume: bool
) -> dict[str, Any]:
    torch.set_num_threads(threads)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    return _train_or_error(Recipe.from_dict(values), keep_going, resume)


def finished_summary(recipe: Recipe) -> dict[str, Any] | None:
    """The `summary.json` of `recipe`'s finished run, or None when `output_dir` holds none.

    Raises:
        HJPruneInputError: `output_dir` holds a finished run of another recipe, which a benchmark
            would otherwise report as this one's.
    """
    path = Path(recipe.output_dir) / "summary.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text(encoding="utf-8"))
    expected = json.loads(json.dumps(recipe.to_dict()))
    # A field added since the run was trained counts as its default.
    defaults = json.loads(json.dumps(Recipe().to_dict()))
    saved = {**defaults, **summary.get("recipe", {})}
    changed = [key for key in expected if saved.get(key) != expected[key]]
    if changed:
        shown = "; ".join(f"{key}: {saved.get(key)!r} there, {expected[key]!r} now" for key in changed[:5])
        raise HJPruneInputError(
            f"{path.parent} holds a finished run of another recipe ({shown}); move it away or choose "
            "another output folder"
        )
    return summary


def relative_cost(recipe: Recipe) -> float:
    """A run's training time in units of one full step, to start the longest runs first: without the
    CNN's backward pass (a frozen feature encoder) a step of the demo's start model takes 0.7 of one."""
    return (recipe.max_steps + recipe.final_finetune_steps) * (0.7 if recipe.freeze_feature_encoder else 1.0)


def train_all(
    recipes: Sequence[Recipe], jobs: int = 1, keep_going: bool = False, resume: bool = False
) -> list[dict[str, Any]]:
    """Run independent recipes to the end, `jobs` at a time, and return their summaries in order.

    With `jobs > 1` each run trains in its own process with `cores // jobs` threads: on a CPU, small
    models train faster side by side than one after the other on all cores. With `keep_going`, a
    recipe that `train` rejects as bad input (an `HJPruneInputError`, e.g. an `UnreachableTargetError`)
    gives `{"error": message, "error_type": class name}` instead of stopping the others; any other
    exception stops everything. With `resume`, a run with a checkpoint (one that a SIGTERM, e.g. to a
    killed comparison, saved) continues from it (`train_or_continue`).
    """
    if jobs < 1:
        raise HJPruneInputError(f"jobs must be at least 1, got {jobs}")
    if jobs == 1 or len(recipes) < 2:
        return [_train_or_error(recipe, keep_going, resume) for recipe in recipes]
    threads = max(1, torch.get_num_threads() // jobs)
    longest_first = sorted(range(len(recipes)), key=lambda i: -relative_cost(recipes[i]))  # a balanced finish
    context = multiprocessing.get_context("spawn")  # a fresh torch / Accelerate state per process
    parent = os.getpid()
    with ProcessPoolExecutor(
        min(jobs, len(recipes)), mp_context=context, initializer=_stop_with_parent, initargs=(parent,)
    ) as pool:
        jobs_ = [(recipes[i].to_dict(), threads, keep_going, resume, parent) for i in longest_first]
        summaries = dict(zip(longest_first, pool.map(_train_in_worker, jobs_)))
    return [summaries[i] for i in range(len(recipes))]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `hjprune train` and `python -m hf_hjprune.train`."""
    add_recipe_arguments(parser, Recipe, RECIPES_DIR)


def exit_status_of(training: Callable[[], Any]) -> int:
    """Run `training` (a command's whole run) and end the process group: 0 when it finishes, 128 + the
    signal's number when a SIGTERM stopped it after saving a checkpoint (said in the log)."""
    try:
        training()
    except TrainingStopped as stopped:
        _log(logging.WARNING, str(stopped))
        status = stopped.exit_status
    else:
        status = 0
    end_process_group()
    return status


def run(args: argparse.Namespace) -> int:
    """Load the recipe named on the command line and train it; a run stopped by SIGTERM exits with 143."""
    recipe = load_recipe(args.recipe, recipe_overrides(args))
    return exit_status_of(lambda: train(recipe, resume=args.resume))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hf_hjprune.train", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        return run(args)
    except HJPruneInputError as err:  # bad input, explained by the message; anything else keeps its traceback
        parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    raise SystemExit(main())
