"""The nonce window: refusals with exact messages, a reference model, snapshot validation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalitiond.commands.dedup import NONCE_WINDOW, DedupState, MalformedDedupState
from coalitiond.commands.envelope import CommandRefused, NonceBelowWindow, ReplayedNonce
from coalitiond.primitives.encoding import decode, encode

A = b"\xaa" * 32
B = b"\xbb" * 32


def accept(state: DedupState, client: bytes, nonce: int) -> None:
    state.check(client, nonce)
    state.record(client, nonce)


def test_replayed_nonce() -> None:
    state = DedupState()
    accept(state, A, 5)
    with pytest.raises(ReplayedNonce) as info:
        state.check(A, 5)
    assert info.value.reason == "replayed_nonce"
    assert str(info.value) == "nonce 5 was already applied for this client"
    state.check(B, 5)  # per client


def test_late_nonce_inside_window_once() -> None:
    state = DedupState()
    accept(state, A, 10)
    accept(state, A, 3)  # out of order but inside the window: accepted once
    with pytest.raises(ReplayedNonce):
        state.check(A, 3)
    assert state.highest(A) == 10


def test_nonce_below_window() -> None:
    state = DedupState()
    accept(state, A, NONCE_WINDOW + 10)
    with pytest.raises(NonceBelowWindow) as info:
        state.check(A, 10)
    assert info.value.reason == "nonce_below_window"
    assert str(info.value) == (f"nonce 10 is at or below 10 (highest applied "
                               f"{NONCE_WINDOW + 10} minus window {NONCE_WINDOW})")
    state.check(A, 11)  # the oldest nonce still inside the window


def test_huge_jump_stays_bounded() -> None:
    state = DedupState()
    accept(state, A, 1)
    accept(state, A, 2**64 - 1)
    row = state.to_wire()[0]
    assert row[1] == 2**64 - 1 and len(row[2]) == NONCE_WINDOW // 8
    with pytest.raises(NonceBelowWindow):
        state.check(A, 1)


@settings(max_examples=300, deadline=None, print_blob=True)
@given(st.lists(st.tuples(st.sampled_from([A, B]),
                          st.one_of(st.integers(1, 3 * NONCE_WINDOW),
                                    st.integers(1, 2**64 - 1))),
                max_size=60))
def test_matches_reference_model(ops: list[tuple[bytes, int]]) -> None:
    """The bitmap window behaves exactly like 'a set of every nonce ever applied' restricted
    to the rule: refuse n <= highest − WINDOW, refuse n already applied, accept otherwise."""
    state = DedupState()
    applied: dict[bytes, set[int]] = {A: set(), B: set()}
    for client, nonce in ops:
        highest = max(applied[client], default=0)
        if nonce <= highest - NONCE_WINDOW:
            expected: type[CommandRefused] | None = NonceBelowWindow
        elif nonce in applied[client]:
            expected = ReplayedNonce
        else:
            expected = None
        if expected is None:
            accept(state, client, nonce)
            applied[client].add(nonce)
        else:
            with pytest.raises(expected):
                state.check(client, nonce)
        assert state.highest(client) == max(applied[client], default=0)
    # The snapshot round-trips to the same commitment.
    back = DedupState.from_wire(decode(encode(state.to_wire())))
    assert back.root() == state.root()
    assert back.to_wire() == state.to_wire()


def test_root_is_independent_of_arrival_order() -> None:
    one, two = DedupState(), DedupState()
    accept(one, A, 1)
    accept(one, B, 2)
    accept(two, B, 2)
    accept(two, A, 1)
    assert one.root() == two.root()
    accept(two, A, 3)
    assert one.root() != two.root()


_BITMAP = (1).to_bytes(NONCE_WINDOW // 8, "big")


@pytest.mark.parametrize(("wire", "message"), [
    ({}, "dedup state must be an array"),
    ([[A, 1]], "dedup row must be [client, highest, bitmap]"),
    ([[A[:31], 1, _BITMAP]], "dedup client must be a 32-byte key"),
    ([[B, 1, _BITMAP], [A, 1, _BITMAP]], "dedup rows must be sorted by client, no repeats"),
    ([[A, 1, _BITMAP], [A, 1, _BITMAP]], "dedup rows must be sorted by client, no repeats"),
    ([[A, 0, _BITMAP]], "dedup highest nonce must be 1..2^64-1"),
    ([[A, 1, _BITMAP[:-1]]], f"dedup bitmap must be {NONCE_WINDOW // 8} bytes"),
    ([[A, 1, bytes(NONCE_WINDOW // 8)]], "dedup bitmap must mark the highest nonce applied"),
    ([[A, 1, (3).to_bytes(NONCE_WINDOW // 8, "big")]], "dedup bitmap marks nonces below 1"),
])
def test_malformed_snapshot(wire: object, message: str) -> None:
    with pytest.raises(MalformedDedupState) as info:
        DedupState.from_wire(wire)
    assert str(info.value) == message
