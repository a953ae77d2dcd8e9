"""Fine-tune and HJ-prune a wav2vec2 / HuBERT / WavLM model for ASR (CTC) or SLU (intent classification).

One Accelerate training loop, in the style of accelerate's `examples/by_feature`::

    python -m hf_hjprune.train tiny_asr --set max_steps=50
    accelerate launch -m hf_hjprune.train wav2vec2_base_librispeech_hjmac --set output_dir=runs/w2v2
    hjprune train tiny_slu --set variant=sep --set target.cnn=0.3 --set target.transformer=0.5 --resume

A run writes to `output_dir`: `metrics.jsonl` (and TensorBoard logs when tensorboard is installed),
`checkpoints/step_N/` (resumable with `--resume`), the final model with its processor in `model/`, and
`summary.json` (recipe, parameters and MACs, test metrics before and after training, skipped files).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import multiprocessing
import re
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.logging import get_logger
from accelerate.tracking import GeneralTracker
from accelerate.utils import is_tensorboard_available, set_seed
from torch import nn
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModelForAudioClassification,
    AutoModelForCTC,
    PreTrainedModel,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2Processor,
)

from .cost import count_macs, count_params
from .data.collate import (
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
from .data.sources import check_columns, load_flite_test, load_source
from .distill import DistillationConfig, Distiller
from .pruner import HJPruner
from .recipes import TINY_PREFIX, Recipe, available_recipes, load_recipe
from .start_models import resolve_model
from .structure import FAMILIES

logger = get_logger(__name__)

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

HEAD_MODULES = ("lm_head", "projector", "classifier", "layer_weights")
"""Top-level modules (and parameters) of the task heads, which `head_learning_rate` trains."""

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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")


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


def build_model(
    recipe: Recipe,
    tokenizer: Wav2Vec2CTCTokenizer | None = None,
    label2id: dict[str, int] | None = None,
) -> PreTrainedModel:
    """The model to train: a CTC model over `tokenizer`'s vocabulary (ASR) or a classifier over
    `label2id` (SLU), built from `recipe.model` with a new head where the sizes do not match."""
    if recipe.task == "asr":
        head = "ctc"
        task_config = dict(
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            ctc_loss_reduction="mean",
            ctc_zero_infinity=True,
        )
    else:
        head = "classification"
        task_config = dict(
            num_labels=len(label2id), label2id=label2id, id2label={i: name for name, i in label2id.items()}
        )
    if recipe.model.startswith(TINY_PREFIX):
        family = FAMILIES[recipe.model[len(TINY_PREFIX) :]]
        config = family.stock_config(**{**TINY_CONFIG, **task_config, **recipe.model_config})
        return family.stock_models[head](config)
    auto_class = AutoModelForCTC if head == "ctc" else AutoModelForAudioClassification
    try:
        if recipe.init == "random":  # the start model's architecture with new weights
            config = AutoConfig.from_pretrained(
                resolve_model(recipe.model), **task_config, **recipe.model_config
            )
            return auto_class.from_config(config)
        model, info = auto_class.from_pretrained(
            resolve_model(recipe.model),
            ignore_mismatched_sizes=True,
            output_loading_info=True,
            **{**task_config, **recipe.model_config},
        )
    except OSError as err:  # not a local checkpoint, and not on the Hub or offline (HF_HUB_OFFLINE=1)
        raise ValueError(f"cannot load the model {recipe.model!r}: {err}") from err
    if "layer_weights" in info["missing_keys"]:
        # transformers leaves a new `layer_weights` (weighted layer sum) uninitialised: memory garbage
        # that made runs irreproducible. Start from the stock value, an equal mix of the layers.
        with torch.no_grad():
            model.layer_weights.fill_(1.0 / len(model.layer_weights))
    return model


def load_tokenizer(recipe: Recipe, transcripts: list[str]) -> Wav2Vec2CTCTokenizer:
    """The tokenizer saved next to a local `recipe.model`, else a new one over the training characters."""
    if (Path(resolve_model(recipe.model)) / "vocab.json").is_file():
        return Wav2Vec2CTCTokenizer.from_pretrained(resolve_model(recipe.model))
    return build_tokenizer(transcripts)


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
    """Train (shuffled by seed and epoch, grouped by length), validation and test dataloaders."""

    def dataloader(split: str, batch_size: int, sampler: Iterable[int]) -> DataLoader:
        return DataLoader(
            splits[split],
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=collator,
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
    optimizer = torch.optim.AdamW(groups)
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


def save_checkpoint(accelerator: Accelerator, output_dir: Path, step: int, keep: int) -> None:
    """`accelerator.save_state` into `checkpoints/step_{step}`, renamed once complete; keep the last `keep`."""
    directory = output_dir / "checkpoints" / f"step_{step}"
    partial = directory.with_name(f"{directory.name}.partial")
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(directory, ignore_errors=True)
        partial.rename(directory)
        for old in checkpoints(output_dir)[:-keep] if keep else []:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop the records logged after `step`: by a killed run after its last checkpoint, or by an
    earlier run in the same directory (`step` 0)."""
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        path.write_text("".join(line for line in lines if json.loads(line)["step"] <= step), encoding="utf-8")


def _flat_config(values: dict[str, Any]) -> dict[str, Any]:
    """Recipe values as trackers accept them: scalars, anything else (mappings, None) as JSON."""
    return {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v) for k, v in values.items()}


def train(recipe: Recipe, resume: bool = False) -> dict[str, Any]:
    """Run a recipe to the end and return its summary (also written to `output_dir/summary.json`).

    Everything that can be wrong with the input (data source, missing column, no usable audio,
    unreachable pruning target, nothing to resume) raises `ValueError` before the first step.
    """
    if recipe.final_finetune_steps:
        return train_with_final_finetune(recipe, resume)
    output_dir = Path(recipe.output_dir)
    found = checkpoints(output_dir)
    if resume and not found:
        raise ValueError(f"--resume: no checkpoint to resume from in {output_dir / 'checkpoints'}")
    if found and not resume:
        raise ValueError(
            f"{output_dir} holds checkpoints of an earlier run (up to {found[-1].name}): pass --resume to "
            "continue it, or choose another output_dir"
        )
    checkpoint = found[-1] if resume else None

    log_with: list[Any] = [JsonlTracker(output_dir / "metrics.jsonl")]
    if is_tensorboard_available():
        log_with.append("tensorboard")
    accelerator = Accelerator(
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        mixed_precision=recipe.mixed_precision,
        log_with=log_with,
        project_dir=str(output_dir),
        # The schedule counts optimizer updates: the scheduler steps once per update, not once per process.
        step_scheduler_with_optimizer=False,
    )
    set_seed(recipe.seed)

    # Data, vocabulary or labels, model and pruner: every check that needs no audio comes first.
    with accelerator.main_process_first():  # the main process builds or downloads, the others reuse
        dataset = load_source(recipe.data, **recipe.data_options)
    check_columns(dataset, recipe.task)
    feature_extractor = build_feature_extractor()
    tokenizer = label2id = None
    if recipe.task == "asr":
        tokenizer = load_tokenizer(recipe, list(dataset["train"]["text"]))
        processor = Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer)
        target_column = "text"

        def encode(text: str) -> list[int]:
            return tokenizer(normalize_transcript(text)).input_ids
    else:
        label2id = build_label2id(dataset["train"]["intent"])
        processor = feature_extractor
        target_column = "intent"
        encode = label2id.get  # None for an intent unseen in training: the row is skipped

    model = build_model(recipe, tokenizer, label2id)
    before = {"params": count_params(model).as_dict(), "macs": count_macs(model, recipe.seconds).as_dict()}
    # The pruner gates the model in place; keep the starting model aside for its evaluation.
    starting_model = copy.deepcopy(model) if recipe.variant != "none" and checkpoint is None else model
    pruner = None
    if recipe.variant != "none":
        pruner = HJPruner(
            model,
            variant=recipe.variant,
            target=recipe.target,
            warmup_steps=recipe.num_target_warmup_steps,
            target_reference=recipe.target_reference,
            lambda_clip=recipe.lambda_clip,
            seconds=recipe.seconds,
            prune_blocks=recipe.prune_blocks,
            round_to=recipe.round_to,
        )

    splits = {
        split: prepare_split(dataset[split], target_column, encode, split, keep_audio=recipe.cache_audio)
        for split in SPLITS
    }
    collator = SpeechCollator(feature_extractor)
    train_dataloader, validation_dataloader, test_dataloader = build_dataloaders(recipe, splits, collator)
    ood_dataloader = build_ood_dataloader(recipe, dataset["test"], target_column, encode, collator)
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
    progress = Progress()
    accelerator.register_for_checkpointing(progress)

    if checkpoint is not None:
        logger.info(f"Resuming from {checkpoint}", main_process_only=True)
        accelerator.load_state(str(checkpoint))
        if progress.batches_in_epoch >= len(train_dataloader):
            progress.epoch, progress.batches_in_epoch = progress.epoch + 1, 0
    else:
        progress.metrics_before = evaluate(
            starting_model.to(accelerator.device), test_dataloader, accelerator, tokenizer
        )
        logger.info(f"Test metrics before training: {progress.metrics_before}", main_process_only=True)
    del starting_model
    if accelerator.is_main_process:
        _truncate_metrics(output_dir / "metrics.jsonl", progress.step)
    accelerator.init_trackers("hjprune", config=_flat_config(recipe.to_dict()))

    model_parameters = list(model.parameters())
    window = torch.zeros(3, device=accelerator.device)  # task loss, penalty, batches since the last log
    progress_bar = tqdm(
        total=recipe.max_steps,
        initial=progress.step,
        desc="train",
        disable=not accelerator.is_local_main_process,
    )
    trained.train()
    started, seconds_before = time.perf_counter(), progress.train_seconds
    while progress.step < recipe.max_steps:
        train_dataloader.set_epoch(progress.epoch)
        batches = accelerator.skip_first_batches(train_dataloader, progress.batches_in_epoch)
        for batch in batches:
            with accelerator.accumulate(trained):
                loss, objective = task_loss(trained, batch, distiller, distill, model)
                penalty = pruner.penalty(progress.step) if pruner is not None else torch.zeros_like(loss)
                accelerator.backward(objective + penalty)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model_parameters, recipe.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            progress.batches_in_epoch += 1
            window += torch.stack([loss.detach(), penalty.detach(), torch.ones_like(loss)]).float()
            if not accelerator.sync_gradients:
                continue

            scheduler.step()
            progress.step += 1
            progress.train_seconds = seconds_before + time.perf_counter() - started
            progress_bar.update(1)
            if progress.step % recipe.log_steps == 0:
                loss_sum, penalty_sum, count = accelerator.reduce(window, reduction="sum").tolist()
                window.zero_()
                metrics = {
                    "train/loss": loss_sum / count,
                    "train/penalty": penalty_sum / count,
                    "train/lr": scheduler.get_last_lr()[0],
                    "train/seconds": progress.train_seconds,
                }
                if pruner is not None:
                    metrics.update(
                        {f"pruning/{name}": value for name, value in pruner.stats(progress.step).items()}
                    )
                accelerator.log(metrics, step=progress.step)
                progress_bar.set_postfix(loss=f"{metrics['train/loss']:.3f}")
            if recipe.eval_steps and progress.step % recipe.eval_steps == 0:
                metrics = evaluate(trained, validation_dataloader, accelerator, tokenizer)
                accelerator.log(
                    {f"validation/{name}": value for name, value in metrics.items()}, step=progress.step
                )
            if recipe.checkpoint_steps and progress.step % recipe.checkpoint_steps == 0:
                save_checkpoint(accelerator, output_dir, progress.step, recipe.keep_checkpoints)
            if progress.step >= recipe.max_steps:
                break
        else:
            progress.epoch, progress.batches_in_epoch = progress.epoch + 1, 0
    progress_bar.close()

    accelerator.wait_for_everyone()
    adjusted = (
        pruner.match_target(recipe.target_tolerance)
        if pruner is not None and recipe.target_tolerance is not None
        else None
    )
    final = pruner.export() if pruner is not None else model
    metrics_after = evaluate(final, test_dataloader, accelerator, tokenizer)
    logger.info(f"Test metrics after training: {metrics_after}", main_process_only=True)
    final.save_pretrained(
        output_dir / "model", is_main_process=accelerator.is_main_process, save_function=accelerator.save
    )
    summary = {
        "recipe": recipe.to_dict(),
        "variant": recipe.variant,
        "target": recipe.target if recipe.variant != "none" else None,
        "steps": progress.step,
        "train_seconds": progress.train_seconds,
        "num_processes": accelerator.num_processes,
        "params": {"before": before["params"], "after": count_params(final).as_dict()},
        "macs": {
            "seconds": recipe.seconds,
            "before": before["macs"],
            "after": count_macs(final, recipe.seconds).as_dict(),
        },
        "metrics": {"before": progress.metrics_before, "after": metrics_after},
        "skipped_files": {split: splits[split].skipped_counts for split in SPLITS},
    }
    if recipe.ood_test is not None:
        summary["ood_test"] = {"source": recipe.ood_test}
        if ood_dataloader is None:
            summary["ood_test"]["skipped"] = "flite is not installed"
        else:
            summary["ood_test"]["metrics"] = evaluate(final, ood_dataloader, accelerator, tokenizer)
            logger.info(f"Out-of-domain ({recipe.ood_test}) test metrics: {summary['ood_test']['metrics']}",
                        main_process_only=True)  # fmt: skip
    if pruner is not None:
        summary["pruning"] = pruner.stats(progress.step)
        if adjusted is not None:
            summary["pruning"] |= {"units_removed_to_meet_target": adjusted["removed"],
                                   "units_added_to_meet_target": adjusted["added"]}  # fmt: skip
    if accelerator.is_main_process:
        processor.save_pretrained(output_dir / "model")
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    accelerator.end_training()
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
        shutil.rmtree(output_dir / "model", ignore_errors=True)
        shutil.copytree(output_dir / "finetune" / "model", output_dir / "model")
        lines = [json.loads(line) for line in _read_lines(output_dir / "prune" / "metrics.jsonl")]
        lines += [{**json.loads(line), "step": json.loads(line)["step"] + pruned["steps"]}
                  for line in _read_lines(output_dir / "finetune" / "metrics.jsonl")]  # fmt: skip
        (output_dir / "metrics.jsonl").write_text(
            "".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8"
        )
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    PartialState().wait_for_everyone()
    return summary


def _phase(recipe: Recipe, resume: bool) -> dict[str, Any]:
    """Run one phase of a chained run; with `resume`, a finished phase is reused as it is."""
    summary_path = Path(recipe.output_dir) / "summary.json"
    if resume and summary_path.is_file():
        return json.loads(summary_path.read_text(encoding="utf-8"))
    return train(recipe, resume=resume and bool(checkpoints(Path(recipe.output_dir))))


def _read_lines(path: Path) -> list[str]:
    return (
        [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if path.is_file()
        else []
    )


def _train_or_error(recipe: Recipe, keep_going: bool) -> dict[str, Any]:
    try:
        return train(recipe)
    except ValueError as err:  # bad input, found before the first step
        if not keep_going:
            raise
        logger.warning(f"{recipe.output_dir}: not trained: {err}", main_process_only=True)
        return {"error": str(err)}


def _train_in_worker(job: tuple[dict[str, Any], int, bool]) -> dict[str, Any]:
    values, threads, keep_going = job
    torch.set_num_threads(threads)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    return _train_or_error(Recipe.from_dict(values), keep_going)


def train_all(recipes: Sequence[Recipe], jobs: int = 1, keep_going: bool = False) -> list[dict[str, Any]]:
    """Run independent recipes to the end, `jobs` at a time, and return their summaries in order.

    With `jobs > 1` each run trains in its own process with `cores // jobs` threads: on a CPU, small
    models train faster side by side than one after the other on all cores. With `keep_going`, a
    recipe that `train` rejects (a `ValueError`, e.g. an unreachable target) gives `{"error": message}`
    instead of stopping the others.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    if jobs == 1 or len(recipes) < 2:
        return [_train_or_error(recipe, keep_going) for recipe in recipes]
    threads = max(1, torch.get_num_threads() // jobs)
    longest_first = sorted(range(len(recipes)), key=lambda i: -recipes[i].max_steps)  # a balanced finish
    context = multiprocessing.get_context("spawn")  # a fresh torch / Accelerate state per process
    with ProcessPoolExecutor(min(jobs, len(recipes)), mp_context=context) as pool:
        jobs_ = [(recipes[i].to_dict(), threads, keep_going) for i in longest_first]
        summaries = dict(zip(longest_first, pool.map(_train_in_worker, jobs_)))
    return [summaries[i] for i in range(len(recipes))]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `hjprune train` and `python -m hf_hjprune.train`."""
    parser.add_argument(
        "recipe",
        help=f"a YAML recipe file, or the name of a shipped recipe: {', '.join(available_recipes())}",
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


def run(args: argparse.Namespace) -> None:
    """Load the recipe named on the command line and train it."""
    overrides = [*args.overrides, *([f"output_dir={args.output_dir}"] if args.output_dir else [])]
    train(load_recipe(args.recipe, overrides), resume=args.resume)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hf_hjprune.train", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        run(args)
    except ValueError as err:
        parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    main()
