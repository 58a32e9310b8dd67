"""The zoo's registry: every design function by name."""

from __future__ import annotations

import difflib
from collections.abc import Callable

from ..design import Design
from ..errors import DesignError

_REGISTRY: dict[str, Callable[..., Design]] = {}
_CACHE: dict[tuple, Design] = {}

#: The documented order of the zoo.
ORDER = (
    "sgd",
    "heavy_ball",
    "nesterov",
    "adagrad",
    "rmsprop",
    "adam",
    "adamw",
    "amsgrad",
    "adabelief",
    "adamssm",
    "adan",
    "signgd",
    "dgclip",
)


def register(fn: Callable[..., Design]) -> Callable[..., Design]:
    """Add a design function to the zoo under its own name."""
    _REGISTRY[fn.__name__] = fn
    return fn


def names() -> list[str]:
    """Names of every zoo design.

    Example:
        >>> import ctopt
        >>> ctopt.zoo.names()[:3]
        ['sgd', 'heavy_ball', 'nesterov']
    """
    known = [n for n in ORDER if n in _REGISTRY]
    return known + sorted(set(_REGISTRY) - set(known))


def get(name: str, **options: object) -> Design:
    """The zoo design ``name`` (structural ``options`` such as ``centered=True`` go to its
    function). Unknown names raise :class:`ctopt.errors.DesignError` listing the valid ones.

    Example:
        >>> import ctopt
        >>> ctopt.zoo.get("adam").name
        'adam'
    """
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), names(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DesignError(f"unknown design {name!r}.{hint} Valid names: {', '.join(names())}")
    key = (name, tuple(sorted(options.items())))
    try:
        return _CACHE[key]
    except KeyError:
        design = _CACHE[key] = _REGISTRY[name](**options)  # designs are immutable
        return design
    except TypeError:  # unhashable option values
        return _REGISTRY[name](**options)
