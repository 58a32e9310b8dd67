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
    """Add a design function to the zoo under its own name.

    Example:
        >>> import ctopt
        >>> from ctopt.design import POSITIVE, DesignBuilder, g, theta
        >>> @ctopt.zoo.register
        ... def my_gd():
        ...     b = DesignBuilder("my_gd")
        ...     lr = b.hyper("lr", 0.1, POSITIVE, "learning rate", role="lr")
        ...     b.update(theta - lr * g)
        ...     return b.build()
        >>> ctopt.zoo.get("my_gd").defaults
        {'lr': 0.1}
        >>> ctopt.zoo.unregister("my_gd")
    """
    _REGISTRY[fn.__name__] = fn
    return fn


def unregister(name: str) -> None:
    """Remove a user-registered design from the zoo.

    Example:
        >>> import ctopt
        >>> ctopt.zoo.unregister("no_such_design")
        Traceback (most recent call last):
        ...
        ctopt.errors.DesignError: no registered design 'no_such_design'
    """
    if name not in _REGISTRY:
        raise DesignError(f"no registered design {name!r}")
    del _REGISTRY[name]
    for key in [key for key in _CACHE if key[0] == name]:
        del _CACHE[key]


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
