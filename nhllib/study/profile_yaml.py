"""Profiles read as YAML, strictly: a key given twice is an error (file, line, key), and one rule for numbers.

PyYAML (YAML 1.1) lets the last of two equal keys win silently, so a second ``defaults:`` replaces the first, and
reads ``1e-3`` as a string (its float needs a dot: ``1.0e-3``). Here a duplicate key is refused, and a plain
(unquoted) scalar that YAML 1.2 reads as a number is a number; a quoted one stays a string, and the grid's
error then says to drop the quotes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

__all__ = ["read_profile_yaml", "StrictLoader"]

#: YAML 1.2's float (core schema), which unlike YAML 1.1's accepts an exponent without a dot (1e-3, 5E+2).
_FLOAT_12 = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$"
                       r"|^[-+]?\.(inf|Inf|INF)$|^\.(nan|NaN|NAN)$")


class StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys and reads YAML 1.2 floats."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, (str, int, float, bool, type(None))):
                continue  # a complex key: SafeLoader's own error says what is wrong with it
            if key in seen:
                raise ValueError(f"{self.name}, line {line}: the key {key!r} is given twice (first on line "
                                 f"{seen[key]}); YAML would silently keep only the last one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


def read_profile_yaml(path: Path) -> Any:
    """The profile file at ``path``, parsed strictly; ``ValueError`` names the file (and line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"profile file {path} cannot be read: {err}") from None
    loader = StrictLoader(text)
    loader.name = f"profile file {path}"
    try:
        return loader.get_single_data()
    except yaml.YAMLError as err:
        raise ValueError(f"profile file {path} is not valid YAML: {err}") from None
    finally:
        loader.dispose()
