"""A griffe extension for the API reference: ctopt's docstrings title their doctest section
``Example:`` (singular); griffe's Google parser knows ``Examples:``. Renaming the header lets the
``>>>`` lines render as code instead of Markdown. Sphinx roles (:class:`X`) become code spans."""

from __future__ import annotations

import re

import griffe

_HEADER = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)
_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):`~?([^`]+)`")


class ExamplesSection(griffe.Extension):
    """Rename ``Example:`` section headers to ``Examples:`` in every docstring."""

    def on_object(self, *, obj, loader, **kwargs) -> None:
        if obj.docstring is not None:
            text = _HEADER.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = _ROLE.sub(r"`\1`", text)
