"""Components: the deterministic state machines a committee commits (DESIGN §2.8).

Importing this package registers every built-in component kind. One package per kind
(`<kind>/component.py`, its `[component]` section in `<kind>/config.py`); shared by all:
`base` (the interface, state proofs, the registry), `snapshot` (the snapshot frame),
`paging` (read arguments and pages) and `executor` (runs a component over blocks).
"""

from __future__ import annotations

from . import almanac as almanac
from . import atlas as atlas
from . import chronicle as chronicle
from . import compute as compute
from . import confluence as confluence
from . import feed as feed
from . import tickets as tickets
from .base import Component, build, component_class, known_kinds, register

__all__ = ["Component", "build", "component_class", "known_kinds", "register"]
