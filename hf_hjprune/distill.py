"""Knowledge distillation from a dense teacher while pruning and fine-tuning (as CoFi and DPHuBERT do).

The student's loss becomes `task_weight * task loss + logits_weight * KL + hidden_weight * hidden`:
- KL: `T² · KL(softmax(teacher / T) ‖ softmax(student / T))` per CTC frame (valid frames only) or
  per utterance (classification);
- hidden (DPHuBERT): for each chosen layer, `L1(proj(student), teacher) + (1 − cos(proj(student),
  teacher))` over valid frames, where `proj` is a learned linear map per layer (trained with the model,
  discarded afterwards).

Pruning never changes the frame rate, so student and teacher frames align one to one. The teacher runs
in eval mode without gradients and is not part of the student: it is neither optimised nor saved.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForAudioClassification, AutoModelForCTC, PreTrainedModel

from .errors import HJPruneInputError
from .start_models import resolve_model


@dataclass
class DistillationConfig:
    """How to distil; the `distillation` mapping of a recipe.

    Attributes:
        teacher: Path (or Hub id, or `pretrained:` name) of the dense fine-tuned model to learn from.
        temperature: Softmax temperature of the logits KL.
        logits_weight: Weight of the logits KL (0: off).
        hidden_weight: Weight of the hidden-state loss (0: off).
        hidden_layers: Hidden states matched (0 is the Transformer's input); default: the last.
        task_weight: Weight of the task loss (CTC or cross-entropy).
    """

    teacher: str
    temperature: float = 2.0
    logits_weight: float = 1.0
    hidden_weight: float = 0.0
    hidden_layers: list[int] = field(default_factory=list)
    task_weight: float = 1.0

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DistillationConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown or "teacher" not in values:
            raise HJPruneInputError(
                f"distillation needs a 'teacher' and takes {sorted(known)}; got unknown {unknown}"
                if unknown
                else "distillation needs a 'teacher' (the path of the dense fine-tuned model)"
            )
        config = cls(**values)
        if config.temperature <= 0 or min(config.logits_weight, config.hidden_weight, config.task_weight) < 0:
            raise HJPruneInputError("distillation: temperature must be positive and the weights not negative")
        if config.logits_weight == config.hidden_weight == 0:
            raise HJPruneInputError(
                "distillation: logits_weight and hidden_weight are both 0; drop distillation instead"
            )
        return config


class Distiller(nn.Module):
    """The distillation loss of a student against a frozen teacher; holds the learned projections.

    Args:
        config: What to distil.
        student: The student model (stock, gated or pruned): its hidden size sizes the projections.
        task: `"asr"` (CTC logits per frame) or `"slu"` (class logits per utterance).
    """

    def __init__(self, config: DistillationConfig, student: PreTrainedModel, task: str):
        super().__init__()
        self.config = config
        self.task = task
        auto_class = AutoModelForCTC if task == "asr" else AutoModelForAudioClassification
        teacher = auto_class.from_pretrained(resolve_model(config.teacher), dtype=torch.float32)
        self._teacher = [teacher.eval().requires_grad_(False)]  # a list: not a submodule, never saved
        depth = student.config.num_hidden_layers
        layers = config.hidden_layers or [depth]
        if any(not 0 <= layer <= depth for layer in layers):
            raise HJPruneInputError(f"distillation hidden_layers {layers} must lie in 0..{depth}")
        self.layers = list(layers) if config.hidden_weight else []
        self.projections = nn.ModuleList(
            nn.Linear(student.config.hidden_size, teacher.config.hidden_size) for _ in self.layers
        )
        if teacher.config.num_hidden_layers != depth and self.layers:
            raise HJPruneInputError(
                f"hidden-state distillation pairs layers: the teacher has {teacher.config.num_hidden_layers}, "
                f"the student {depth}"
            )

    @property
    def teacher(self) -> PreTrainedModel:
        return self._teacher[0]

    @property
    def needs_hidden_states(self) -> bool:
        return bool(self.layers)

    def forward(
        self, student_outputs: Any, batch: dict[str, torch.Tensor], student: PreTrainedModel
    ) -> torch.Tensor:
        """The weighted distillation loss (without the task loss) for one batch."""
        teacher = self.teacher.to(batch["input_values"].device)
        with torch.no_grad():
            teacher_outputs = teacher(
                input_values=batch["input_values"],
                attention_mask=batch.get("attention_mask"),
                output_hidden_states=self.needs_hidden_states,
            )
        valid = self._valid_frames(student, batch, student_outputs)
        loss = student_outputs.logits.new_zeros(())
        if self.config.logits_weight:
            loss = loss + self.config.logits_weight * self._kl(
                student_outputs.logits, teacher_outputs.logits, valid
            )
        for projection, layer in zip(self.projections, self.layers):
            predicted = projection(student_outputs.hidden_states[layer])[valid]
            target = teacher_outputs.hidden_states[layer][valid]
            hidden = (
                F.l1_loss(predicted, target) + (1 - F.cosine_similarity(predicted, target, dim=-1)).mean()
            )
            loss = loss + self.config.hidden_weight / len(self.layers) * hidden
        return loss

    def _kl(self, student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        t = self.config.temperature
        if self.task == "asr":
            student, teacher = student[valid], teacher[valid]
        log_p_student = F.log_softmax(student.float() / t, dim=-1)
        log_p_teacher = F.log_softmax(teacher.float() / t, dim=-1)
        return F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean") * t * t

    @staticmethod
    def _valid_frames(student: PreTrainedModel, batch: dict[str, torch.Tensor], outputs: Any) -> torch.Tensor:
        """`(batch, frames)` bool: the frames of each utterance that are not padding."""
        hidden = outputs.hidden_states[-1] if getattr(outputs, "hidden_states", None) else outputs.logits
        batch_size, frames = batch["input_values"].shape[0], hidden.shape[1] if hidden.dim() == 3 else 0
        if frames == 0:  # classification without hidden states: no frames needed
            return None
        mask = batch.get("attention_mask")
        lengths = (
            student._get_feat_extract_output_lengths(mask.sum(-1))
            if mask is not None
            else torch.full((batch_size,), frames, device=hidden.device)
        )
        return torch.arange(frames, device=hidden.device)[None, :] < lengths[:, None]
