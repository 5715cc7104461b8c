"""Determinism of the executor (Hypothesis and a seeded campaign).

Replaying the same blocks gives the same outcomes, entries and state roots, whether run
straight through or restarted from a snapshot at any height; no (client, nonce) is ever
admitted twice; entry indices are dense. Hypothesis prints a reproduction blob on failure;
the seeded campaign prints its seed (replay with `--sim-seed S`).
"""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from coalitiond.commands.client import publish
from coalitiond.commands.dedup import NONCE_WINDOW
from coalitiond.commands.envelope import Acl, Command, Envelope
from coalitiond.components.executor import APPLIED, BlockResult, Executor
from coalitiond.components.feed.component import Feed
from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.encoding import encode
from coalitiond.primitives.identity import digest

PUB1 = SigningKey(b"\x11" * 32)
PUB2 = SigningKey(b"\x12" * 32)
READER = SigningKey(b"\x13" * 32)  # admitted, not a publisher
STRANGER = SigningKey(b"\x14" * 32)  # not admitted
COMMITTEE = b"\x66" * 32
ACL = Acl.allow([PUB1.public, PUB2.public, READER.public])
#: Reasons decided before the component sees the envelope (nothing is consumed).
ENVELOPE_REASONS = frozenset({"malformed", "too_large", "wrong_committee", "not_admitted",
                              "bad_signature", "replayed_nonce", "nonce_below_window"})
NONCES = [*range(1, 9), NONCE_WINDOW + 4, 2 * NONCE_WINDOW + 9]


def _pool() -> list[bytes]:
    pool: list[bytes] = []
    for key in (PUB1, PUB2, READER, STRANGER):
        for nonce in NONCES:
            for variant in range(2):  # two different envelopes under one nonce
                commands: list[Command] = [publish("k", [nonce, variant])]
                if variant:
                    commands.append(Command("burn", {}))
                    commands.append(publish("k2", {"n": nonce}))
                pool.append(Envelope.sign(key, COMMITTEE, nonce, commands).raw)
    forged = bytearray(pool[0])
    forged[-2] ^= 0x40
    pool.append(bytes(forged))
    pool.append(Envelope.sign(PUB1, b"\x67" * 32, 3, [publish("k", 0)]).raw)
    pool.append(encode(["envelope", 1, COMMITTEE]))
    pool.append(b"\x00")
    return pool


POOL = _pool()


def make() -> Executor:
    return Executor(COMMITTEE, ACL, Feed([PUB1.public, PUB2.public]))


def block_digest(height: int) -> bytes:
    return digest(b"block" + height.to_bytes(8, "big"))


def run(executor: Executor, blocks: list[list[bytes]], start: int = 1) -> list[BlockResult]:
    return [executor.apply_block(h, block_digest(h), b)
            for h, b in enumerate(blocks, start=start)]


def check_replay(blocks: list[list[bytes]], cut: int) -> None:
    straight = run(make(), blocks)
    again = run(make(), blocks)
    assert straight == again

    # Restart at `cut` from a snapshot, into a fresh executor.
    first = make()
    head = run(first, blocks[:cut])
    restarted = make()
    restarted.restore(first.snapshot())
    assert restarted.state_root() == first.state_root()
    tail = run(restarted, blocks[cut:], start=cut + 1)
    assert head + tail == straight

    # No (client, nonce) admitted twice; applied only under its first admission.
    admitted: Counter[tuple[bytes, int]] = Counter()
    seen_ids: dict[bytes, tuple[bytes, int]] = {}
    for raw in {r for b in blocks for r in b}:
        try:
            env = Envelope.decode(raw)
        except Exception:
            continue
        seen_ids[env.envelope_id] = (env.client, env.nonce)
    for result in straight:
        for o in result.outcomes:
            # One outcome per command; count each admitted envelope once, by its command 0.
            if o.command_index == 0 and o.reason not in ENVELOPE_REASONS:
                admitted[seen_ids[o.envelope_id]] += 1
    assert all(count == 1 for count in admitted.values()), admitted

    # Entry indices are dense and match the applied outcomes.
    indices = [e.entry_index for r in straight for e in r.entries]
    assert indices == list(range(len(indices)))
    applied = [o.entry_index for r in straight for o in r.outcomes if o.status == APPLIED]
    assert applied == indices


@settings(max_examples=60, deadline=None, print_blob=True)
@given(blocks=st.lists(st.lists(st.sampled_from(POOL), max_size=6), min_size=1, max_size=8),
       data=st.data())
def test_replay_is_deterministic(blocks: list[list[bytes]], data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(blocks)), label="restart before block")
    check_replay(blocks, cut)


def test_seeded_campaign(sim_seeds: list[int]) -> None:
    for seed in sim_seeds:
        print(f"executor determinism seed {seed} (replay: --sim-seed {seed})")
        rng = random.Random(seed)
        blocks = [[rng.choice(POOL) for _ in range(rng.randrange(12))]
                  for _ in range(rng.randrange(1, 16))]
        check_replay(blocks, rng.randrange(len(blocks) + 1))
