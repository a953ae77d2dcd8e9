"""Recipe fields document themselves: each has help in its metadata, and `--help` lists them all."""

import dataclasses

import pytest

from hf_hjprune import cli
from hf_hjprune import train as train_module
from hf_hjprune.pretrain import PretrainRecipe
from hf_hjprune.recipes import Recipe


@pytest.mark.parametrize("recipe_class", [Recipe, PretrainRecipe])
def test_every_recipe_field_has_help(recipe_class):
    for f in dataclasses.fields(recipe_class):
        assert f.metadata.get("help", "").strip(), f"{recipe_class.__name__}.{f.name} has no help"


@pytest.mark.parametrize(
    "argv, recipe_class",
    [
        (["train", "--help"], Recipe),
        (["pretrain", "--help"], PretrainRecipe),
    ],
)
def test_help_lists_every_recipe_field(argv, recipe_class, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 0
    assert_lists_fields(capsys.readouterr().out, recipe_class)


def test_module_help_lists_every_recipe_field(capsys):
    with pytest.raises(SystemExit):
        train_module.main(["--help"])
    assert_lists_fields(capsys.readouterr().out, Recipe)


def assert_lists_fields(text, recipe_class):
    lines = text.splitlines()
    for f in dataclasses.fields(recipe_class):
        (row,) = [i for i, line in enumerate(lines) if line.startswith(f"  {f.name}: ")]
        first_words = " ".join(f.metadata["help"].split()[:3])
        assert lines[row + 1].strip().startswith(first_words), (f.name, lines[row + 1])
    assert "  max_steps: 1000" in lines or "  max_steps: 10000" in lines  # the default follows the name


def test_round_to_per_unit_group():
    """`round_to` takes one multiple or one per group, from YAML or `--set round_to.conv=64`."""
    from hf_hjprune.errors import HJPruneInputError
    from hf_hjprune.recipes import load_recipe

    assert load_recipe("tiny_asr", ["round_to=8"]).round_to == 8
    assert load_recipe("tiny_asr", ["round_to.conv=64", "round_to.ffn=8"]).round_to == {"conv": 64, "ffn": 8}
    with pytest.raises(HJPruneInputError, match="did you mean 'conv'"):
        load_recipe("tiny_asr", ["round_to.cnv=64"])
    with pytest.raises(HJPruneInputError, match="round_to.ffn must be a positive integer"):
        load_recipe("tiny_asr", ["round_to.ffn=0"])
