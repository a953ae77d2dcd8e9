"""The errors hf_hjprune raises for mistakes in what the user gave it.

Everything a user can get wrong (a recipe key, a value, a data folder, a start model, a command-line
argument) raises [`HJPruneInputError`] as early as possible, with what was wrong and how to fix it.
The command line prints these in one line; any other exception is a bug or an environment problem
and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HJPruneInputError(ValueError):
    """A mistake in the input (recipe, data, start model, arguments); the message says what to change.

    A subclass of `ValueError`, so code that caught `ValueError` for bad input keeps working.
    """


class UnreachableTargetError(HJPruneInputError):
    """A pruning target that the chosen variant cannot reach even with every prunable unit removed."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest of `known` names, or an empty string."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_keys_message(unknown: Iterable[str], known: Iterable[str], where: str, what: str = "key") -> str:
    """`unknown key 'x' (did you mean 'y'?) in WHERE; known keys: ...`, for one or more unknown names."""
    known = list(known)
    names = ", ".join(f"{key!r}{did_you_mean(key, known)}" for key in sorted(unknown))
    return f"unknown {what} {names} in {where}; known {what}s: {', '.join(known)}"
