"""Names of the start models that ship with the package: `ssl:NAME` is `hf_hjprune/pretrained/NAME`.

They are small encoders pretrained here with `hjprune pretrain` (their cards say with which recipe and
command); a recipe names one as `model: ssl:tiny-hubert`, and anything else is a Hub id or a path.
"""

from __future__ import annotations

from pathlib import Path

SSL_PREFIX = "ssl:"
PRETRAINED_DIR = Path(__file__).parent / "pretrained"


def available_ssl_models() -> list[str]:
    """The `ssl:` names of the shipped pretrained encoders."""
    return sorted(SSL_PREFIX + p.name for p in PRETRAINED_DIR.iterdir() if (p / "config.json").is_file())


def resolve_model(name: str) -> str:
    """The path of a shipped `ssl:` model; any other name (Hub id, local path) unchanged.

    Raises:
        ValueError: An `ssl:` name that is not shipped (the message lists those that are).
    """
    if not name.startswith(SSL_PREFIX):
        return name
    path = PRETRAINED_DIR / name[len(SSL_PREFIX) :]
    if not (path / "config.json").is_file():
        shipped = ", ".join(available_ssl_models()) or "none"
        raise ValueError(f"unknown pretrained start model {name!r}; shipped: {shipped}")
    return str(path)
