"""Start models that ship with the package: `pretrained:NAME` is the folder `hf_hjprune/pretrained/NAME`.

They are small encoders pretrained here with `hjprune pretrain` (each folder's README.md, its model
card, says with which recipe and command, and how it does downstream). A recipe names one as
`model: pretrained:tiny-hubert-ssl`; any other name is a Hub id or a path.
"""

from __future__ import annotations

from pathlib import Path

from .errors import HJPruneInputError, did_you_mean

PRETRAINED_PREFIX = "pretrained:"
PRETRAINED_DIR = Path(__file__).parent / "pretrained"


def available_pretrained_models() -> list[str]:
    """The `pretrained:` names of the shipped start models."""
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(
        PRETRAINED_PREFIX + p.name for p in PRETRAINED_DIR.iterdir() if (p / "config.json").is_file()
    )


def resolve_model(name: str) -> str:
    """The path of a shipped `pretrained:` model; any other name (Hub id, local path) unchanged.

    Raises:
        HJPruneInputError: A `pretrained:` name that is not shipped (the message lists those that are).
    """
    if not name.startswith(PRETRAINED_PREFIX):
        return name
    path = PRETRAINED_DIR / name[len(PRETRAINED_PREFIX) :]
    if not (path / "config.json").is_file():
        shipped = available_pretrained_models()
        raise HJPruneInputError(
            f"unknown pretrained start model {name!r}{did_you_mean(name, shipped)}; shipped: "
            f"{', '.join(shipped) or 'none'}"
        )
    return str(path)
