"""The component framework: registry and the map-shaped state commitment."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalitiond.commands.envelope import Command, Envelope
from coalitiond.components import build, component_class, known_kinds, register
from coalitiond.components.base import BlockContext, CommandResult, Component, kv_root
from coalitiond.components.feed.component import Feed
from coalitiond.primitives.encoding import encode
from coalitiond.primitives.errors import LocalError, OperatorError
from coalitiond.verify import merkle_root


def test_feed_is_registered() -> None:
    assert "feed" in known_kinds()
    assert component_class("feed") is Feed
    feed = build("feed", {"publishers": [b"\x01" * 32]})
    assert isinstance(feed, Feed) and feed.signature == "feed/1"


def test_unknown_kind_is_an_operator_error() -> None:
    with pytest.raises(OperatorError) as info:
        component_class("atlass")
    assert str(info.value).startswith("unknown component kind 'atlass' (known: ")
    assert "feed" in str(info.value)


class _Toy(Component):
    kind = "toy"
    signature = "toy/1"

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Component:
        return cls()

    def config_digest(self) -> bytes:
        return b"\x00" * 32

    def check(self, client: bytes, command: Command) -> None:
        pass

    def apply(self, ctx: BlockContext, envelopes: Sequence[Envelope]) -> list[CommandResult]:
        return []

    def state_root(self) -> bytes:
        return kv_root({})

    def query(self, name: str, args: Mapping[str, Any]) -> Any:
        return None

    def snapshot(self) -> bytes:
        return b""

    def restore(self, data: bytes) -> None:
        pass


def test_register_checks_signature_and_duplicates() -> None:
    class BadSig(_Toy):
        kind = "badsig"
        signature = "toy/1"

    with pytest.raises(LocalError, match="must start with 'badsig'/"):
        register(BadSig)

    class Feed2(_Toy):
        kind = "feed"
        signature = "feed/2"

    with pytest.raises(LocalError, match="component kind 'feed' registered twice"):
        register(Feed2)
    assert component_class("feed") is Feed


@settings(max_examples=100, deadline=None, print_blob=True)
@given(st.dictionaries(st.binary(max_size=8), st.integers(0, 1000), max_size=12))
def test_kv_root_is_rfc6962_over_sorted_pairs(items: dict[bytes, int]) -> None:
    expected = merkle_root([encode([k, items[k]]) for k in sorted(items)])
    assert kv_root(items) == expected
    assert kv_root(dict(reversed(list(items.items())))) == expected
