"""Deployment: ONNX export (fp32, int8) reproduces the PyTorch model, `optimize_for_inference`, the CLI."""

import json

import onnx
import pytest
import torch
from conftest import padded_audio, random_keep
from test_models import build

from hf_hjprune import HJPruner, cli, optimize_for_inference, prune_model
from hf_hjprune.export import (
    FILES,
    OPSET,
    OnnxRuntimeModel,
    _empty_weight_products,
    export,
    max_abs_difference,
)
from hf_hjprune.recipes import load_recipe
from hf_hjprune.structure import FAMILIES
from hf_hjprune.train import train

LAYOUTS = [("group", False), ("layer", False), ("layer", True)]


def pruned_model(family, head, norm="group", stable=False):
    model = build(family, head, norm, stable)
    return prune_model(model, random_keep(model.config, torch.Generator().manual_seed(1))).eval()


def other_batch():
    """Another batch size and length than the one traced at export (dynamic axes), with padding."""
    values, mask = padded_audio(batch_size=3, samples=4100, last_length=1500, seed=2)
    return {"input_values": values, "attention_mask": mask}


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("norm,stable", LAYOUTS)
@pytest.mark.parametrize("head", ["base", "ctc", "classification"])
def test_onnx_runtime_reproduces_the_pruned_model(family, norm, stable, head, tmp_path, audio_batch):
    pruned = pruned_model(family, head, norm, stable)  # layer 0 keeps no heads, the last no FFN units
    document = export(pruned, tmp_path, source="in memory")

    assert document["opset"] == OPSET and document["source"] == "in memory"
    assert document["files"]["fp32"]["max_abs_diff"] <= 1e-4
    assert onnx.load(tmp_path / FILES["fp32"]).opset_import[0].version == OPSET
    exported = OnnxRuntimeModel.from_pretrained(tmp_path)
    values, mask = audio_batch
    for batch in ({"input_values": values, "attention_mask": mask}, other_batch()):
        assert max_abs_difference(pruned, exported, batch) <= 1e-4
    # Without a mask the export treats every sample as valid, as the PyTorch model does.
    with torch.no_grad():
        expected = pruned(values[:1])
    actual = exported(values[:1])
    key = "last_hidden_state" if head == "base" else "logits"
    torch.testing.assert_close(actual[key], expected[key], atol=1e-4, rtol=0)
    lengths = mask.sum(-1)  # what evaluation asks for its CTC lengths
    assert exported._get_feat_extract_output_lengths(lengths).tolist() == (
        pruned._get_feat_extract_output_lengths(lengths).tolist()
    )


def test_int8_export_quantizes_matmuls_only(tmp_path, audio_batch):
    pruned = pruned_model("wav2vec2", "ctc", "layer")
    document = export(pruned, tmp_path, quantize="int8")

    ops = {node.op_type for node in onnx.load(tmp_path / FILES["int8"]).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLinear"}
    assert "ConvInteger" not in ops and "Conv" in ops
    # Layer 0 keeps no heads: its out_proj weight is empty, and quantising it breaks ONNX Runtime's output.
    empty = _empty_weight_products(tmp_path / FILES["fp32"])
    assert [name for name in empty if "layers.0/attention/out_proj" in name]
    int8_nodes = {node.name: node.op_type for node in onnx.load(tmp_path / FILES["int8"]).graph.node}
    assert all(int8_nodes.get(name) == "MatMul" for name in empty)
    fp32, int8 = (OnnxRuntimeModel.from_pretrained(tmp_path, q) for q in (None, "int8"))
    assert int8.runtime == "ONNX Runtime int8" and fp32.runtime == "ONNX Runtime fp32"
    values, mask = audio_batch
    logits = int8(values, attention_mask=mask).logits
    assert logits.shape == fp32(values, attention_mask=mask).logits.shape and torch.isfinite(logits).all()
    # Quantised, so not identical, but the logits follow the fp32 ones closely.
    reference = fp32(values, attention_mask=mask).logits
    assert document["files"]["int8"]["max_abs_diff"] > 0
    assert torch.corrcoef(torch.stack([logits.flatten(), reference.flatten()]))[0, 1] > 0.9


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("pruned", [False, True])
def test_optimize_for_inference_keeps_the_outputs(family, pruned, audio_batch):
    model = pruned_model(family, "ctc", "layer") if pruned else build(family, "ctc", "layer")
    with torch.no_grad():
        expected = model(audio_batch[0], attention_mask=audio_batch[1]).logits
    optimized = optimize_for_inference(model)

    assert optimized is model and not model.training
    assert not any(hasattr(module, "parametrizations") for module in model.modules())
    with torch.no_grad():
        actual = model(audio_batch[0], attention_mask=audio_batch[1]).logits
    assert (actual - expected).abs().max() <= 1e-5


def test_optimize_for_inference_rejects_gates():
    pruner = HJPruner(build("wav2vec2", "ctc"), target=0.3)
    with pytest.raises(ValueError, match="pruner.export"):
        optimize_for_inference(pruner.model)


def test_cli_exports_a_model_folder(tmp_path, capsys):
    pruned = pruned_model("hubert", "classification")
    pruned.save_pretrained(tmp_path / "model")

    assert cli.main(["export", str(tmp_path / "model"), "--quantize", "int8"]) == 0
    output = tmp_path / "model-onnx"
    document = json.loads((output / "export.json").read_text())
    assert document["source"] == str(tmp_path / "model") and set(document["files"]) == {"fp32", "int8"}
    assert (output / "config.json").is_file() and (output / FILES["int8"]).is_file()
    assert "max |PyTorch - ORT fp32|" in capsys.readouterr().out


def test_cli_evaluates_a_run_on_its_test_split(tmp_path):
    """`--evaluate` rebuilds the run's test split and reports PyTorch and ONNX Runtime metrics on it."""
    run_dir = tmp_path / "run"
    overrides = [
        "data_options.num_train=16",
        "data_options.num_validation=4",
        "data_options.num_test=6",
        f"data_options.cache_dir={tmp_path / 'corpus'}",
        "max_steps=2",
        "batch_size=4",
        f"output_dir={run_dir}",
    ]
    train(load_recipe("tiny_asr", overrides))

    assert cli.main(["export", str(run_dir), "--quantize", "int8", "--evaluate"]) == 0
    document = json.loads((run_dir / "onnx" / "export.json").read_text())
    metrics = document["test_metrics"]
    assert set(metrics) == {"pytorch", "onnxruntime_fp32", "onnxruntime_int8"}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert metrics["pytorch"] == pytest.approx(summary["metrics"]["after"])  # the run's own evaluation
    assert metrics["onnxruntime_fp32"]["wer"] == pytest.approx(metrics["pytorch"]["wer"])
    assert {m["num_utterances"] for m in metrics.values()} == {6}
    assert (run_dir / "onnx" / "vocab.json").is_file()  # the processor goes with the model


def test_export_rejects_unknown_quantization(tmp_path):
    with pytest.raises(ValueError, match="unknown quantization"):
        export(build("wav2vec2", "ctc"), tmp_path, quantize="int4")
