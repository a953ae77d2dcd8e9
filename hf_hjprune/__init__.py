"""hf_hjprune: HJ-Pruning of self-supervised speech models (wav2vec2, HuBERT, WavLM)."""

from .cost import count_macs, count_params
from .export import optimize_for_inference
from .materialize import prune_model
from .models import *  # noqa: F403  (importing registers the pruned models with the Auto classes)
from .models import __all__ as _models_all
from .pruner import HJPruner

__version__ = "0.1.0"
__all__ = ["HJPruner", "count_macs", "count_params", "optimize_for_inference", "prune_model", *_models_all]
