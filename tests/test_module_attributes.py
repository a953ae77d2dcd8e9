"""Pruned modules have every attribute of the stock modules they adapt.

The pruned classes replace the stock constructors (which would build the dense sizes first), so an
attribute that a new transformers release adds to a stock constructor would be silently missing from
the pruned module; these tests fail then. Each pruned class also names its stock class in an
`# Adapted from transformers.models.<family>.modeling_<family>.<Class>` comment.
"""

import importlib
import inspect
import re

import pytest
import torch
from conftest import tiny_config
from torch import nn

from hf_hjprune.models import modeling_hjpruned_common
from hf_hjprune.structure import FAMILIES, HEADS, to_pruned_config

LAYOUTS = [("group", False), ("layer", False), ("group", True), ("layer", True)]
OPTIONAL = [{}, {"mask_time_prob": 0.05, "use_weighted_layer_sum": True}]
"""Config options that add attributes: `masked_spec_embed`, `layer_weights`."""

PRUNING_EXTRAS = {
    # the width whose statistics the LayerNorm keeps (removed channels count as zeros)
    "HJPrunedLayerNorm": {"original_num_channels"},
    # the layer whose sizes (`attention_heads_per_layer[layer_idx]`) the attention was built with
    "HJPrunedWav2Vec2Attention": {"layer_idx"},
    "HJPrunedHubertAttention": {"layer_idx"},
    # kept heads of the original ones: selects them from the relative position bias shared by all layers
    "HJPrunedWavLMAttention": {
        "original_num_heads",
        "kept_head_indices",
        "keeps_all_heads",
        "_kept_heads_tensor",
    },
    # adapters are rejected by pruned configs: the shared constructors set them to None in every family
    "HJPrunedWav2Vec2EncoderLayer": {"adapter_layer"},
    "HJPrunedHubertEncoderLayer": {"adapter_layer"},
    "HJPrunedWavLMEncoderLayer": {"adapter_layer"},
    "HJPrunedWavLMEncoderLayerStableLayerNorm": {"adapter_layer"},
    "HJPrunedHubertModel": {"adapter"},
}
"""Attributes a pruned module may have beyond its stock module's, and why."""


def attribute_names(module: nn.Module) -> set[str]:
    """Instance attributes plus submodule, parameter and buffer names."""
    return set(vars(module)) | set(module._modules) | set(module._parameters) | set(module._buffers)


def pruned_classes(family: str) -> set[type]:
    """The pruned module classes a `family` model is built from (its own file and the shared ones)."""
    modules = [
        importlib.import_module(f"hf_hjprune.models.modeling_hjpruned_{family}"),
        modeling_hjpruned_common,
    ]
    return {
        cls
        for module in modules
        for name, cls in vars(module).items()
        if name.startswith("HJPruned")
        and inspect.isclass(cls)
        and issubclass(cls, nn.Module)
        and cls.__module__ == module.__name__
    }


def configs(family: str):
    for norm, stable in LAYOUTS:
        for optional in OPTIONAL:
            yield tiny_config(family, norm, stable, **optional)
            if family == "hubert":  # HuBERT's feature projection has a LayerNorm only with this option
                yield tiny_config(family, norm, stable, feat_proj_layer_norm=False, **optional)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_pruned_modules_have_the_stock_attributes(family):
    """Every module of a pruned model built from a config has the attributes of the stock module at the
    same place in the stock model built from the same config (pruning-specific extras allowed)."""
    seen: set[type] = set()
    problems = []
    for config in configs(family):
        for head in HEADS:
            torch.manual_seed(0)
            stock = FAMILIES[family].stock_models[head](config)
            pruned = FAMILIES[family].pruned_models[head](to_pruned_config(config))
            for path, stock_module in stock.named_modules():
                module = pruned.get_submodule(path)
                seen.add(type(module))
                missing = attribute_names(stock_module) - attribute_names(module)
                extra = attribute_names(module) - attribute_names(stock_module)
                extra -= PRUNING_EXTRAS.get(type(module).__name__, set())
                if missing or extra:
                    problems.append(
                        f"{head} {path or '<model>'} ({type(module).__name__}): {missing=} {extra=}"
                    )
    assert not problems, "\n".join(sorted(set(problems)))
    assert pruned_classes(family) <= seen, f"not built: {pruned_classes(family) - seen}"


def test_attribute_check_fails_on_a_missing_attribute(monkeypatch):
    """A stock constructor that gains an attribute makes the check fail (the pruned one skips it)."""
    from transformers.models.wav2vec2 import modeling_wav2vec2

    stock_init = modeling_wav2vec2.Wav2Vec2Attention.__init__

    def init_with_new_attribute(self, *args, **kwargs):
        stock_init(self, *args, **kwargs)
        self.new_release_attribute = 1

    monkeypatch.setattr(modeling_wav2vec2.Wav2Vec2Attention, "__init__", init_with_new_attribute)
    with pytest.raises(AssertionError, match="new_release_attribute"):
        test_pruned_modules_have_the_stock_attributes("wav2vec2")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_adapted_classes_name_their_stock_class(family):
    """Each pruned class of a family file is marked `# Adapted from` the stock class it subclasses."""
    module = importlib.import_module(f"hf_hjprune.models.modeling_hjpruned_{family}")
    stock_module = f"transformers.models.{family}.modeling_{family}"
    for cls in pruned_classes(family):
        if cls.__module__ != module.__name__:
            continue
        _, start = inspect.getsourcelines(cls)
        source = inspect.getsource(module).splitlines()
        marker = re.fullmatch(rf"# Adapted from {re.escape(stock_module)}\.(\w+)", source[start - 2])
        assert marker, f"{cls.__name__}: no '# Adapted from {stock_module}.<Class>' above it"
        assert marker[1] in {base.__name__ for base in cls.__mro__ if base.__module__ == stock_module}, cls
