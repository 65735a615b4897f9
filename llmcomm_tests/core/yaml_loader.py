"""The one YAML reading rule of specs and shapes given on the command line: PyYAML's safe loader,
with YAML 1.2's floats and without implicit timestamps.

PyYAML implements YAML 1.1, where an exponent without a dot (``norm_eps: 1e-5``, and JSON's
``1e-05``) is a string and a date-like value becomes a ``datetime``; users mean a number and text.
"""

from __future__ import annotations

import re

import yaml

_CORE = "tag:yaml.org,2002:"
_FLOAT_1_2 = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class SafeLoader12(yaml.SafeLoader):
    yaml_implicit_resolvers = {
        first: ([(_CORE + "float", _FLOAT_1_2)] if first in "-+0123456789" else [])
        + [(tag, rx) for tag, rx in resolvers if tag != _CORE + "timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


def load_yaml(text: str):
    """Plain data of one YAML document (raises yaml.YAMLError)."""
    return yaml.load(text, Loader=SafeLoader12)  # noqa: S506 - a SafeLoader subclass
