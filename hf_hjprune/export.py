"""Deploy a (pruned) model: inference optimisations, ONNX export, int8 quantisation: `hjprune export`.

    hjprune export outputs/demo/asr_hjmac                       # -> outputs/demo/asr_hjmac/onnx/model.onnx
    hjprune export outputs/demo/asr_hjmac --quantize int8 --evaluate
    hjprune export ORG/NAME --output exported/NAME              # a model folder or Hub id

The export folder holds `model.onnx` (fp32; inputs `input_values` and `attention_mask`, both of dynamic
batch size and length; output `logits`, or `last_hidden_state` for a base model), with `--quantize int8`
also `model_int8.onnx`, the model's `config.json`, its processor (feature extractor, tokenizer) and
`export.json`: the source, the opset, the files, and the parity of each file against the PyTorch model
measured at export (largest absolute difference of the outputs on random padded audio).

What the export does:
- `optimize_for_inference` on a copy of the model: the positional conv's weight norm is folded into its
  weight once instead of being recomputed at every forward pass;
- `torch.onnx.export` with the TorchScript exporter (`dynamo=False`) at opset `OPSET`;
- int8: ONNX Runtime dynamic quantisation of the MatMul/Gemm weights only (int8 weights, activations
  quantised per call). Convolutions stay fp32: ONNX Runtime has no `ConvInteger` kernel for the
  u8 activation / s8 weight mix, and int8 convs hurt wav2vec2's feature encoder.

`optimum` is not used: its ONNX exporter (`optimum-onnx`) requires transformers < 4.58 and cannot be
installed next to transformers 5. `OnnxRuntimeModel` is the small runtime wrapper instead: it is called
like the PyTorch model and returns the same output fields as torch tensors.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import logging
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _WeightNorm
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutput, SequenceClassifierOutput

from .errors import HJPruneInputError
from .structure import SAMPLING_RATE, family_of, head_of

logger = logging.getLogger(__name__)

OPSET = 17
"""The ONNX opset of every export (17: LayerNormalization is one op; ONNX Runtime >= 1.14 runs it)."""
FILES = {"fp32": "model.onnx", "int8": "model_int8.onnx"}
QUANTIZATIONS = ("int8",)
INPUT_NAMES = ("input_values", "attention_mask")
PARITY_TOLERANCE = 1e-3
"""Largest absolute output difference of the fp32 export that `hjprune export` accepts."""
EXPORT_JSON = "export.json"
RUNTIMES = {"fp32": "ONNX Runtime fp32", "int8": "ONNX Runtime int8"}


class MissingDependencyError(ImportError):
    """onnx / onnxruntime are not installed (`pip install hf_hjprune[export]`)."""


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as err:
        raise MissingDependencyError(
            "ONNX export needs onnx and onnxruntime: pip install 'hf_hjprune[export]'"
        ) from err
    return onnxruntime


# ---------------------------------------------------------------------------------------------
# PyTorch inference


def optimize_for_inference(model: nn.Module) -> nn.Module:
    """Remove the work a forward pass repeats although its result never changes; returns `model`.

    Folds every weight-norm parametrization (the positional conv's: 4.7 M weights of wav2vec2-base
    recomputed from their direction and magnitude at every forward pass) into a plain weight, and puts
    the model in eval mode. The outputs are unchanged up to float rounding. The model is changed in
    place and is meant for inference or export: weight-norm checkpoints keep their `weight_g` /
    `weight_v` form, so save the original model, not this one.

    Raises:
        ValueError: `model` has HJPruner gates attached (export the pruned model first).
    """
    for module in list(model.modules()):
        if not parametrize.is_parametrized(module):
            continue
        parametrizations = module.parametrizations
        for tensor_name in parametrizations.keys():
            if not all(isinstance(p, _WeightNorm) for p in parametrizations[tensor_name]):
                raise HJPruneInputError(
                    f"{type(module).__name__}.{tensor_name} has a parametrization other than weight norm "
                    "(HJPruner gates?): use pruner.export() and optimise the pruned model"
                )
        with torch.no_grad():
            folded = {name: getattr(module, name).detach().clone() for name in parametrizations.keys()}
        # By hand, not with `parametrize.remove_parametrizations`: that deletes the property from the
        # module's class, which a deep copy of the model shares with the original.
        module.__class__ = module.__class__.__bases__[0]
        del module.parametrizations
        for name, tensor in folded.items():
            module.register_parameter(name, nn.Parameter(tensor, requires_grad=False))
    return model.eval()


# ---------------------------------------------------------------------------------------------
# ONNX export


class _OnnxGraph(nn.Module):
    """The traced function: `(input_values, attention_mask) -> logits` (or `last_hidden_state`)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        output = self.model(input_values=input_values, attention_mask=attention_mask)
        return output.logits if "logits" in output else output.last_hidden_state


def output_name(model: nn.Module) -> str:
    """The name of the exported output: `logits`, or `last_hidden_state` for a base model."""
    return "last_hidden_state" if head_of(model) == "base" else "logits"


def parity_batch(seconds: tuple[float, ...] = (1.0, 0.6), seed: int = 0) -> dict[str, torch.Tensor]:
    """Random audio padded into one batch, with its attention mask: what parity is measured on."""
    generator = torch.Generator().manual_seed(seed)
    lengths = [int(round(s * SAMPLING_RATE)) for s in seconds]
    values = torch.zeros(len(lengths), max(lengths))
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for row, length in enumerate(lengths):
        values[row, :length] = torch.randn(length, generator=generator)
        mask[row, :length] = 1
    return {"input_values": values, "attention_mask": mask}


def torch_to_onnx(model: nn.Module, path: str | Path, opset: int = OPSET) -> Path:
    """Export `model` (a stock or HJPruned model of a supported family) to one ONNX file.

    Inputs `input_values` (float, batch × samples) and `attention_mask` (int64, same shape), output
    `logits` (or `last_hidden_state`); batch, samples and frames are dynamic axes. `model` is not
    changed: a copy is optimised (`optimize_for_inference`) and traced.
    """
    head_of(model)  # raises for an unsupported model
    graph = _OnnxGraph(optimize_for_inference(copy.deepcopy(model)).float().cpu())
    output = output_name(model)
    axes = {"input_values": {0: "batch", 1: "samples"}, "attention_mask": {0: "batch", 1: "samples"}}
    axes[output] = (
        {0: "batch"}
        if output == "logits" and head_of(model) == "classification"
        else {
            0: "batch",
            1: "frames",
        }
    )
    batch = parity_batch()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        # The tracer warns about every Python-level shape check of the transformers code; the exported
        # graph is verified by running it instead (see `export`).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (batch["input_values"], batch["attention_mask"]),
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=[output],
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    return path


def quantize_int8(source: str | Path, destination: str | Path) -> Path:
    """Dynamic int8 quantisation of the MatMul/Gemm weights of an ONNX file (convolutions stay fp32)."""
    _onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # ONNX Runtime logs a hint to pre-process the graph first on every call: its symbolic shape inference
    # fails on these graphs (and leaves temporary files behind), and it changed neither speed nor parity.
    hint = _DropMessage("pre-processing before quantization")
    logging.getLogger().addFilter(hint)
    try:
        quantize_dynamic(
            str(source),
            str(destination),
            op_types_to_quantize=["MatMul", "Gemm"],
            weight_type=QuantType.QInt8,
            nodes_to_exclude=_empty_weight_products(source),
        )
    finally:
        logging.getLogger().removeFilter(hint)
    return Path(destination)


def _empty_weight_products(path: str | Path) -> list[str]:
    """MatMul/Gemm nodes with a zero-size weight (a layer with every head or unit pruned): ONNX Runtime
    quantises those into garbage (measured: logits off by 14 on a model with a head-less layer)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    empty = {tensor.name for tensor in graph.initializer if 0 in tensor.dims}
    return [
        node.name
        for node in graph.node
        if node.op_type in ("MatMul", "Gemm") and any(name in empty for name in node.input)
    ]


class _DropMessage(logging.Filter):
    """Drops log records whose message contains `text`."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


class OnnxRuntimeModel(nn.Module):
    """An exported model run by ONNX Runtime (CPU), called like the PyTorch model.

    `model(input_values, attention_mask=None)` returns the output class of the PyTorch model with
    `logits` (or `last_hidden_state`) as a torch tensor on the input's device. It also has the
    PyTorch model's `config` and `_get_feat_extract_output_lengths`, so code that evaluates a PyTorch
    model (e.g. `hf_hjprune.train.evaluate`) evaluates the export unchanged.

    Args:
        path: the ONNX file.
        config: the exported model's config.
        threads: intra-op threads of the session (default: torch's current thread count).
        exported_from: the PyTorch model the file was exported from, kept for its costs (`hjprune bench`).
    """

    def __init__(
        self,
        path: str | Path,
        config: transformers.PretrainedConfig,
        threads: int | None = None,
        exported_from: nn.Module | None = None,
    ):
        super().__init__()
        ort = _onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.config = config
        self.threads = options.intra_op_num_threads
        self.exported_from = exported_from
        self.output_name = self.session.get_outputs()[0].name
        self.runtime = RUNTIMES["int8" if self.path.name == FILES["int8"] else "fp32"]

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, quantization: str | None = None, threads: int | None = None
    ) -> OnnxRuntimeModel:
        """The model of an export folder (`hjprune export`): fp32, or `quantization="int8"`."""
        directory = Path(directory)
        path = directory / FILES[quantization or "fp32"]
        if not path.is_file():
            raise HJPruneInputError(f"{directory} has no {path.name}: export it with hjprune export")
        config = transformers.AutoConfig.from_pretrained(directory)
        return cls(path, config, threads=threads)

    def _get_feat_extract_output_lengths(self, input_lengths: torch.Tensor | int) -> torch.Tensor | int:
        # The conv encoder's output length formula (as the models'), read from the config: every
        # family, and no adapter (pruned models have none; HuBERT's config has no such field).
        for kernel, stride in zip(self.config.conv_kernel, self.config.conv_stride):
            input_lengths = (input_lengths - kernel) // stride + 1
        return input_lengths

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones(input_values.shape, dtype=torch.long, device=input_values.device)
        feeds = {
            "input_values": input_values.detach().float().cpu().numpy(),
            "attention_mask": attention_mask.detach().to(torch.long).cpu().numpy(),
        }
        (output,) = self.session.run([self.output_name], feeds)
        output = torch.from_numpy(output).to(input_values.device)
        if self.output_name == "last_hidden_state":
            return BaseModelOutput(last_hidden_state=output)
        if output.dim() == 2:
            return SequenceClassifierOutput(logits=output)
        return CausalLMOutput(logits=output)

    def extra_repr(self) -> str:
        return f"{self.path}, runtime={self.runtime!r}, threads={self.threads}"


def max_abs_difference(
    reference: nn.Module, exported: OnnxRuntimeModel, batch: Mapping[str, torch.Tensor]
) -> float:
    """Largest absolute difference of the two models' outputs on `batch` (valid frames only for CTC)."""
    with torch.no_grad():
        expected = _main_output(reference(**batch))
    actual = _main_output(exported(**batch))
    if expected.dim() == 3:  # outputs at padded frames are not used: compare the valid frames
        frames = reference._get_feat_extract_output_lengths(batch["attention_mask"].sum(-1))
        return max(
            float((expected[i, :n] - actual[i, :n]).abs().max()) for i, n in enumerate(frames.tolist())
        )
    return float((expected - actual).abs().max())


def _main_output(output) -> torch.Tensor:
    return output.logits if "logits" in output else output.last_hidden_state


def export(
    model: nn.Module,
    output_dir: str | Path,
    quantize: str | None = None,
    opset: int = OPSET,
    source: str | None = None,
    processor: Any = None,
) -> dict[str, Any]:
    """Export `model` to `output_dir` for ONNX Runtime; returns the content of its `export.json`.

    Writes `model.onnx` (and `model_int8.onnx` with `quantize="int8"`), `config.json`, the processor
    when given (anything with `save_pretrained`) and `export.json`. Parity: each file is run by ONNX
    Runtime on `parity_batch()` and compared with `model` in eval mode.
    """
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise HJPruneInputError(
            f"unknown quantization {quantize!r}; expected one of {', '.join(QUANTIZATIONS)}"
        )
    ort = _onnxruntime()
    import onnx

    family = family_of(model)
    head = head_of(model)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        fp32_path = torch_to_onnx(model, output_dir / FILES["fp32"], opset)
        paths = {"fp32": fp32_path}
        if quantize == "int8":
            paths["int8"] = quantize_int8(fp32_path, output_dir / FILES["int8"])
        batch = parity_batch()
        files = {}
        for kind, path in paths.items():
            runtime_model = OnnxRuntimeModel(path, model.config)
            files[kind] = {
                "file": path.name,
                "bytes": path.stat().st_size,
                "max_abs_diff": max_abs_difference(model, runtime_model, batch),
            }
    finally:
        model.train(was_training)
    model.config.save_pretrained(output_dir)
    if processor is not None:
        processor.save_pretrained(output_dir)
    document = {
        "source": source,
        "family": family.name,
        "head": head,
        "model_type": model.config.model_type,
        "format": "onnx",
        "opset": opset,
        "inputs": {"input_values": "float32 [batch, samples]", "attention_mask": "int64 [batch, samples]"},
        "output": output_name(model),
        "optimizations": ["optimize_for_inference: weight norm folded"],
        "quantization": (
            "onnxruntime.quantization.quantize_dynamic: MatMul/Gemm weights int8 (QInt8), activations "
            "quantized per call; convolutions fp32"
            if quantize
            else None
        ),
        "files": files,
        "parity": {
            "inputs": "parity_batch(): 2 utterances of random audio, 1.0 s and 0.6 s, padded, with attention mask",
            "measure": "largest absolute difference of the output against the PyTorch model (valid frames)",
        },
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
        },
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    (output_dir / EXPORT_JSON).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return document


# ---------------------------------------------------------------------------------------------
# loading and evaluation


def resolve_source(model_or_run: str) -> tuple[str, Path | None]:
    """`(model path or Hub id, run folder or None)`: a run folder (`summary.json`, `model/`) exports its model."""
    path = Path(model_or_run)
    if (path / "summary.json").is_file() and (path / "model").is_dir():
        return str(path / "model"), path
    return model_or_run, None


def _load_processor(source: str) -> Any:
    try:
        return transformers.AutoProcessor.from_pretrained(source)
    except (OSError, ValueError, TypeError):
        logger.warning("%s has no processor: the export folder will have none", source)
        return None


def evaluate_exports(
    run_dir: str | Path, model: nn.Module, export_dir: str | Path, threads: int | None = None
) -> dict[str, dict[str, float]]:
    """Test metrics of the PyTorch model and of each exported file, on the run's test split.

    Rebuilds the run's test split from its recipe (`summary.json`), with the processor saved next to
    the model, and evaluates every model with `hf_hjprune.train.evaluate` (WER/CER for ASR, accuracy
    for SLU). Returns `{"pytorch": metrics, "onnxruntime_fp32": ..., "onnxruntime_int8": ...}`.
    """
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from .data.collate import SpeechCollator, build_feature_extractor, normalize_transcript, prepare_split
    from .data.sources import check_columns, load_source
    from .recipes import Recipe
    from .train import evaluate

    run_dir, export_dir = Path(run_dir), Path(export_dir)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    recipe = Recipe.from_dict(summary["recipe"], source=f"{run_dir}/summary.json")
    dataset = load_source(recipe.data, **recipe.data_options)
    check_columns(dataset, recipe.task)
    tokenizer = None
    if recipe.task == "asr":
        tokenizer = transformers.Wav2Vec2CTCTokenizer.from_pretrained(run_dir / "model")

        def encode(text: str) -> list[int]:
            return tokenizer(normalize_transcript(text)).input_ids

        column = "text"
    else:
        encode, column = model.config.label2id.get, "intent"
    split = prepare_split(dataset["test"], column, encode, "test")
    order = sorted(range(len(split.lengths)), key=split.lengths.__getitem__)
    dataloader = DataLoader(
        split,
        batch_size=recipe.eval_batch_size or recipe.batch_size,
        sampler=order,
        collate_fn=SpeechCollator(build_feature_extractor()),
    )
    accelerator = Accelerator(cpu=True)
    metrics = {"pytorch": evaluate(model, dataloader, accelerator, tokenizer)}
    for kind in FILES:
        if (export_dir / FILES[kind]).is_file():
            exported = OnnxRuntimeModel(export_dir / FILES[kind], model.config, threads=threads)
            metrics[f"onnxruntime_{kind}"] = evaluate(exported, dataloader, accelerator, tokenizer)
    return metrics


# ---------------------------------------------------------------------------------------------
# command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `hjprune export`."""
    parser.add_argument(
        "model", metavar="MODEL_OR_RUN", help="a model folder, a Hub id, or a training run folder"
    )
    parser.add_argument("--format", choices=["onnx"], default="onnx", help="export format (onnx)")
    parser.add_argument("--quantize", choices=list(QUANTIZATIONS), help="also write an int8 model")
    parser.add_argument(
        "--output", metavar="DIR", help="export folder (default: RUN/onnx for a run, else MODEL-onnx)"
    )
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    parser.add_argument(
        "--evaluate",
        action="store_true",
        help="with a run folder: test metrics of the PyTorch model and of each export (written to export.json)",
    )
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads for --evaluate")


def run(args: argparse.Namespace) -> int:
    """Run `hjprune export` with parsed arguments."""
    from .bench import load_model

    source, run_dir = resolve_source(args.model)
    if args.evaluate and run_dir is None:
        raise HJPruneInputError(
            "--evaluate needs a training run folder (summary.json, model/): its test split"
        )
    output = (
        Path(args.output)
        if args.output
        else (run_dir / "onnx" if run_dir else Path(f"{source.rstrip('/')}-onnx"))
    )
    transformers.logging.disable_progress_bar()
    model = load_model(source)
    document = export(
        model,
        output,
        quantize=args.quantize,
        opset=args.opset,
        source=source,
        processor=_load_processor(source),
    )
    if args.evaluate:
        document["test_metrics"] = evaluate_exports(run_dir, model, output, threads=args.threads)
        (output / EXPORT_JSON).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    for kind, entry in document["files"].items():
        print(
            f"{output / entry['file']}: {entry['bytes'] / 2**20:.1f} MiB, max |PyTorch - ORT {kind}| = {entry['max_abs_diff']:.2e}"
        )
    for name, metrics in document.get("test_metrics", {}).items():
        print(f"{name}: " + ", ".join(f"{key} {value:.4g}" for key, value in metrics.items()))
    worst = document["files"]["fp32"]["max_abs_diff"]
    if not worst <= PARITY_TOLERANCE:
        print(
            f"error: the fp32 export differs from the PyTorch model by {worst:.2e} (> {PARITY_TOLERANCE:g}); "
            f"the files are in {output} for inspection",
            file=sys.stderr,
        )
        return 1
    return 0
