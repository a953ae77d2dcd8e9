"""The paper's protocol and its quality levers on a tiny model: target warm-up, final fine-tune,
distillation from a dense teacher, continued pruning relative to the original model."""

import json

import pytest
import torch
from conftest import tiny_config
from transformers import AutoModelForCTC, Wav2Vec2ForCTC

from hf_hjprune import HJPruner, count_macs
from hf_hjprune.distill import DistillationConfig, Distiller
from hf_hjprune.recipes import load_recipe
from hf_hjprune.structure import original_unit_counts
from hf_hjprune.train import train

SIZES = ["data_options.num_train=32", "data_options.num_validation=8", "data_options.num_test=8"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("corpus_cache")


def run(cache_dir, output_dir, *overrides, recipe="tiny_asr"):
    common = [*SIZES, f"data_options.cache_dir={cache_dir}", "batch_size=4", "eval_steps=0", "log_steps=1"]
    return train(load_recipe(recipe, [*common, f"output_dir={output_dir}", *overrides]))


@pytest.fixture(scope="module")
def teacher(cache_dir, tmp_path_factory):
    """A dense tiny CTC model fine-tuned for a few steps: the teacher and the start of the pruned runs."""
    output_dir = tmp_path_factory.mktemp("teacher")
    run(cache_dir, output_dir, "variant=none", "max_steps=4")
    return output_dir / "model"


def losses(path):
    return [
        line["train/loss"] for line in map(json.loads, path.read_text().splitlines()) if "train/loss" in line
    ]


def test_target_ramps_over_its_own_warmup():
    recipe = load_recipe("tiny_asr", ["max_steps=100", "warmup_ratio=0.1", "target_warmup_ratio=0.5"])
    assert recipe.num_warmup_steps == 10 and recipe.num_target_warmup_steps == 50
    model = Wav2Vec2ForCTC(tiny_config())
    pruner = HJPruner(model, target=0.4, warmup_steps=recipe.num_target_warmup_steps)
    start = float(pruner.expected_reduction()["macs"])  # a few % at the gates' initial logits
    assert 0.0 < start < 0.1 and pruner.target_at(0)["macs"] == pytest.approx(start)
    assert (
        pruner.target_at(25)["macs"] == pytest.approx((start + 0.4) / 2)
        and pruner.target_at(80)["macs"] == 0.4
    )


def test_final_finetune_trains_the_fixed_pruned_structure(tmp_path, cache_dir, teacher):
    summary = run(cache_dir, tmp_path / "run", f"model={teacher}", "model_config={}", "max_steps=4",
                  "final_finetune_steps=12", "final_finetune_learning_rate=3e-3")  # fmt: skip
    assert summary["steps"] == 16 and summary["final_finetune"]["steps"] == 12
    assert set(summary["metrics"]) == {"before", "after", "after_pruning"}
    pruned = AutoModelForCTC.from_pretrained(tmp_path / "run" / "prune" / "model")
    final = AutoModelForCTC.from_pretrained(tmp_path / "run" / "model")
    assert final.config.to_dict()["conv_dim"] == pruned.config.to_dict()["conv_dim"]
    assert (
        summary["macs"]["after"] == summary["macs"]["after"]
        and count_macs(final).total < count_macs(AutoModelForCTC.from_pretrained(teacher)).total
    )
    assert not torch.equal(final.lm_head.weight, pruned.lm_head.weight)  # it trained
    finetune_losses = losses(tmp_path / "run" / "finetune" / "metrics.jsonl")
    assert sum(finetune_losses[-4:]) < sum(finetune_losses[:4])  # (batches differ: compare averages)
    assert len(losses(tmp_path / "run" / "metrics.jsonl")) == 16  # both phases, in one log


def test_distillation_trains_the_student_and_never_the_teacher(tmp_path, cache_dir, teacher):
    before = {k: v.clone() for k, v in AutoModelForCTC.from_pretrained(teacher).state_dict().items()}
    distillation = (
        f"distillation={{teacher: {teacher}, temperature: 2.0, logits_weight: 1.0, hidden_weight: 1.0}}"
    )
    summary = run(cache_dir, tmp_path / "run", f"model={teacher}", "model_config={}", "max_steps=6",
                  "learning_rate=3e-3", distillation)  # fmt: skip
    assert summary["steps"] == 6
    after = AutoModelForCTC.from_pretrained(teacher).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the teacher's files are untouched

    student = AutoModelForCTC.from_pretrained(teacher)
    distiller = Distiller(
        DistillationConfig.from_dict({"teacher": str(teacher), "hidden_weight": 1.0}), student, "asr"
    )
    batch = {"input_values": torch.randn(2, 4000), "attention_mask": torch.ones(2, 4000, dtype=torch.long)}
    outputs = student(**batch, output_hidden_states=True)
    loss = distiller(outputs, batch, student)
    loss.backward()
    assert all(p.grad is None for p in distiller.teacher.parameters())
    assert not any(p.requires_grad for p in distiller.teacher.parameters())
    assert all(p.grad is not None for p in distiller.projections.parameters())
    assert "teacher" not in " ".join(distiller.state_dict())  # never saved with the student
    # The student equals the teacher: only the projection's mismatch remains, the KL is zero.
    kl_only = Distiller(DistillationConfig.from_dict({"teacher": str(teacher)}), student, "asr")
    assert float(kl_only(student(**batch), batch, student)) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize(
    "values, message",
    [
        ({}, "needs a 'teacher'"),
        ({"teacher": "x", "colour": 1}, "unknown"),
        ({"teacher": "x", "temperature": 0}, "positive"),
    ],
)
def test_bad_distillation_settings(values, message):
    with pytest.raises(ValueError, match=message):
        DistillationConfig.from_dict(values)


def test_continue_pruning_reaches_a_higher_total_reduction(tmp_path, cache_dir, teacher):
    run(cache_dir, tmp_path / "first", f"model={teacher}", "model_config={}", "max_steps=12", "target=0.3",
                "gate_learning_rate=0.2", "lambda_learning_rate=0.2")  # fmt: skip
    start = AutoModelForCTC.from_pretrained(tmp_path / "first" / "model")
    original = AutoModelForCTC.from_pretrained(teacher)
    first_reduction = 1 - count_macs(start).total / count_macs(original).total
    assert original_unit_counts(start.config)["conv"] == list(original.config.conv_dim)

    with pytest.raises(ValueError, match="already reached"):
        HJPruner(start, target=first_reduction / 2, target_reference="original")
    target = min(0.9, first_reduction + 0.2)
    run(cache_dir, tmp_path / "second", f"model={tmp_path / 'first' / 'model'}", "model_config={}", "max_steps=12",
        f"target={target}", "target_reference=original", "gate_learning_rate=0.2", "lambda_learning_rate=0.2")  # fmt: skip
    second = AutoModelForCTC.from_pretrained(tmp_path / "second" / "model")
    assert 1 - count_macs(second).total / count_macs(original).total > first_reduction


@pytest.mark.parametrize(
    "variant, target, log_alpha", [("macs", 0.4, 4.0), ("macs", 0.2, -0.5), ("sep", 0.3, 4.0)]
)
def test_match_target_lands_on_the_budget_and_exports_exactly(variant, target, log_alpha, audio_batch):
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(tiny_config(num_hidden_layers=2, intermediate_size=64)).eval()
    pruner = HJPruner(model, variant=variant, target=target)
    with torch.no_grad():  # gates that ended far from the target: nothing pruned, or much too much
        for gate in pruner.gates.values():
            gate.log_alpha.copy_(torch.randn_like(gate.log_alpha) + log_alpha)
    changed = pruner.match_target(tolerance=0.01)
    assert changed["removed" if log_alpha > 0 else "added"] > 0
    reductions = pruner._reduction_of(pruner.keep_indices())
    for name, value in pruner.targets.items():
        assert abs(reductions[name] - value) <= 0.01 or changed["added"] and reductions[name] > value
    pruner.eval()
    values, mask = audio_batch
    expected = pruner(values, attention_mask=mask).logits
    pruned = pruner.export()
    torch.testing.assert_close(pruned(values, attention_mask=mask).logits, expected, atol=1e-5, rtol=1e-4)
    assert 1 - count_macs(pruned).total / count_macs(pruner.detach()).total == pytest.approx(
        reductions.get("macs", 1 - count_macs(pruned).total / count_macs(pruner.model).total), abs=1e-6
    )


def test_a_frozen_feature_encoder_keeps_its_weights_and_trains_the_rest(tmp_path, cache_dir, teacher):
    # Eager attention is asked for like a config attribute, though it is a from_pretrained argument.
    run(cache_dir, tmp_path / "run", f"model={teacher}", "model_config={attn_implementation: eager}",
        "variant=none", "max_steps=3", "learning_rate=3e-3", "freeze_feature_encoder=true")  # fmt: skip
    start = AutoModelForCTC.from_pretrained(teacher).state_dict()
    end = AutoModelForCTC.from_pretrained(tmp_path / "run" / "model").state_dict()
    cnn = [key for key in start if ".feature_extractor." in key]
    assert cnn and all(torch.equal(start[key], end[key]) for key in cnn)
    assert not torch.equal(start["lm_head.weight"], end["lm_head.weight"])


def test_a_frozen_feature_encoder_is_only_for_runs_that_keep_the_cnn():
    assert load_recipe(
        "tiny_asr", ["variant=transformer", "freeze_feature_encoder=true"]
    ).freeze_feature_encoder
    with pytest.raises(ValueError, match="'macs' variant prunes conv channels"):
        load_recipe("tiny_asr", ["variant=macs", "freeze_feature_encoder=true"])


def test_the_recipe_sets_the_gates_initial_logit():
    from hf_hjprune.train import _build_pruner

    recipe = load_recipe("tiny_asr", ["gate_init_log_alpha=5.0"])
    pruner = _build_pruner(recipe, Wav2Vec2ForCTC(tiny_config()))
    logits = torch.cat([gate.log_alpha.detach() for gate in pruner.gates.values()])
    assert logits.mean().item() == pytest.approx(5.0, abs=0.01)
