"""Hard concrete gates, the Lagrangian budget and `HJPruner` (attach, gradients, export)."""

import copy
import gc
import math

import pytest
import torch
from conftest import tiny_config
from torch.multiprocessing.reductions import StorageWeakRef

from hf_hjprune.constraint import LagrangianBudget, ramped_target
from hf_hjprune.cost import count_macs, macs_from_units
from hf_hjprune.errors import HJPruneInputError
from hf_hjprune.gates import HardConcreteGate, rounded_count
from hf_hjprune.materialize import prune_model, round_keep, weight_scores
from hf_hjprune.pruner import HJPruner, _RecomputedWeights
from hf_hjprune.structure import FAMILIES, unit_counts

LAYOUTS = [("group", False), ("layer", False), ("group", True), ("layer", True)]


def tiny_model(family="wav2vec2", head="ctc", norm="group", stable=False, seed=0):
    torch.manual_seed(seed)
    return FAMILIES[family].stock_models[head](tiny_config(family, norm, stable))


def randomise_gates(pruner, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for gate in pruner.gates.values():
            gate.log_alpha.copy_(torch.randn(gate.log_alpha.shape, generator=generator) * 2.0 + 0.5)


def test_expected_l0_matches_monte_carlo():
    gate = HardConcreteGate([50], init_log_alpha=0.0)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.linspace(-3, 3, 50))
    torch.manual_seed(0)
    samples = torch.stack([gate.sample() for _ in range(4000)])
    assert samples.min() >= 0 and samples.max() <= 1
    empirical = (samples > 0).float().mean(0)
    torch.testing.assert_close(empirical, gate.probability_nonzero().detach(), atol=0.03, rtol=0)
    # P(z != 0) = sigmoid(log_alpha - beta * log(-l / r)) in closed form
    expected = torch.sigmoid(torch.tensor(0.0) - (2 / 3) * math.log(0.1 / 1.1))
    assert float(
        HardConcreteGate([1], init_log_alpha=0.0, init_std=0.0).probability_nonzero()
    ) == pytest.approx(float(expected))


def test_deterministic_mask_keeps_the_expected_number_of_units():
    gate = HardConcreteGate([40, 30, 5], init_log_alpha=0.0, min_kept=1)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.randn(75) * 3)
        gate.log_alpha[70:] = -20.0  # the last layer is all but removed: min_kept still keeps one
    gate.eval()
    masks = gate()
    counts = gate.expected_counts().detach()
    for mask, count, size in zip(masks, counts, gate.sizes):
        assert int((mask > 0).sum()) == min(size, max(1, round(float(count))))
        assert float(mask.max()) <= 1.0
    # The kept units are those with the largest log_alpha.
    kept = masks[0] > 0
    assert gate.log_alpha[:40][kept].min() >= gate.log_alpha[:40][~kept].max()


def test_gradients_reach_gate_logits_and_lambdas(audio_batch):
    pruner = HJPruner(tiny_model(), variant="macs", target=0.4, prune_blocks=True).train()
    with torch.no_grad():
        pruner.budget.lambdas.fill_(0.5)
    output = pruner(
        audio_batch[0], attention_mask=audio_batch[1], labels=torch.tensor([[1, 2, 3], [4, 5, 6]])
    )
    (output.loss + pruner.penalty(step=10)).backward()
    for name, gate in pruner.gates.items():
        assert gate.log_alpha.grad is not None and gate.log_alpha.grad.abs().sum() > 0, name
    assert pruner.budget.lambdas.grad.abs().sum() > 0
    assert next(pruner.model_parameters()).grad is not None


def test_lagrangian_ascends_on_lambda():
    budget = LagrangianBudget(["macs"])
    optimizer = torch.optim.SGD(budget.parameters(), lr=1.0)
    reduction, target = torch.tensor([0.1]), torch.tensor([0.4])  # not pruned enough
    for _ in range(3):
        optimizer.zero_grad()
        budget(reduction, target).backward()
        optimizer.step()
    # Gradient ascent on λ1 (ŝ - t) < 0 drives λ1 negative, which then rewards a larger ŝ.
    assert budget.lambdas[0, 0] < 0 and budget.lambdas[0, 1] > 0
    assert ramped_target(0.4, 50, 100) == pytest.approx(0.2) and ramped_target(0.4, 500, 100) == 0.4


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("norm,stable", LAYOUTS)
@pytest.mark.parametrize("head", ["base", "ctc", "classification"])
def test_export_reproduces_gated_eval(family, norm, stable, head, audio_batch):
    model = tiny_model(family, head, norm, stable)
    pruner = HJPruner(model, variant="macs", target=0.4, prune_blocks=head == "ctc")
    randomise_gates(pruner)
    pruner.eval()
    with torch.no_grad():
        gated = pruner(*audio_batch)
    exported = pruner.export()
    with torch.no_grad():
        pruned = exported(*audio_batch)
    key = "last_hidden_state" if head == "base" else "logits"
    torch.testing.assert_close(pruned[key], gated[key], atol=1e-4, rtol=1e-4)
    assert exported.config.model_type == f"hjpruned_{family}"
    assert count_macs(exported).total < count_macs(model).total


def test_expected_cost_of_binary_gates_is_the_exported_cost():
    pruner = HJPruner(tiny_model(), variant="macs", target=0.4)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # saturated logits: P(z != 0) is 0 or 1 up to float precision
        for gate in pruner.gates.values():
            on = torch.rand(gate.log_alpha.shape, generator=generator) < 0.6
            gate.log_alpha.copy_(torch.where(on, torch.tensor(60.0), torch.tensor(-60.0)))
    expected = pruner.expected_cost()["macs"].total
    exported = pruner.export()
    assert float(expected) == pytest.approx(count_macs(exported, seconds=1.0).total, rel=1e-6)


def test_detach_restores_the_model(audio_batch):
    model = tiny_model().eval()
    with torch.no_grad():
        before = model(*audio_batch).logits
    pruner = HJPruner(model, variant="macs", target=0.3)
    randomise_gates(pruner)
    with torch.no_grad():
        assert not torch.allclose(model(*audio_batch).logits, before)  # attached: gated
    pruner.detach()
    with torch.no_grad():
        torch.testing.assert_close(model(*audio_batch).logits, before)
    assert not any(
        "parametrizations.weight.original" in k and "pos_conv" not in k for k in model.state_dict()
    )


def test_transformer_only_variant_keeps_the_cnn():
    model = tiny_model()
    pruner = HJPruner(model, variant="transformer", target=0.2)
    assert set(pruner.gates) == {"heads", "ffn"}
    randomise_gates(pruner)
    exported = pruner.export()
    assert exported.config.conv_dim == list(model.config.conv_dim)


def test_sep_variant_has_two_budgets():
    pruner = HJPruner(tiny_model(), variant="sep", target={"cnn": 0.3, "transformer": 0.5})
    assert pruner.budget.names == ["cnn_macs", "transformer_macs"]
    assert pruner.target_at(10**6) == {"cnn_macs": 0.3, "transformer_macs": 0.5}
    reductions = pruner.expected_reduction()
    assert set(reductions) == {"cnn_macs", "transformer_macs"}


def test_params_variant_budget_is_parameters():
    pruner = HJPruner(tiny_model(), variant="params", target=0.3)
    assert pruner.budget.names == ["params"]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(variant="flops"), "unknown variant"),
        (dict(target=0.0), r"in \(0, 1\)"),
        (dict(target=1.2), r"in \(0, 1\)"),
        (dict(target="0.4"), r"in \(0, 1\)"),
        (dict(variant="sep", target={"cnn": 0.3}), "needs 'cnn' and 'transformer'"),
        (dict(units=("conv", "channels")), "unknown unit"),
        (dict(variant="transformer", units=("conv", "heads")), "heads and FFN units only"),
        (dict(variant="transformer", target=0.99), "not reachable"),
        (dict(units=("ffn",), target=0.6), "not reachable"),
    ],
)
def test_bad_arguments_fail_before_training(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HJPruner(tiny_model(), **{"target": 0.4, **kwargs})


def test_unsupported_family():
    from transformers import BertConfig, BertModel

    with pytest.raises(ValueError, match="unsupported model family"):
        HJPruner(
            BertModel(
                BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
            )
        )


def test_expected_units_are_differentiable_through_the_cost():
    model = tiny_model()
    pruner = HJPruner(model, variant="macs", target=0.4)
    units = pruner.expected_units()
    cost = macs_from_units(model.config, units, 16000, "ctc").total
    cost.backward()
    assert all(gate.log_alpha.grad is not None for gate in pruner.gates.values())
    assert unit_counts(model.config)["heads"] == [4, 4, 4]


def test_short_run_reaches_the_macs_target(one_thread):
    """HJ-MAC at 40% on random data: the exported model lands within ±3% of 60% of the dense MACs."""
    torch.manual_seed(0)
    config = tiny_config(
        hidden_size=64,
        num_attention_heads=16,
        intermediate_size=128,
        conv_dim=(32, 32, 32),
        conv_stride=(5, 4, 4),
        conv_kernel=(10, 4, 4),
    )
    model = FAMILIES["wav2vec2"].stock_models["ctc"](config)
    pruner = HJPruner(model, variant="macs", target=0.4, warmup_steps=100)
    optimizer = torch.optim.AdamW(
        [
            {"params": list(pruner.model_parameters()), "lr": 1e-3},
            {"params": pruner.gate_parameters(), "lr": 0.1, "weight_decay": 0.0},
            {"params": pruner.lagrangian_parameters(), "lr": 0.1, "weight_decay": 0.0},
        ]
    )
    values, labels = torch.randn(2, 1600), torch.randint(1, 12, (2, 3))
    pruner.train()
    for step in range(600):
        loss = pruner(values, labels=labels).loss + pruner.penalty(step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    exported = pruner.export()
    ratio = count_macs(exported).total / count_macs(model).total
    assert abs(ratio - 0.6) <= 0.03 * 0.6, ratio


def test_prune_model_refuses_a_gated_model():
    from hf_hjprune import prune_model

    pruner = HJPruner(tiny_model(), variant="macs", target=0.3)
    with pytest.raises(ValueError, match="gates attached"):
        prune_model(pruner.model, {})
    prune_model(pruner.detach(), {})


@pytest.mark.parametrize("family", list(FAMILIES))
def test_gates_attach_to_a_pruned_model(family, audio_batch):
    from conftest import random_keep

    from hf_hjprune import prune_model

    model = prune_model(tiny_model(family, norm="layer"), random_keep(tiny_config(family), torch.Generator()))
    pruner = HJPruner(model, variant="macs", target=0.2, prune_blocks=True)
    randomise_gates(pruner, seed=5)
    exported = assert_export_reproduces_gated_eval(pruner, audio_batch)
    assert count_macs(exported).total <= count_macs(model).total


# --- round_to: multiples of 8 -----------------------------------------------------------------------------

WIDE = dict(conv_dim=(40, 36, 28), intermediate_size=60)  # sizes that are not all multiples of 8


def assert_export_reproduces_gated_eval(pruner, audio_batch):
    """The pruner's export computes what the gated model computes in eval mode; returns the export."""
    pruner.eval()
    with torch.no_grad():
        gated = pruner(*audio_batch).logits
    exported = pruner.export()
    with torch.no_grad():
        torch.testing.assert_close(exported(*audio_batch).logits, gated, atol=1e-4, rtol=1e-4)
    return exported


def test_rounded_count():
    assert [rounded_count(x, 60, 8) for x in (0.0, 3.9, 4.1, 11.9, 12.1, 57.0, 60.0)] == [
        0,
        0,
        8,
        8,
        16,
        56,
        60,
    ]
    assert rounded_count(0.2, 40, 8, minimum=1) == 8  # at least one multiple
    assert rounded_count(0.2, 5, 8, minimum=1) == 5  # never more than the layer
    assert rounded_count(2.5, 10) == round(2.5)  # round_to=1: the unrounded rule


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("norm", ["group", "layer"])
def test_round_to_keeps_multiples_of_8_and_exports_exactly(family, norm, audio_batch):
    torch.manual_seed(0)
    model = FAMILIES[family].stock_models["ctc"](tiny_config(family, norm, **WIDE))
    pruner = HJPruner(model, variant="macs", target=0.4, round_to=8)
    randomise_gates(pruner)
    exported = assert_export_reproduces_gated_eval(pruner, audio_batch)

    config, original = exported.config, unit_counts(model.config)
    for kept, size in zip(
        config.conv_dim + config.intermediate_size_per_layer, original["conv"] + original["ffn"]
    ):
        assert kept % 8 == 0 or kept == size
    keep = pruner.keep_indices()
    for group in ("conv", "ffn"):  # the kept units are those with the largest gate logits
        for logits, kept in zip(
            pruner.gates[group].log_alpha.detach().split(pruner.gates[group].sizes), keep[group]
        ):
            removed = sorted(set(range(len(logits))) - set(kept))
            if kept and removed:
                assert logits[kept].min() >= logits[removed].max()
    # Heads are not rounded; rounding changes the counts by less than one multiple.
    pruner.round_to = 1
    plain = pruner.keep_indices()
    assert plain["heads"] == keep["heads"]
    for group in ("conv", "ffn"):
        assert all(abs(len(a) - len(b)) <= 4 or len(a) == 0 for a, b in zip(keep[group], plain[group]))


def test_export_round_to_overrides_the_pruner(audio_batch):
    torch.manual_seed(0)
    model = FAMILIES["wav2vec2"].stock_models["ctc"](tiny_config("wav2vec2", **WIDE))
    pruner = HJPruner(model, target=0.4)
    randomise_gates(pruner)
    rounded = pruner.export(round_to=8)
    assert pruner.round_to == 1
    assert all(c % 8 == 0 or c == s for c, s in zip(rounded.config.conv_dim, WIDE["conv_dim"]))
    assert pruner.export().config.conv_dim != rounded.config.conv_dim


def test_prune_model_round_to(audio_batch):
    from test_models import remove_units

    torch.manual_seed(0)
    model = FAMILIES["wav2vec2"].stock_models["ctc"](tiny_config("wav2vec2", **WIDE)).eval()
    keep = {
        "conv": [list(range(13)), list(range(0, 36, 2)), [1, 2, 3]],
        "ffn": [list(range(20)), [], list(range(59))],
    }
    pruned = prune_model(model, keep, round_to=8)
    assert pruned.config.conv_dim == [16, 16, 8]
    assert pruned.config.intermediate_size_per_layer == [16, 0, 56]
    per_group = prune_model(model, keep, round_to={"ffn": 8}).config
    assert per_group.conv_dim == [13, 18, 3] and per_group.intermediate_size_per_layer == [16, 0, 56]
    # Exact: the pruned model computes the dense model with every other unit removed.
    rounded = round_keep(
        {**keep, "heads": [list(range(4))] * 3}, unit_counts(model.config), 8, weight_scores(model)
    )
    assert set(keep["conv"][2]) <= set(rounded["conv"][2]) and set(rounded["ffn"][0]) <= set(keep["ffn"][0])
    reference = remove_units(copy.deepcopy(model), rounded)
    with torch.no_grad():
        torch.testing.assert_close(
            pruned(*audio_batch).logits, reference(*audio_batch).logits, atol=1e-5, rtol=1e-4
        )


def _reference_masks(pruner, training):
    """The masks as `HJPruner.masks` computed them before it used the gates' own code: the hard
    concrete formulas written out (a sample from the same noise, or the top units at their median)."""
    masks = {}
    for name, gate in pruner.gates.items():
        round_to = pruner.round_to if name in ("conv", "ffn") else 1
        log_alpha, (low, high) = gate.log_alpha.detach(), (gate.low, gate.high)
        if training:
            u = torch.rand_like(log_alpha).clamp(1e-6, 1.0 - 1e-6)
            s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / gate.beta)
            mask = (s * (high - low) + low).clamp(0.0, 1.0)
        else:
            median = (torch.sigmoid(log_alpha / gate.beta) * (high - low) + low).clamp(0.0, 1.0)
            keep = torch.zeros_like(median, dtype=torch.bool)
            expected = gate.expected_counts().detach().tolist()
            offset = 0
            for layer, size in enumerate(gate.sizes):
                count = round_to * int(round(expected[layer] / round_to))
                count = min(size, max(count, round_to * math.ceil(gate.min_kept / round_to)))
                if gate.kept_counts is not None:
                    count = gate.kept_counts[layer]
                if count:
                    keep[offset + log_alpha[offset : offset + size].topk(count).indices] = True
                offset += size
            mask = torch.where(keep, median.clamp_min(1e-6), torch.zeros_like(median))
        masks[name] = list(mask.split(gate.sizes))
    return masks


@pytest.mark.parametrize("round_to", [1, 8])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_masks_are_bit_identical_to_the_hard_concrete_formulas(round_to, training, seed):
    pruner = HJPruner(tiny_model(), round_to=round_to, prune_blocks=True)
    randomise_gates(pruner, seed)
    pruner.train(training)
    if seed == 2 and not training:  # kept counts set by `match_target` take precedence
        pruner.gates["ffn"].kept_counts = [round_to * (i + 1) for i in range(len(pruner.gates["ffn"].sizes))]
    torch.manual_seed(seed)
    masks = pruner.masks()
    torch.manual_seed(seed)
    reference = _reference_masks(pruner, training)
    assert masks.keys() == reference.keys()
    for name in masks:
        for mask, expected in zip(masks[name], reference[name], strict=True):
            assert torch.equal(mask.detach(), expected), name


def _gated_gradients(family, audio_batch, recompute, monkeypatch):
    """Gradients of every parameter and gate of one gated training step, with the gated weights
    recomputed in the backward pass (the default) or saved by autograd as stock layers do."""
    if not recompute:
        monkeypatch.setattr(_RecomputedWeights, "pack", lambda self, tensor: tensor)
    pruner = HJPruner(tiny_model(family), variant="macs", target=0.4, prune_blocks=True).train()
    randomise_gates(pruner)
    torch.manual_seed(1)  # the same sampled gates in both runs
    output = pruner(
        audio_batch[0], attention_mask=audio_batch[1], labels=torch.tensor([[1, 2, 3], [4, 5, 6]])
    )
    (output.loss + pruner.penalty(step=10)).backward()
    monkeypatch.undo()
    return {name: p.grad.clone() for name, p in pruner.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_recomputed_gated_weights_give_the_same_gradients(family, audio_batch, monkeypatch):
    recomputed = _gated_gradients(family, audio_batch, True, monkeypatch)
    saved = _gated_gradients(family, audio_batch, False, monkeypatch)
    assert recomputed.keys() == saved.keys() and any("log_alpha" in name for name in saved)
    for name, grad in saved.items():
        torch.testing.assert_close(recomputed[name], grad, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("recompute", [True, False])
def test_the_graph_does_not_keep_gated_weights(recompute, audio_batch, monkeypatch):
    """Between forward and backward, no product `W · mask` stays alive: autograd holds W and the mask."""
    if not recompute:
        monkeypatch.setattr(_RecomputedWeights, "pack", lambda self, tensor: tensor)
    products = []
    record = _RecomputedWeights.record
    monkeypatch.setattr(
        _RecomputedWeights,
        "record",
        lambda self, product, *args: (
            products.append(StorageWeakRef(product.untyped_storage())),
            record(self, product, *args),
        ),
    )
    pruner = HJPruner(tiny_model(), variant="macs", target=0.4).train()
    output = pruner(
        audio_batch[0], attention_mask=audio_batch[1], labels=torch.tensor([[1, 2, 3], [4, 5, 6]])
    )
    gc.collect()
    alive = sum(not storage.expired() for storage in products)
    # Without the hooks the graph keeps the weights consumed by a matmul or conv (12 of 32 products here).
    assert len(products) > 10 and (alive == 0 if recompute else alive >= 10)
    output.loss.backward()  # still works once the products are gone
    assert all(p.grad is not None for p in pruner.gate_parameters())


def test_round_to_per_group(audio_batch):
    """`round_to={"conv": 4, "ffn": 8}` rounds each group to its own multiple and still exports exactly."""
    torch.manual_seed(0)
    model = FAMILIES["wav2vec2"].stock_models["ctc"](tiny_config("wav2vec2", **WIDE))
    pruner = HJPruner(model, variant="macs", target=0.4, round_to={"conv": 4, "ffn": 8})
    randomise_gates(pruner)
    exported = assert_export_reproduces_gated_eval(pruner, audio_batch)
    config = exported.config
    assert all(c % 4 == 0 or c == s for c, s in zip(config.conv_dim, WIDE["conv_dim"]))
    assert any(c % 8 for c in config.conv_dim)  # conv counts are not forced to the FFN's multiple
    assert all(n % 8 == 0 for n in config.intermediate_size_per_layer)


@pytest.mark.parametrize(
    "round_to, message",
    [
        (0, "round_to must be a positive integer"),
        ({"cnv": 8}, "did you mean 'conv'"),
        ({"ffn": 2.5}, "round_to.ffn"),
    ],
)
def test_bad_round_to(round_to, message):
    with pytest.raises(HJPruneInputError, match=message):
        HJPruner(tiny_model(), round_to=round_to)
