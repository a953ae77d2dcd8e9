"""The reporting primitives: number formats, Markdown tables, the structure figure."""

import subprocess
import sys

import pytest
from conftest import tiny_config

from hf_hjprune import reporting
from hf_hjprune.reporting import (
    NOT_AVAILABLE,
    SI_COMPACT,
    SI_UP_TO_GIGA,
    change,
    markdown_table,
    mean_percent,
    percent,
    save_png,
    si,
    structure_figure,
)
from hf_hjprune.structure import original_unit_counts, to_pruned_config, unit_counts


@pytest.mark.parametrize(
    ("value", "spaced", "compact", "up_to_giga"),
    [
        (999.4, "999", "999", "999"),
        (1_500, "1.50 K", "1.50K", "1.50 K"),
        (94_400_000, "94.40 M", "94.40M", "94.40 M"),
        (7.25e9, "7.25 G", "7.25G", "7.25 G"),
        (2.1e12, "2.10 T", "2100.00G", "2100.00 G"),
        (-2_500_000, "-2.50 M", "-2.50M", "-2.50 M"),
    ],
)
def test_si_formats(value, spaced, compact, up_to_giga):
    assert si(value) == spaced
    assert si(value, **SI_COMPACT) == compact
    assert si(value, **SI_UP_TO_GIGA) == up_to_giga


def test_change_and_percent():
    assert change(94.4e6, 61.2e6) == "-35.2%" and change(94.4e6, 61.2e6, decimals=0) == "-35%"
    assert change(2, 3) == "+50.0%" and change(0, 3) == "n/a"
    assert percent(0.05734) == "5.73%" and percent(0.05734, decimals=1) == "5.7%"
    assert percent(0.05734, decimals=1, symbol=False) == "5.7" and percent(None) == NOT_AVAILABLE
    for value in (0.0, 0.1234567, 0.875, 1 / 3, 0.9995):  # the digits of the hand-written formats
        assert percent(value) == f"{100 * value:.2f}%" and percent(value, decimals=1) == f"{100 * value:.1f}%"
    assert mean_percent({"value": 0.8523, "value_std": 0.0131}) == "85.2% ± 1.3%"
    assert mean_percent({"value": 0.8523, "value_std": None}) == "85.2%"
    assert mean_percent({"cer": None, "cer_std": None}, "cer") == NOT_AVAILABLE


def test_markdown_table():
    assert markdown_table(["a", "b"], [["1", "2"], ["x", ""]]) == [
        "| a | b |",
        "|---|---|",
        "| 1 | 2 |",
        "| x | |",
    ]
    assert markdown_table(["", "n"], [["row", "3"]], align="-r") == ["| | n |", "|---|---:|", "| row | 3 |"]
    assert markdown_table(["a", "b", "c"], [], align="lcr")[1] == "|:---|:---:|---:|"
    with pytest.raises(ValueError, match="2 alignment codes for 3 columns"):
        markdown_table(["a", "b", "c"], [], align="rr")


def test_unit_counts_of_a_config_and_of_its_dict():
    config = to_pruned_config(tiny_config("hubert"))
    config.conv_dim, config.original_conv_dim = [8, 6, 12], [16, 12, 12]
    config.attention_heads_per_layer, config.intermediate_size_per_layer = [0, 4, 2], [48, 20, 0]
    for counts in (unit_counts, original_unit_counts):
        assert counts(config.to_dict()) == counts(config)
    assert unit_counts(config) == {"conv": [8, 6, 12], "heads": [0, 4, 2], "ffn": [48, 20, 0]}
    assert original_unit_counts(config) == {"conv": [16, 12, 12], "heads": [4] * 3, "ffn": [48] * 3}
    stock = tiny_config("wav2vec2").to_dict()
    assert (
        unit_counts(stock)
        == original_unit_counts(stock)
        == {"conv": [16, 12, 12], "heads": [4] * 3, "ffn": [48] * 3}
    )


def test_structure_figure(tmp_path):
    kept, original = (
        {"conv": [8, 6], "heads": [0, 4], "ffn": [10, 0]},
        {"conv": [16, 12], "heads": [4, 4], "ffn": [24, 24]},
    )
    figure = structure_figure(kept, original, kept_label="pruned (kept)", share_in_title=True)
    assert [ax.get_title() for ax in figure.axes] == [
        "CNN: channels per conv layer: 50% kept",
        "Attention heads per layer: 50% kept",
        "FFN units per layer: 21% kept",
    ]
    assert [t.get_text() for t in figure.axes[0].get_legend().get_texts()] == ["original", "pruned (kept)"]
    assert figure.axes[0].get_ylim() == (0, 16 * 1.08)
    plain = structure_figure(kept, original)
    assert plain.axes[1].get_title() == "Attention heads per layer"
    first, second = (
        save_png(plain, tmp_path / "a.png").read_bytes(),
        save_png(plain, tmp_path / "b.png").read_bytes(),
    )
    assert first.startswith(b"\x89PNG") and first == second


def test_light_import():
    # The Space and the cards format with it: it must not pull in the training stack.
    # hf_hjprune/__init__ imports the models; load reporting.py on its own, as a file.
    code = (
        "import importlib.util, sys; spec = importlib.util.spec_from_file_location('reporting', sys.argv[1]); "
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module); "
        "print(sorted(m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, reporting.__file__], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
