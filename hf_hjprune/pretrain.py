"""Self-supervised pretraining of a wav2vec2 / HuBERT / WavLM encoder on unlabeled audio.

The start models that HJ-Pruning compresses are self-supervised; this makes small ones here::

    hjprune pretrain tiny_hubert_iter1 --set max_steps=100
    accelerate launch -m hf_hjprune.pretrain tiny_hubert_iter1
    hjprune pretrain tiny_hubert_iter1 --resume

Objectives:
- `hubert` (HuBERT): predict the k-means cluster of each masked frame. Iteration 1 clusters MFCCs,
  iteration 2 a hidden layer of an iteration-1 model (`targets: layer`, `target_model`). The targets are
  computed from the clean signal while the encoder hears the augmented one (WavLM's denoising masked
  prediction); the loss is the cross-entropy over masked frames (plus `unmasked_loss_weight` times the
  one over unmasked frames), with HuBERT's cosine-similarity logits. Any family's encoder.
- `wav2vec2` (wav2vec 2.0): transformers' `Wav2Vec2ForPreTraining` (contrastive loss against sampled
  negatives, diversity loss, Gumbel temperature decay), gradients scaled by 1 / masked frames as in
  transformers' `run_wav2vec2_pretraining_no_trainer.py`. It is known to collapse at small scale: the
  codevector perplexity is logged, and the run stops with an error when it falls below
  `collapse_perplexity`.

- `ctc` (a supervised fallback): CTC over the IPA phonemes that eSpeak NG spoke in the broad-speech
  corpus — multilingual phoneme recognition, still broad and not the downstream task.

Batches are fixed-length windows drawn from the concatenated unlabeled audio, reproducibly from
(seed, step, process) (whole utterances for `ctc`): a resumed run sees exactly the batches it would
have seen. A run writes to
`output_dir`: `metrics.jsonl`, `codebook.npz`, `checkpoints/step_N/`, the encoder in `model/`
(`save_pretrained`, with its feature extractor: a `model:` that `hjprune train` accepts) and
`summary.json`.

Map of this module: `PretrainRecipe` (the settings) → `WindowSampler` / `PretrainingBatches` (data) →
`MaskedPrediction` / `Contrastive` / `SupervisedCTC` (the objectives, around the encoder) → `pretrain()`
in numbered phases: `_set_up_pretraining` (1. accelerator, 2. data, 3. objective and targets,
4. optimizer and resume), `_pretrain_loop` (5. train), `_finish_pretraining` (6. save and summary),
sharing a `PretrainingRun` → `add_arguments` / `run` (the command line).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from torch import nn
from transformers import (
    AutoModel,
    PreTrainedModel,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2ForPreTraining,
    Wav2Vec2Processor,
)
from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices

from .atomic import atomic_write_json, partial_directory, publish_directory
from .cost import count_macs, count_params
from .data.augment import Augmentation
from .data.collate import build_feature_extractor, build_tokenizer
from .data.unlabeled import UnlabeledAudio, load_unlabeled
from .errors import HJPruneInputError
from .progress import ProgressReporter, quiet_progress_bars
from .recipes import (
    MIXED_PRECISION,
    RECIPES_DIR,
    RecipeBase,
    add_recipe_arguments,
    available_recipes,
    read_recipe_values,
    recipe_overrides,
    validate_fields,
)
from .start_models import load_start_model, new_model, resolve_model
from .structure import FAMILIES, SAMPLING_RATE, family_of
from .targets import Codebook, layer_features, mfcc_features
from .train import (
    JsonlTracker,
    Progress,
    StopSignal,
    _start,
    build_accelerator,
    checkpoints,
    end_of_step,
    end_trackers,
    exit_status_of,
    linear_schedule,
    load_checkpoint,
    start_tracking,
)

logger = get_logger(__name__)

PRETRAIN_RECIPES_DIR = RECIPES_DIR / "pretrain"
OBJECTIVES = ("hubert", "wav2vec2", "ctc")
TARGETS = ("mfcc", "layer")
CTC_TARGETS = ("phonemes", "text")


class PretrainingCollapsedError(RuntimeError):
    """The contrastive objective collapsed (codevector perplexity near its minimum)."""


@dataclass
class PretrainRecipe(RecipeBase):
    """Everything one pretraining run needs. Steps count optimizer updates.

    Each field explains itself in its metadata (`help`), which `hjprune pretrain --help` lists.
    """

    family: str = field(
        default="hubert",
        metadata={
            "help": '"wav2vec2", "hubert" or "wavlm": the encoder to build (ignored with `init_from`, whose '
            "family is used)."
        },
    )
    model_config: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "Config fields of the new encoder (sizes, norms, dropouts)."}
    )
    init_from: str | None = field(
        default=None,
        metadata={
            "help": "A checkpoint (path or `pretrained:` name) to continue from instead of a random encoder."
        },
    )
    objective: str = field(
        default="hubert",
        metadata={
            "help": '"hubert" (masked prediction of cluster targets), "wav2vec2" (contrastive; wav2vec2 '
            'family only) or "ctc" (supervised: the phonemes of broad speech).'
        },
    )
    targets: str = field(
        default="mfcc",
        metadata={
            "help": '"mfcc" (iteration 1) or "layer" (iteration 2: clusters of `target_layer` of '
            "`target_model`)."
        },
    )
    target_model: str | None = field(
        default=None,
        metadata={"help": "The checkpoint whose hidden states are clustered (default: `init_from`)."},
    )
    target_layer: int = field(
        default=4, metadata={"help": "Which hidden state: 0 is the Transformer's input, i after i layers."}
    )
    num_clusters: int = field(
        default=100, metadata={"help": "k-means clusters (the number of classes predicted)."}
    )
    kmeans_utterances: int = field(
        default=1000, metadata={"help": "Training utterances whose frames k-means is fitted on."}
    )
    kmeans_frames: int = field(
        default=200_000, metadata={"help": "At most this many frames (sampled) go into k-means."}
    )
    projection_size: int = field(
        default=128, metadata={"help": "Dimension of the projection compared with the cluster embeddings."}
    )
    logit_temperature: float = field(
        default=0.1, metadata={"help": "Temperature of the cosine-similarity logits."}
    )
    mask_time_prob: float = field(
        default=0.8,
        metadata={
            "help": "Share of frames that start a masked span (HuBERT: 0.8; wav2vec 2.0: 0.65; for `ctc` it "
            "is SpecAugment, e.g. 0.05)."
        },
    )
    mask_time_length: int = field(default=10, metadata={"help": "Frames per masked span."})
    unmasked_loss_weight: float = field(
        default=0.0, metadata={"help": "Weight of the prediction loss on unmasked frames."}
    )
    num_negatives: int = field(
        default=100, metadata={"help": "Distractors per masked frame (`wav2vec2` objective)."}
    )
    gumbel_temperature: list[float] = field(
        default_factory=lambda: [2.0, 0.5, 0.999995],
        metadata={"help": "Start, end and per-step decay of the Gumbel softmax temperature."},
    )
    collapse_perplexity: float = field(
        default=4.0,
        metadata={"help": "Stop when the codevector perplexity stays below this after warm-up."},
    )
    data: str = field(
        default="broad_speech",
        metadata={
            "help": '"broad_speech" or a local folder of audio files (see `hf_hjprune.data.unlabeled`).'
        },
    )
    data_options: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Options of the source (`hours`, `seed`, `cache_dir` for broad speech)."},
    )
    augmentation: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Fields of `hf_hjprune.data.augment.Augmentation` to override."},
    )
    crop_seconds: float = field(
        default=3.0, metadata={"help": "Length of every training window (`hubert`, `wav2vec2`)."}
    )
    max_utterance_seconds: float = field(
        default=8.0,
        metadata={"help": "The longest utterance trained on (`ctc`, which reads whole utterances)."},
    )
    ctc_targets: str = field(
        default="phonemes",
        metadata={
            "help": 'What `ctc` predicts: "phonemes" (eSpeak NG\'s IPA, every language; the saved model is '
            'the encoder) or "text" (characters; the saved model is the whole CTC model with its '
            "vocabulary, a speech recogniser)."
        },
    )
    languages: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Train `ctc` only on the utterances of these languages (e.g. `[en]`); all if empty."
        },
    )
    validation_windows: int = field(
        default=64, metadata={"help": "Windows of the held-out audio evaluated every `eval_steps`."}
    )
    batch_size: int = field(default=8, metadata={"help": "Windows per batch and process."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimizer update."})
    max_steps: int = field(default=10_000, metadata={"help": "Optimizer updates."})
    learning_rate: float = field(
        default=5e-4, metadata={"help": "Peak learning rate (linear warm-up, then linear decay to 0)."}
    )
    warmup_ratio: float = field(default=0.08, metadata={"help": "Share of `max_steps` spent warming up."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=10.0, metadata={"help": "Gradient clipping."})
    finetune_config: dict[str, Any] = field(
        default_factory=lambda: {"mask_time_prob": 0.05},
        metadata={
            "help": "Config values written into the saved encoder for fine-tuning (e.g. its SpecAugment "
            "`mask_time_prob`)."
        },
    )
    eval_steps: int = field(
        default=0,
        metadata={"help": "Evaluate on the validation windows every this many steps (0: only at the end)."},
    )
    checkpoint_steps: int = field(
        default=0, metadata={"help": "Save a resumable checkpoint every this many steps (0: never)."}
    )
    keep_checkpoints: int = field(
        default=0, metadata={"help": "How many of the latest checkpoints to keep (0: all)."}
    )
    log_steps: int = field(default=10, metadata={"help": "Log training metrics every this many steps."})
    seed: int = field(default=0, metadata={"help": "Seed of initialisation, batches, masks and dropout."})
    mixed_precision: str = field(
        default="no", metadata={"help": '"no", "fp16", "bf16" or "auto" (as in `hjprune train`).'}
    )
    output_dir: str = field(default="outputs/pretrain", metadata={"help": "Where the run writes."})

    def __post_init__(self) -> None:
        validate_fields(self)
        self._check_choices({"family": tuple(FAMILIES), "objective": OBJECTIVES, "targets": TARGETS,
                             "ctc_targets": CTC_TARGETS, "mixed_precision": MIXED_PRECISION})  # fmt: skip
        self._check_at_least_one(
            "max_steps", "batch_size", "gradient_accumulation_steps", "log_steps", "mask_time_length"
        )
        self._check_not_negative(
            "eval_steps", "checkpoint_steps", "keep_checkpoints", "weight_decay", "target_layer"
        )
        self._check_at_least_one("validation_windows", "kmeans_utterances", "num_negatives")
        if not 0.0 < self.mask_time_prob <= 1.0:
            raise HJPruneInputError(f"mask_time_prob must be in (0, 1], got {self.mask_time_prob}")
        self._check_ratio("warmup_ratio")
        if self.crop_seconds < 0.1:
            raise HJPruneInputError(f"crop_seconds must be at least 0.1, got {self.crop_seconds}")
        if (
            self.objective == "hubert"
            and self.targets == "layer"
            and not (self.target_model or self.init_from)
        ):
            raise HJPruneInputError(
                "targets: layer needs a target_model (or init_from) whose hidden states are clustered"
            )
        if self.objective == "wav2vec2" and self.family != "wav2vec2" and self.init_from is None:
            raise HJPruneInputError(
                f"the wav2vec2 (contrastive) objective needs the wav2vec2 family, not {self.family!r}"
            )
        if len(self.gumbel_temperature) != 3:
            raise HJPruneInputError(
                f"gumbel_temperature is [start, end, decay], got {self.gumbel_temperature}"
            )
        unknown = set(self.augmentation) - {f.name for f in dataclasses.fields(Augmentation)}
        if unknown:
            known = ", ".join(f.name for f in dataclasses.fields(Augmentation))
            raise HJPruneInputError(f"unknown augmentation field(s) {sorted(unknown)}; known: {known}")

    @property
    def num_warmup_steps(self) -> int:
        return round(self.warmup_ratio * self.max_steps)

    @property
    def crop_samples(self) -> int:
        return round(self.crop_seconds * SAMPLING_RATE)

    @classmethod
    def _unknown_keys_message(cls, unknown: set[str], known: list[str], source: str) -> str:
        # Its own wording (a list of the unknown keys), which scripts and tests may match.
        return (
            f"unknown pretraining recipe key(s) {sorted(unknown)} in {source}; known keys: {', '.join(known)}"
        )


def load_pretrain_recipe(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> PretrainRecipe:
    """A shipped pretraining recipe by name (`hf_hjprune/recipes/pretrain/`) or a YAML file, with overrides."""
    values, source = read_recipe_values(name_or_path, overrides, PRETRAIN_RECIPES_DIR)
    return PretrainRecipe.from_dict(values, source=source)


# ---------------------------------------------------------------------------------------------
# data: fixed-length windows of the unlabeled audio


class WindowSampler:
    """Windows of a given length at uniformly random positions of the concatenated utterances."""

    def __init__(self, source: UnlabeledAudio):
        self.source = source
        self.starts = np.concatenate([[0], np.cumsum(source.lengths)])

    @property
    def total(self) -> int:
        return int(self.starts[-1])

    def window(self, rng: np.random.Generator, num_samples: int) -> np.ndarray:
        """`num_samples` consecutive samples, continuing into the next utterances where one ends."""
        if num_samples > self.total:
            raise HJPruneInputError(
                f"the audio holds {self.total / SAMPLING_RATE:.1f} s, less than one {num_samples / SAMPLING_RATE:.1f} s window"
            )
        position = int(rng.integers(self.total - num_samples + 1))
        index = int(np.searchsorted(self.starts, position, side="right")) - 1
        parts, needed, offset = [], num_samples, position - int(self.starts[index])
        while needed > 0:
            audio = self.source.audio(index)[offset : offset + needed]
            parts.append(audio)
            needed -= len(audio)
            index, offset = index + 1, 0
        return np.concatenate(parts)


@contextlib.contextmanager
def numpy_global_seed(seed: int) -> Iterator[None]:
    """Seed numpy's global generator (which transformers' mask samplers use) for the block only."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def normalize(audio: list[np.ndarray]) -> torch.Tensor:
    """Zero mean and unit variance per utterance, as `Wav2Vec2FeatureExtractor(do_normalize=True)`."""
    stacked = np.stack(audio)
    stacked = (stacked - stacked.mean(1, keepdims=True)) / np.sqrt(stacked.var(1, keepdims=True) + 1e-7)
    return torch.from_numpy(stacked.astype(np.float32))


@dataclass
class PretrainingBatches:
    """The batch of any (step, micro-batch, process), drawn reproducibly from the seed.

    A batch holds `input_values` (augmented, normalised), `clean_audio` (the clean windows, for
    targets), and the frame `mask_time_indices`; `add_targets` adds what the objective predicts.
    """

    sampler: WindowSampler
    augmentation: Augmentation
    batch_size: int
    crop_samples: int
    num_frames: int
    mask_time_prob: float
    mask_time_length: int
    seed: int

    def __call__(self, *position: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, *position])
        longest = math.ceil(self.crop_samples * max(self.augmentation.speed_range))
        clean = []
        for _ in range(self.batch_size):
            audio = self.augmentation.speed(self.sampler.window(rng, longest), rng)[: self.crop_samples]
            clean.append(np.pad(audio, (0, self.crop_samples - len(audio))))
        noisy = [self.augmentation.degrade(c, rng, lambda n: self.sampler.window(rng, n)) for c in clean]
        with numpy_global_seed(int(rng.integers(2**32))):
            mask = _compute_mask_indices(
                (self.batch_size, self.num_frames), self.mask_time_prob, self.mask_time_length, min_masks=2
            )
        return {
            "input_values": normalize(noisy),
            "clean_audio": clean,
            "mask_time_indices": torch.from_numpy(mask),
            "seed": int(rng.integers(2**32)),
        }


@dataclass
class UtteranceBatches:
    """Batches of whole transcribed utterances (padded, with `attention_mask` and CTC `labels`), drawn
    reproducibly from (seed, step, micro-batch, process) among those of at most `max_samples`, each
    batch among utterances of similar lengths."""

    source: UnlabeledAudio
    labels: list[list[int]]
    augmentation: Augmentation
    batch_size: int
    max_samples: int
    seed: int

    def __post_init__(self) -> None:
        lengths = self.source.lengths
        # By length: a batch is drawn among neighbours in this order, so it pads little.
        self.eligible = sorted(
            (i for i, n in enumerate(lengths) if n <= self.max_samples and self.labels[i]),
            key=lengths.__getitem__,
        )
        if not self.eligible:
            raise HJPruneInputError(
                f"no transcribed utterance is at most {self.max_samples / SAMPLING_RATE:.1f} s long"
            )
        self.mean_seconds = float(np.mean([lengths[i] for i in self.eligible])) / SAMPLING_RATE

    def __call__(self, *position: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, *position])
        span = min(len(self.eligible), 8 * self.batch_size)
        start = int(rng.integers(len(self.eligible) - span + 1))
        chosen = [self.eligible[start + int(k)] for k in rng.choice(span, self.batch_size)]

        def other(n: int) -> np.ndarray:  # another utterance, repeated or cut to n samples
            return np.resize(self.source.audio(int(rng.choice(self.eligible))), n)

        audio = [self.augmentation.speed(self.source.audio(i), rng) for i in chosen]
        audio = [self.augmentation.degrade(a, rng, other) for a in audio]
        longest = max(len(a) for a in audio)
        input_values = torch.zeros(len(audio), longest)
        attention_mask = torch.zeros(len(audio), longest, dtype=torch.long)
        for row, a in enumerate(audio):
            input_values[row, : len(a)] = normalize([a])[0]
            attention_mask[row, : len(a)] = 1
        labels = torch.full((len(chosen), max(len(self.labels[i]) for i in chosen)), -100, dtype=torch.long)
        for row, i in enumerate(chosen):
            labels[row, : len(self.labels[i])] = torch.tensor(self.labels[i])
        return {"input_values": input_values, "attention_mask": attention_mask, "labels": labels}


def clean_phonemes(phonemes: str) -> str:
    """eSpeak NG's IPA without its language-switch tags (`(en)`), stress marks and separators."""
    phonemes = re.sub(r"\([a-z-]+\)", " ", phonemes)
    return " ".join(phonemes.translate(_DROPPED_PHONEME_MARKS).split())


_DROPPED_PHONEME_MARKS = str.maketrans("", "", "ˈˌ-?")


# ---------------------------------------------------------------------------------------------
# objectives


class MaskedPrediction(nn.Module):
    """HuBERT's objective around an encoder: a projection, one embedding per cluster, cosine logits.

    `forward` takes a batch with `labels` (`(batch, frames)` cluster ids) and returns the loss and
    the prediction accuracy on masked and unmasked frames.
    """

    def __init__(self, encoder: PreTrainedModel, num_clusters: int, projection_size: int, temperature: float,
                 unmasked_loss_weight: float = 0.0):  # fmt: skip
        super().__init__()
        self.encoder = encoder
        self.projection = nn.Linear(encoder.config.hidden_size, projection_size)
        self.cluster_embeddings = nn.Parameter(
            torch.randn(num_clusters, projection_size) / projection_size**0.5
        )
        self.temperature = temperature
        self.unmasked_loss_weight = unmasked_loss_weight

    def forward(self, input_values: torch.Tensor, mask_time_indices: torch.Tensor, labels: torch.Tensor,
                **_: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
        hidden = self.encoder(input_values, mask_time_indices=mask_time_indices).last_hidden_state
        projected = F.normalize(self.projection(hidden), dim=-1)
        logits = projected @ F.normalize(self.cluster_embeddings, dim=-1).T / self.temperature
        metrics, loss = {}, torch.zeros((), device=logits.device)
        for name, where, weight in (
            ("masked", mask_time_indices, 1.0),
            ("unmasked", ~mask_time_indices, self.unmasked_loss_weight),
        ):
            part_loss = F.cross_entropy(logits[where].float(), labels[where])
            metrics[f"{name}_loss"] = part_loss.detach()
            metrics[f"{name}_accuracy"] = (logits[where].argmax(-1) == labels[where]).float().mean().detach()
            if weight:
                loss = loss + weight * part_loss
        return loss, metrics


class Contrastive(nn.Module):
    """wav2vec 2.0's objective: transformers' `Wav2Vec2ForPreTraining`, loss per masked frame."""

    def __init__(self, model: Wav2Vec2ForPreTraining):
        super().__init__()
        self.model = model

    @property
    def encoder(self) -> PreTrainedModel:
        return self.model.wav2vec2

    def forward(self, input_values: torch.Tensor, mask_time_indices: torch.Tensor,
                sampled_negative_indices: torch.Tensor, **_: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
        out = self.model(
            input_values,
            mask_time_indices=mask_time_indices,
            sampled_negative_indices=sampled_negative_indices,
        )
        num_masked = mask_time_indices.sum()
        metrics = {
            "contrastive_loss": (out.contrastive_loss / num_masked).detach(),
            "diversity_loss": (out.diversity_loss / num_masked).detach(),
            "codevector_perplexity": out.codevector_perplexity.detach(),
        }
        return out.loss / num_masked, metrics


class SupervisedCTC(nn.Module):
    """Supervised pretraining: a CTC model over phonemes or characters; in eval mode it also reports the
    phoneme (or character) error rate of greedy decoding over each utterance's valid frames."""

    def __init__(
        self, model: PreTrainedModel, base_model_prefix: str, tokenizer: Wav2Vec2CTCTokenizer, targets: str
    ):
        super().__init__()
        self.model = model
        self.base_model_prefix = base_model_prefix
        self.tokenizer = tokenizer
        self.metric = "phoneme_error_rate" if targets == "phonemes" else "character_error_rate"

    @property
    def encoder(self) -> PreTrainedModel:
        return getattr(self.model, self.base_model_prefix)

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                **_: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
        out = self.model(input_values, attention_mask=attention_mask, labels=labels)
        if self.training:
            return out.loss, {}
        frames = self.model._get_feat_extract_output_lengths(attention_mask.sum(-1))
        predicted = out.logits.argmax(-1)
        hypotheses = self.tokenizer.batch_decode([ids[:n].tolist() for ids, n in zip(predicted, frames)])
        references = self.tokenizer.batch_decode(
            [ids[ids != -100].tolist() for ids in labels], group_tokens=False
        )
        error_rate = jiwer.cer(references, [h if h else "-" for h in hypotheses])
        return out.loss, {self.metric: torch.tensor(error_rate)}


# ---------------------------------------------------------------------------------------------
# building blocks of the loop


def build_encoder(recipe: PretrainRecipe) -> PreTrainedModel:
    """The encoder to pretrain: `init_from` loaded as a base model, or a new one from `model_config`.

    Its config's span masking is the pretraining one (a positive `mask_time_prob` is also what makes
    transformers create the learned mask embedding); `finetune_config` replaces it when saving.
    """
    masking = {"mask_time_prob": recipe.mask_time_prob, "mask_time_length": recipe.mask_time_length}
    if recipe.init_from is not None:
        encoder, _ = load_start_model(recipe.init_from, "base", masking, dtype=torch.float32)
        family_of(encoder)  # a supported family, or a clear error
        return encoder
    return new_model(recipe.family, "base", {**recipe.model_config, **masking})


def load_target_model(recipe: PretrainRecipe) -> PreTrainedModel | None:
    """The frozen model whose hidden states are clustered (`targets: layer`), else None."""
    if recipe.objective != "hubert" or recipe.targets != "layer":
        return None
    model = AutoModel.from_pretrained(
        resolve_model(recipe.target_model or recipe.init_from), dtype=torch.float32
    )
    return model.eval().requires_grad_(False)


def frame_features(
    recipe: PretrainRecipe, clean_audio: list[np.ndarray], target_model: nn.Module | None
) -> torch.Tensor:
    """`(batch, frames, dim)` features of clean windows that the codebook labels."""
    if target_model is None:
        return torch.from_numpy(np.stack([mfcc_features(audio) for audio in clean_audio]))
    return layer_features(target_model, normalize(clean_audio), recipe.target_layer)


def fit_codebook(recipe: PretrainRecipe, source: UnlabeledAudio, target_model: nn.Module | None) -> Codebook:
    """k-means on the frames of `kmeans_utterances` randomly chosen clean utterances."""
    rng = np.random.default_rng([recipe.seed, 7])
    count = min(recipe.kmeans_utterances, len(source.lengths))
    chosen = rng.choice(len(source.lengths), size=count, replace=False)
    features = []
    for index in chosen:
        audio = source.audio(int(index))
        if len(audio) >= 400:  # at least one frame
            features.append(frame_features(recipe, [audio], target_model)[0].numpy())
    frames = np.concatenate(features) if features else np.zeros((0, 1), dtype=np.float32)
    return Codebook.fit(frames, recipe.num_clusters, seed=recipe.seed, max_frames=recipe.kmeans_frames)


@dataclass
class Task:
    """An objective around the encoder, and the batches it learns from: `train_batch(step, micro,
    process)` draws a complete batch reproducibly; `validation` is a fixed list of batches."""

    objective: nn.Module
    train_batch: Callable[..., dict[str, Any]]
    validation: list[dict[str, Any]]
    seconds_per_item: float | None = None
    """Mean audio length of a batch item when items are whole utterances (None: `crop_seconds` windows)."""


def _window_batches(recipe: PretrainRecipe, encoder: PreTrainedModel, source: UnlabeledAudio,
                    augmentation: Augmentation, seed: int) -> PretrainingBatches:  # fmt: skip
    num_frames = int(encoder._get_feat_extract_output_lengths(torch.tensor(recipe.crop_samples)))
    if num_frames < recipe.mask_time_length:
        raise HJPruneInputError(
            f"crop_seconds={recipe.crop_seconds} gives {num_frames} frames, fewer than "
            f"mask_time_length={recipe.mask_time_length}"
        )
    return PretrainingBatches(WindowSampler(source), augmentation, recipe.batch_size, recipe.crop_samples,
                              num_frames, recipe.mask_time_prob, recipe.mask_time_length, seed)  # fmt: skip


def _task(objective: nn.Module, recipe: PretrainRecipe, accelerator: Accelerator,
          draw: Callable[..., dict[str, Any]], validation_draw: Callable[..., dict[str, Any]]) -> Task:  # fmt: skip
    count = max(1, recipe.validation_windows // recipe.batch_size)
    validation = [validation_draw(0, i, accelerator.process_index) for i in range(count)]
    return Task(objective, draw, validation)


def masked_prediction_task(recipe: PretrainRecipe, encoder: PreTrainedModel, train_audio: UnlabeledAudio,
                           validation_audio: UnlabeledAudio, augmentation: Augmentation,
                           accelerator: Accelerator) -> Task:  # fmt: skip
    """HuBERT: cluster labels of the clean windows, from a codebook fitted once by the main process
    and kept in the run (`codebook.npz`), so a resumed run predicts the same clusters."""
    target_model = load_target_model(recipe)
    codebook_path = Path(recipe.output_dir) / "codebook.npz"
    with accelerator.main_process_first():
        if not codebook_path.is_file():
            if not accelerator.is_main_process:
                raise RuntimeError(f"{codebook_path} was not written by the main process")
            logger.info(
                f"Fitting {recipe.num_clusters} clusters of {recipe.targets} features", main_process_only=True
            )
            codebook_path.parent.mkdir(parents=True, exist_ok=True)
            fit_codebook(recipe, train_audio, target_model).save(codebook_path)
    codebook = Codebook.load(codebook_path)
    objective = MaskedPrediction(encoder, codebook.num_clusters, recipe.projection_size,
                                 recipe.logit_temperature, recipe.unmasked_loss_weight)  # fmt: skip

    def labelled(batches: PretrainingBatches) -> Callable[..., dict[str, Any]]:
        def draw(*position: int) -> dict[str, Any]:
            batch = batches(*position)
            labels = codebook.assign(frame_features(recipe, batch["clean_audio"], target_model))
            return {**batch, "labels": labels[:, : batch["mask_time_indices"].shape[1]]}

        return draw

    train = _window_batches(recipe, encoder, train_audio, augmentation, recipe.seed)
    validation = _window_batches(recipe, encoder, validation_audio, augmentation, recipe.seed + 1)
    return _task(objective, recipe, accelerator, labelled(train), labelled(validation))


def contrastive_task(recipe: PretrainRecipe, encoder: PreTrainedModel, train_audio: UnlabeledAudio,
                     validation_audio: UnlabeledAudio, augmentation: Augmentation,
                     accelerator: Accelerator) -> Task:  # fmt: skip
    """wav2vec 2.0: `Wav2Vec2ForPreTraining` around the encoder, negatives sampled per batch."""
    if family_of(encoder).name != "wav2vec2":
        raise HJPruneInputError(
            f"the wav2vec2 (contrastive) objective needs a wav2vec2 encoder, not {family_of(encoder).name}"
        )
    model = Wav2Vec2ForPreTraining(encoder.config)
    model.wav2vec2.load_state_dict(encoder.state_dict())

    def with_negatives(batches: PretrainingBatches) -> Callable[..., dict[str, Any]]:
        def draw(*position: int) -> dict[str, Any]:
            batch = batches(*position)
            mask = batch["mask_time_indices"].numpy()
            with numpy_global_seed(batch["seed"]):
                negatives = _sample_negative_indices(mask.shape, recipe.num_negatives, mask_time_indices=mask)
            return {**batch, "sampled_negative_indices": torch.from_numpy(negatives)}

        return draw

    train = _window_batches(recipe, encoder, train_audio, augmentation, recipe.seed)
    validation = _window_batches(recipe, encoder, validation_audio, augmentation, recipe.seed + 1)
    return _task(Contrastive(model), recipe, accelerator, with_negatives(train), with_negatives(validation))


def ctc_task(recipe: PretrainRecipe, encoder: PreTrainedModel, train_audio: UnlabeledAudio,
             validation_audio: UnlabeledAudio, augmentation: Augmentation, accelerator: Accelerator) -> Task:  # fmt: skip
    """Supervised: CTC over what eSpeak NG spoke (broad speech only): its phonemes, or the text of the
    utterances in `languages` spelled with the characters of `TEXT_CHARACTERS`; whole utterances."""
    if not hasattr(train_audio, "rows"):
        raise HJPruneInputError(
            f"the ctc objective needs transcribed audio (data: broad_speech), not {recipe.data!r}"
        )
    transcripts = {
        name: ctc_transcripts(recipe, audio)
        for name, audio in (("train", train_audio), ("validation", validation_audio))
    }
    if not any(transcripts["train"]) or not any(transcripts["validation"]):
        raise HJPruneInputError(
            f"no utterance has a {recipe.ctc_targets} transcript in languages {recipe.languages}"
        )
    tokenizer = build_tokenizer([t for t in transcripts["train"] if t])
    family = family_of(encoder)
    config = encoder.config
    config.update({"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
                   "ctc_loss_reduction": "mean", "ctc_zero_infinity": True})  # fmt: skip
    model = family.stock_models["ctc"](config)
    getattr(model, family.base_model_prefix).load_state_dict(encoder.state_dict())
    objective = SupervisedCTC(model, family.base_model_prefix, tokenizer, recipe.ctc_targets)
    max_samples = round(recipe.max_utterance_seconds * SAMPLING_RATE)

    def batches(audio: UnlabeledAudio, texts: list[str], seed: int) -> UtteranceBatches:
        labels = [tokenizer(text).input_ids if text else [] for text in texts]
        return UtteranceBatches(audio, labels, augmentation, recipe.batch_size, max_samples, seed)

    train = batches(train_audio, transcripts["train"], recipe.seed)
    validation = batches(validation_audio, transcripts["validation"], recipe.seed + 1)
    task = _task(objective, recipe, accelerator, train, validation)
    task.seconds_per_item = train.mean_seconds
    return task


TEXT_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz' ")
"""What `ctc_targets: text` spells: lower-case Latin letters, the apostrophe and the word space."""


def ctc_transcripts(recipe: PretrainRecipe, audio: Any) -> list[str]:
    """Each utterance's CTC target, or "" for one left out (another language; a character outside
    `TEXT_CHARACTERS`)."""
    if recipe.ctc_targets == "phonemes":
        texts = [clean_phonemes(p) for p in audio.phonemes()]
    else:
        texts = [" ".join(row["text"].lower().split()) for row in audio.rows]
        texts = [text if set(text) <= TEXT_CHARACTERS else "" for text in texts]
    if recipe.languages:
        texts = [text if row["language"] in recipe.languages else "" for text, row in zip(texts, audio.rows)]
    return texts


def gumbel_temperature(recipe: PretrainRecipe, step: int) -> float:
    start, end, decay = recipe.gumbel_temperature
    return max(start * decay**step, end)


@torch.no_grad()
def evaluate(
    objective: nn.Module, batches: list[dict[str, Any]], accelerator: Accelerator
) -> dict[str, float]:
    """Mean metrics of the objective over the validation batches (eval mode, all processes)."""
    was_training = objective.training
    objective.eval()
    totals: dict[str, float] = {}
    for batch in batches:
        loss, metrics = objective(**_to_device(batch, accelerator.device))
        for name, value in {"loss": loss, **metrics}.items():
            totals[name] = totals.get(name, 0.0) + float(accelerator.reduce(value.float(), "mean"))
    objective.train(was_training)
    return {name: total / len(batches) for name, total in totals.items()}


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch's tensors (the objective's inputs) on `device`."""
    return {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}


# ---------------------------------------------------------------------------------------------
# the loop


@dataclass
class PretrainingRun:
    """One pretraining run as `_set_up_pretraining` builds it, for `_pretrain_loop` and
    `_finish_pretraining`. It lives only inside `pretrain`: the DDP-wrapped objective must be gone
    before the process group is (see `hf_hjprune.train.end_process_group`)."""

    recipe: PretrainRecipe
    output_dir: Path
    accelerator: Accelerator
    task: Task
    objective: nn.Module  # `task.objective`, as `accelerator.prepare` wrapped it
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    progress: Progress
    before: dict[str, Any]  # parameters and MACs of the encoder
    data_info: dict[str, Any]  # what `load_unlabeled` read (and skipped)


def pretrain(recipe: PretrainRecipe, resume: bool = False) -> dict[str, Any]:
    """Run a pretraining recipe to the end and return its summary (also in `output_dir/summary.json`).

    Raises:
        TrainingStopped: A SIGTERM arrived; a checkpoint of the last finished step was saved.
        PretrainingCollapsedError: The contrastive objective collapsed.
    """
    run = _set_up_pretraining(recipe, resume)
    _pretrain_loop(run)
    return _finish_pretraining(run)


def _set_up_pretraining(recipe: PretrainRecipe, resume: bool) -> PretrainingRun:
    """Phases 1 to 4: accelerator, data, the encoder in its objective, optimizer; resume."""
    # 1. Run directory, accelerator, seed.
    output_dir = Path(recipe.output_dir)
    checkpoint = _start(output_dir, resume)  # --resume without a checkpoint yet starts over
    quiet_progress_bars()
    accelerator = build_accelerator(recipe, output_dir, [JsonlTracker(output_dir / "metrics.jsonl")])
    set_seed(recipe.seed)

    # 2. Data: the unlabeled audio and the batches drawn from it.
    with accelerator.main_process_first():
        train_audio, validation_audio, data_info = load_unlabeled(recipe.data, **recipe.data_options)
    augmentation = Augmentation(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in recipe.augmentation.items()}
    )

    # 3. Model and targets: the encoder inside its objective, and the batches it learns from.
    encoder = build_encoder(recipe)
    before = {"params": count_params(encoder).as_dict(), "macs": count_macs(encoder).as_dict()}
    builders = {"hubert": masked_prediction_task, "wav2vec2": contrastive_task, "ctc": ctc_task}
    task = builders[recipe.objective](
        recipe, encoder, train_audio, validation_audio, augmentation, accelerator
    )

    # 4. Optimizer, schedule, accelerate, resume.
    objective = task.objective
    optimizer = torch.optim.AdamW(
        objective.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay, betas=(0.9, 0.98)
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_schedule(recipe.num_warmup_steps, recipe.max_steps)
    )
    objective, optimizer, scheduler = accelerator.prepare(objective, optimizer, scheduler)
    progress = load_checkpoint(accelerator, checkpoint)
    start_tracking(accelerator, output_dir, progress.step, "hjprune-pretrain")
    return PretrainingRun(recipe, output_dir, accelerator, task, objective, optimizer, scheduler, progress,
                          before, data_info)  # fmt: skip


def _pretrain_loop(run: PretrainingRun) -> None:
    """Phase 5: train to `max_steps`, logging, evaluating and saving checkpoints as the recipe asks."""
    recipe, accelerator, progress, objective = run.recipe, run.accelerator, run.progress, run.objective
    # 5. Train.
    contrastive = accelerator.unwrap_model(objective).model if recipe.objective == "wav2vec2" else None
    window: dict[str, float] = {}
    low_perplexity_logs = 0
    reporter = ProgressReporter(recipe.max_steps, progress.step, desc="pretrain",
                                enabled=accelerator.is_local_main_process, logger=logger.logger)  # fmt: skip
    objective.train()
    started, seconds_before = time.perf_counter(), progress.train_seconds
    with StopSignal() as stop, contextlib.closing(reporter):
        while progress.step < recipe.max_steps:
            if contrastive is not None:
                contrastive.set_gumbel_temperature(gumbel_temperature(recipe, progress.step))
            for micro in range(recipe.gradient_accumulation_steps):
                batch = run.task.train_batch(progress.step, micro, accelerator.process_index)
                with accelerator.accumulate(objective):
                    loss, metrics = objective(**_to_device(batch, accelerator.device))
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        grad_norm = accelerator.clip_grad_norm_(objective.parameters(), recipe.max_grad_norm)
                    run.optimizer.step()
                    run.optimizer.zero_grad()
                for name, value in {"loss": loss.detach(), **metrics}.items():
                    window[name] = window.get(name, 0.0) + float(value) / recipe.gradient_accumulation_steps
            window["grad_norm"] = window.get("grad_norm", 0.0) + float(grad_norm)
            run.scheduler.step()
            progress.step += 1
            progress.train_seconds = seconds_before + time.perf_counter() - started
            if progress.step % recipe.log_steps == 0:
                logged = {f"train/{name}": total / recipe.log_steps for name, total in window.items()}
                window.clear()
                logged.update({
                    "train/lr": run.scheduler.get_last_lr()[0],
                    "train/seconds": progress.train_seconds,
                    "train/audio_hours": audio_hours(recipe, progress.step, accelerator.num_processes, run.task.seconds_per_item),
                })  # fmt: skip
                accelerator.log(logged, step=progress.step)
                reporter.update(progress.step, {"loss": f"{logged['train/loss']:.3f}"})
                if contrastive is not None:
                    low_perplexity_logs = check_collapse(recipe, progress.step, logged, low_perplexity_logs)
            # The last step's validation is the final one (`_finish_pretraining`): logged once.
            if (
                recipe.eval_steps
                and progress.step % recipe.eval_steps == 0
                and progress.step < recipe.max_steps
            ):
                metrics = evaluate(objective, run.task.validation, accelerator)
                accelerator.log({f"validation/{k}": v for k, v in metrics.items()}, step=progress.step)
            reporter.update(progress.step)
            end_of_step(stop, accelerator, recipe, run.output_dir, progress.step)


def _finish_pretraining(run: PretrainingRun) -> dict[str, Any]:
    """Phase 6: evaluate, save the encoder for fine-tuning, and write `summary.json`."""
    recipe, accelerator, progress = run.recipe, run.accelerator, run.progress
    # 6. Save the encoder for fine-tuning, and the summary.
    accelerator.wait_for_everyone()
    final_metrics = evaluate(run.objective, run.task.validation, accelerator)
    accelerator.log({f"validation/{k}": v for k, v in final_metrics.items()}, step=progress.step)
    encoder = accelerator.unwrap_model(run.objective).encoder
    encoder.config.update(recipe.finetune_config)
    summary = {
        "recipe": recipe.to_dict(),
        "family": family_of(encoder).name,
        "objective": recipe.objective,
        "targets": recipe.targets if recipe.objective == "hubert" else None,
        "steps": progress.step,
        "train_seconds": progress.train_seconds,
        "num_processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
        "audio_hours_seen": audio_hours(
            recipe, progress.step, accelerator.num_processes, run.task.seconds_per_item
        ),
        "data": run.data_info,
        "params": run.before["params"],
        "macs": {"seconds": 1.0, **run.before["macs"]},
        "validation": final_metrics,
    }
    if accelerator.is_main_process:
        save_outputs(recipe, run.task, accelerator.unwrap_model(run.objective), run.output_dir)
        atomic_write_json(run.output_dir / "summary.json", summary)
    end_trackers(accelerator)
    return summary


def save_outputs(recipe: PretrainRecipe, task: Task, objective: nn.Module, output_dir: Path) -> None:
    """`model/`: the encoder with its feature extractor; for `ctc_targets: text`, the whole speech
    recogniser with its processor instead. A phoneme recogniser goes to `phoneme_ctc/`, for inspection."""
    feature_extractor = build_feature_extractor()
    if isinstance(objective, SupervisedCTC):
        processor = Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=objective.tokenizer)
        recogniser = output_dir / ("model" if recipe.ctc_targets == "text" else "phoneme_ctc")
        partial = partial_directory(recogniser)  # complete or not at all (hf_hjprune.atomic)
        objective.model.save_pretrained(partial)
        processor.save_pretrained(partial)
        publish_directory(partial, recogniser)
        if recipe.ctc_targets == "text":
            return
    partial = partial_directory(output_dir / "model")
    objective.encoder.save_pretrained(partial)
    feature_extractor.save_pretrained(partial)
    publish_directory(partial, output_dir / "model")


def export_checkpoint(recipe: PretrainRecipe, checkpoint: str | Path) -> Path:
    """Write the encoder of an intermediate checkpoint (`checkpoints/step_N`, or its name) as a
    fine-tunable model, `output_dir/model-step_N`, and return that path (the encoder only, also for
    the `ctc` objective)."""
    from safetensors.torch import load_file

    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        checkpoint = Path(recipe.output_dir) / "checkpoints" / str(checkpoint)
    if not (checkpoint / "model.safetensors").is_file():
        raise HJPruneInputError(
            f"{checkpoint} is not a checkpoint of this run; found: {[p.name for p in checkpoints(Path(recipe.output_dir))]}"
        )
    encoder = build_encoder(recipe)
    prefix = {
        "hubert": "encoder.",
        "wav2vec2": "model.wav2vec2.",
        "ctc": f"model.{family_of(encoder).base_model_prefix}.",
    }[recipe.objective]
    state = {
        k[len(prefix) :]: v
        for k, v in load_file(checkpoint / "model.safetensors").items()
        if k.startswith(prefix)
    }
    encoder.load_state_dict(state)
    encoder.config.update(recipe.finetune_config)
    output = Path(recipe.output_dir) / f"model-{checkpoint.name}"
    encoder.save_pretrained(output)
    build_feature_extractor().save_pretrained(output)
    return output


def ship_start_model(recipe: PretrainRecipe, name: str, downstream: str | None = None) -> Path:
    """Copy a finished pretraining run's model into the package as the start model `pretrained:NAME`
    (`hf_hjprune/pretrained/NAME`), with its pretraining summaries and a generated card.

    The stages of the model (each `init_from` another run's `model/`) are followed back to the first,
    and each one's shipped recipe is named in the card, so that `hjprune pretrain` regenerates it.
    """
    from .cards import start_model_card
    from .start_models import PRETRAINED_DIR

    run_dir = Path(recipe.output_dir)
    chain: list[tuple[dict[str, Any], str]] = []
    while True:
        summary_path = run_dir / "summary.json"
        if not summary_path.is_file():
            raise HJPruneInputError(f"{run_dir} is not a finished pretraining run (no summary.json)")
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        if summary["objective"] == "ctc":  # runs before this fix counted windows of crop_seconds
            summary["audio_hours_seen"] = _ctc_audio_hours(
                PretrainRecipe.from_dict(summary["recipe"]), summary
            )
        summary["validation_curve"] = [
            {
                "step": line["step"],
                **{k.split("/", 1)[1]: v for k, v in line.items() if k.startswith("validation/")},
            }
            for line in map(json.loads, (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines())
            if any(k.startswith("validation/") for k in line)
        ]
        chain.insert(0, (summary, _shipped_recipe_of(run_dir)))
        if not summary["recipe"].get("init_from"):
            break
        run_dir = Path(resolve_model(summary["recipe"]["init_from"])).parent
    target = PRETRAINED_DIR / name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    model_dir = Path(recipe.output_dir) / "model"
    for path in model_dir.iterdir():
        shutil.copy(path, target / path.name)
    (target / "pretraining_summaries.json").write_text(
        json.dumps([summary for summary, _ in chain], indent=1) + "\n", encoding="utf-8"
    )
    config = json.loads((target / "config.json").read_text(encoding="utf-8"))
    card = start_model_card([s for s, _ in chain], config, name=f"pretrained:{name}",
                            recipes=[r for _, r in chain], downstream=downstream)  # fmt: skip
    (target / "README.md").write_text(str(card), encoding="utf-8")
    return target


def _ctc_audio_hours(recipe: PretrainRecipe, summary: Mapping[str, Any]) -> float:
    """The hours of audio a `ctc` run heard: its utterances' mean length times the items it drew."""
    train_audio, _, _ = load_unlabeled(recipe.data, **recipe.data_options)
    texts = ctc_transcripts(recipe, train_audio)
    max_samples = round(recipe.max_utterance_seconds * SAMPLING_RATE)
    lengths = [n for n, text in zip(train_audio.lengths, texts) if text and n <= max_samples]
    return audio_hours(
        recipe, summary["steps"], summary["num_processes"], float(np.mean(lengths)) / SAMPLING_RATE
    )


def _shipped_recipes_by_output_dir() -> dict[Path, str]:
    """The shipped pretraining recipes by the (resolved) folder each writes its run to."""
    return {
        Path(load_pretrain_recipe(name).output_dir).resolve(): name for name in available_pretrain_recipes()
    }


def _shipped_recipe_of(run_dir: Path) -> str:
    """The shipped pretraining recipe whose output_dir is `run_dir` (else the folder's name)."""
    return _shipped_recipes_by_output_dir().get(run_dir.resolve(), str(run_dir))


def audio_hours(
    recipe: PretrainRecipe, steps: int, num_processes: int, seconds_per_item: float | None = None
) -> float:
    """Hours of audio the encoder has heard after `steps` updates: windows of `crop_seconds`, or for
    `ctc` utterances of `seconds_per_item` on average (the mean length of those it draws from)."""
    items = steps * recipe.batch_size * recipe.gradient_accumulation_steps * num_processes
    return items * (seconds_per_item or recipe.crop_seconds) / 3600


def check_collapse(recipe: PretrainRecipe, step: int, logged: dict[str, float], low_logs: int) -> int:
    """Count consecutive logs with a collapsed codebook after warm-up; raise after three."""
    perplexity = logged.get("train/codevector_perplexity", math.inf)
    low_logs = (
        low_logs + 1 if step > recipe.num_warmup_steps and perplexity < recipe.collapse_perplexity else 0
    )
    if low_logs >= 3:
        raise PretrainingCollapsedError(
            f"the contrastive objective collapsed at step {step}: codevector perplexity {perplexity:.2f} < "
            f"collapse_perplexity={recipe.collapse_perplexity} for three logs in a row (the quantizer uses only a "
            "few codevectors). This is known at small scale; use the hubert objective, a lower learning rate or "
            "a larger diversity_loss_weight. The checkpoints so far are kept."
        )
    return low_logs


# ---------------------------------------------------------------------------------------------
# command line


def available_pretrain_recipes() -> list[str]:
    return available_recipes(PRETRAIN_RECIPES_DIR)


def ship_command(name: str) -> str | None:
    """The commands that make the start model `pretrained:NAME` with the shipped pretraining recipes
    (every stage, then `--ship`), or None when no shipped recipe writes a run of that name."""
    by_dir = _shipped_recipes_by_output_dir()
    last = next((recipe for folder, recipe in by_dir.items() if folder.name == name), None)
    if last is None:
        return None
    stages = [last]
    while (init_from := load_pretrain_recipe(stages[0]).init_from) and Path(
        init_from
    ).parent.resolve() in by_dir:
        stages.insert(0, by_dir[Path(init_from).parent.resolve()])
    return " && ".join(
        [*(f"hjprune pretrain {stage}" for stage in stages), f"hjprune pretrain {last} --ship {name}"]
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `hjprune pretrain` and `python -m hf_hjprune.pretrain`."""
    add_recipe_arguments(parser, PretrainRecipe, PRETRAIN_RECIPES_DIR)
    parser.add_argument("--ship", metavar="NAME", help="copy the finished run's model into the package as the "
                        "start model pretrained:NAME, with a generated card (no training)")  # fmt: skip
    parser.add_argument("--export", metavar="STEP_DIR", help="only write the encoder of checkpoints/STEP_DIR "
                        "(e.g. step_1500) as a fine-tunable model in OUTPUT_DIR/model-STEP_DIR")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Pretrain the recipe named on the command line (or export / ship a finished run); a run stopped
    by SIGTERM exits with 143."""
    recipe = load_pretrain_recipe(args.recipe, recipe_overrides(args))
    if args.export:
        print(export_checkpoint(recipe, args.export))
    elif args.ship:
        print(ship_start_model(recipe, args.ship))
    else:
        return exit_status_of(lambda: pretrain(recipe, resume=args.resume))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hf_hjprune.pretrain", description=__doc__.split("\n\n")[0]
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        return run(args)
    except HJPruneInputError as err:  # TargetError included; anything else keeps its traceback
        parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    raise SystemExit(main())
