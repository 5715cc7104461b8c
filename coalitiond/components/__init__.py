"""Components: the deterministic state machines a committee commits (DESIGN §2.8).

Importing this package registers every built-in component kind.
"""

from __future__ import annotations

from . import feed as feed
from .base import Component, build, component_class, known_kinds, register

__all__ = ["Component", "build", "component_class", "known_kinds", "register"]
