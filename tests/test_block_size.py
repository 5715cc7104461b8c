"""The size rule and the served record (issue #14, hole 2; docs/protocol.md §10).

A block a voter accepts must be servable: its record (block, certificates, votes,
checkpoint) fits one catch-up / follower / `tail` reply and one /v1/blocks page, and every
consensus message carrying it fits one transport message. Voters refuse anything larger than
the committee's `max_block_bytes` (at most MAX_SERVABLE_BLOCK_BYTES), leaders never build it,
and records carry each command once (the entry leaves are derived from the block).
"""

from __future__ import annotations

from typing import Any, cast

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coalitiond.consensus.batcher import wire_size
from coalitiond.consensus.events import (
    Broadcast,
    CommandSubmitted,
    CoreConfig,
    MessageReceived,
    Refused,
)
from coalitiond.consensus.limits import (
    BLOCK_OVERHEAD_RESERVE,
    DEFAULT_MAX_BLOCK_BYTES,
    MAX_SERVABLE_BLOCK_BYTES,
    MIN_MAX_BLOCK_BYTES,
)
from coalitiond.consensus.messages import (
    Finalization,
    Notarization,
    Proposal,
    decode_message,
    encode_message,
)
from coalitiond.consensus.types import (
    MAX_COMMAND_SIZE,
    MAX_COMMANDS_PER_BLOCK,
    MAX_EVIDENCE_PER_BLOCK,
    MAX_EVIDENCE_SIZE,
    ZERO_DIGEST,
    Block,
    Certificate,
    Vote,
    VoteKind,
    genesis_block,
)
from coalitiond.integrator.client import MAX_RESPONSE_BYTES
from coalitiond.integrator.verifier import AnswerVerifier
from coalitiond.log.chain import ChainVerifier
from coalitiond.log.checkpoint import Checkpoint
from coalitiond.log.records import (
    MAX_RECORD_BYTES,
    MAX_RECORD_OVERHEAD,
    FinalizedBlock,
    entry_leaves,
)
from coalitiond.node import wire
from coalitiond.node.resolver import REPLY_HEADROOM, Resolver
from coalitiond.ops import read_api
from coalitiond.primitives.committee import MAX_COMMITTEE_MEMBERS, CommitteeSpec
from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.encoding import decode, encode
from coalitiond.primitives.merkle import Frontier, leaf_hash
from coalitiond.testing.cores import AnsweringCore, started
from coalitiond.testing.simulator import make_committee
from coalitiond.transport.session import MAX_MESSAGE

#: What a daemon's router lets one payload be (ConnectionManager: max_message − 1) and what
#: its block servers put in one "blocks" reply (Resolver._serve).
MAX_PAYLOAD = MAX_MESSAGE - 1
REPLY_LIMIT = min(wire.MAX_REPLY_BYTES, MAX_PAYLOAD - REPLY_HEADROOM)

#: The largest committee: the most signatures and votes a record can carry.
BIG, BIG_KEYS = make_committee(MAX_COMMITTEE_MEMBERS)
SMALL, SMALL_KEYS = make_committee(4)


# -- building blocks of an exact size ----------------------------------------------------------


def block_of_size(committee: CommitteeSpec, target: int, command_size: int = 20_000,
                  view: int = 1) -> Block:
    """A block for `view` from its leader, on genesis, whose encoding is exactly `target`
    bytes: distinct commands of `command_size` bytes and one filler command."""
    parent = genesis_block(committee)

    def make(commands: list[bytes]) -> Block:
        return Block(committee.epoch, 1, view, parent.digest, committee.leader(view),
                     tuple(commands), 0, ZERO_DIGEST)

    def command(i: int, size: int) -> bytes:
        return (b"%08d:" % i + b"c" * size)[:size]

    count = min(max(0, (target - 1_500) // wire_size(command(0, command_size))),
                MAX_COMMANDS_PER_BLOCK - 3)
    body = [command(i, command_size) for i in range(count)]
    probe = 1000  # fillers' CBOR heads are 3 bytes, and stay so (256 ≤ n < 65536)
    while len(make([*body, command(len(body), probe)]).encode()) + 40_000 < target:
        body.append(command(len(body), 30_000))
    size = len(make([*body, command(len(body), probe)]).encode())
    filler = probe + target - size
    assert 256 <= filler < 65_536, f"cannot build {target} bytes with {command_size}-byte commands"
    block = make([*body, command(len(body), filler)])
    assert len(block.encode()) == target
    return block


def proposal_to(voter: int, block: Block, keys: list[SigningKey],
                committee: CommitteeSpec, config: CoreConfig) -> list[object]:
    """What member `voter` does with `block` proposed by its view's leader."""
    core = AnsweringCore(committee, keys[voter], config)
    started(core)
    return core.step(MessageReceived(block.proposer,
                                     Proposal.sign(keys[block.proposer], committee, block)))


def notarized(actions: list[object], block: Block) -> bool:
    return any(isinstance(a, Broadcast) and isinstance(a.message, Vote)
               and a.message.kind is VoteKind.NOTARIZE and a.message.digest == block.digest
               for a in actions)


def refusals(actions: list[object]) -> list[str]:
    return [a.reason for a in actions if isinstance(a, Refused)]


# -- the served record of a block, on every serving path ---------------------------------------


def record_of(committee: CommitteeSpec, keys: list[SigningKey], block: Block) -> FinalizedBlock:
    """The record a member of the largest committee serves: both certificates signed by every
    member, every member's two votes, and its signed checkpoint."""
    votes = {kind: [Vote.sign(k, committee, i, kind, block.view, block.digest)
                    for i, k in enumerate(keys)]
             for kind in (VoteKind.NOTARIZE, VoteKind.FINALIZE)}
    tree = Frontier()
    for leaf in entry_leaves(block):
        tree.append(leaf_hash(leaf))
    note = Checkpoint(tree.size, tree.root(), committee.committee_id, block.epoch, block.height,
                      block.digest).sign(keys[0])
    return FinalizedBlock(block, Certificate.from_votes(votes[VoteKind.FINALIZE]),
                          Certificate.from_votes(votes[VoteKind.NOTARIZE]),
                          (*votes[VoteKind.NOTARIZE], *votes[VoteKind.FINALIZE]), note)


class _OneBlockStore:
    """The two things the block servers read from a store."""

    def __init__(self, fb: FinalizedBlock) -> None:
        self.fb = fb
        self.height = fb.height

    def iter_finalized(self, start: int = 1, stop: int | None = None) -> list[FinalizedBlock]:
        return [self.fb] if start <= self.fb.height <= (stop or self.fb.height) else []


def served_everywhere(committee: CommitteeSpec, fb: FinalizedBlock) -> None:
    """Assert that `fb` is served, whole and checkable, on every path."""
    store = cast(Any, _OneBlockStore(fb))
    assert len(encode(fb.to_wire())) <= MAX_RECORD_BYTES
    # Catch-up answers, followers and `tail`: the block servers' "blocks" reply.
    served = Resolver.read_blocks(cast(Any, None), store, fb.height, 1, REPLY_LIMIT)
    assert served == [fb], f"a record of {len(encode(fb.to_wire()))} bytes is not served"
    reply = wire.encode_message(wire.Blocks(7, fb.height, tuple(served)))
    assert len(reply) <= MAX_PAYLOAD  # the router sends it; the peer's reassembly takes it
    got = wire.decode_message(reply)
    assert isinstance(got, wire.Blocks) and got.blocks == (fb,)
    received = got.blocks[0]
    assert ChainVerifier(committee).feed(received) == [received]  # a follower's check
    assert received.entries == tuple(entry_leaves(fb.block))  # leaves derived, checkable
    # /v1/blocks, a page of one: within the page budget and the integrator's response bound.
    page = read_api._read_blocks(store, fb.height, 1)
    assert len(page["blocks"]) == 1
    assert len(encode(page["blocks"][0])) <= min(MAX_RECORD_BYTES, read_api.MAX_PAGE_BYTES)
    body = encode(page)
    assert len(body) <= MAX_RESPONSE_BYTES
    checked = AnswerVerifier(committee).blocks(decode(body), fb.height, None)
    assert [b.block for b in checked.blocks] == [fb.block]
    # The consensus messages that carry the block: one transport message each.
    for msg in (Proposal.sign(BIG_KEYS[fb.block.proposer], committee, fb.block)
                if committee is BIG else None,
                Notarization(cast(Certificate, fb.notarization), fb.block),
                Finalization(cast(Certificate, fb.finalization), fb.block)):
        if msg is not None:
            data = encode_message(committee, msg)
            assert len(data) <= MAX_PAYLOAD
            assert decode_message(committee, data) is not None


# -- the limits fit together -------------------------------------------------------------------


def test_every_serving_limit_holds_the_largest_record() -> None:
    """The constants of docs/protocol.md §10: the largest record a committee can produce
    (MAX_SERVABLE_BLOCK_BYTES of block plus the record's overhead) fits the block servers'
    reply, the /v1/blocks page and the receivers' decode bounds."""
    assert MAX_RECORD_BYTES == MAX_SERVABLE_BLOCK_BYTES + MAX_RECORD_OVERHEAD
    assert MAX_RECORD_BYTES + 1024 <= REPLY_LIMIT  # 1 KiB for the reply's own header
    assert MAX_RECORD_BYTES <= read_api.MAX_PAGE_BYTES
    assert REPLY_LIMIT <= wire.MAX_CLIENT_MESSAGE
    assert MIN_MAX_BLOCK_BYTES <= DEFAULT_MAX_BLOCK_BYTES <= MAX_SERVABLE_BLOCK_BYTES
    assert BLOCK_OVERHEAD_RESERVE + wire_size(bytes(MAX_COMMAND_SIZE)) <= MIN_MAX_BLOCK_BYTES


def test_the_record_overhead_bound_holds_for_the_largest_committee() -> None:
    """MAX_RECORD_OVERHEAD bounds what a record adds to its block: 64 signers on both
    certificates, 128 votes, a signed checkpoint."""
    block = block_of_size(BIG, 100_000)
    fb = record_of(BIG, BIG_KEYS, block)
    overhead = len(encode(fb.to_wire())) - len(block.encode())
    assert 0 < overhead <= MAX_RECORD_OVERHEAD - 32 * 1024, overhead


def test_a_2_1_mib_block_is_served_although_a_schema_1_record_of_it_was_not() -> None:
    """The issue's case: a 2.1 MiB block made a 4.2 MB record (every command twice), above the
    reply limit, and catch-up, followers and `tail` stopped at its height for good."""
    block = block_of_size(BIG, 2_100_000 + 100 * 1024, command_size=300)
    fb = record_of(BIG, BIG_KEYS, block)
    legacy = ["block", block.encode(), cast(Certificate, fb.finalization).encode(),
              cast(Certificate, fb.notarization).encode(), [v.to_wire() for v in fb.votes],
              list(fb.entries), fb.checkpoint]
    assert len(encode(legacy)) > REPLY_LIMIT
    assert FinalizedBlock.from_wire(decode(encode(legacy))) == fb  # still read
    served_everywhere(BIG, fb)


# -- the voter's rule --------------------------------------------------------------------------


def test_a_block_one_byte_over_max_block_bytes_is_refused_by_a_voter() -> None:
    """rules.check_block_size: at max_block_bytes the voter notarises, one byte more and it
    refuses, naming the size and the limit, and signs nothing."""
    config = CoreConfig(max_block_bytes=MIN_MAX_BLOCK_BYTES)
    at = block_of_size(SMALL, MIN_MAX_BLOCK_BYTES)
    over = block_of_size(SMALL, MIN_MAX_BLOCK_BYTES + 1)
    accepted = proposal_to(2, at, SMALL_KEYS, SMALL, config)
    assert notarized(accepted, at) and not refusals(accepted)
    refused = proposal_to(2, over, SMALL_KEYS, SMALL, config)
    assert refusals(refused) == [
        f"proposal for view 1: block of {MIN_MAX_BLOCK_BYTES + 1} bytes is above "
        f"max_block_bytes {MIN_MAX_BLOCK_BYTES} (the largest block every member can serve)"]
    assert not [a for a in refused if isinstance(a, Broadcast)]


def test_the_largest_accepted_block_under_the_default_is_refused_above_it() -> None:
    config = CoreConfig()
    over = block_of_size(SMALL, DEFAULT_MAX_BLOCK_BYTES + 1)
    assert refusals(proposal_to(3, over, SMALL_KEYS, SMALL, config))


@settings(max_examples=12, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(size=st.one_of(st.just(MAX_SERVABLE_BLOCK_BYTES), st.just(MAX_SERVABLE_BLOCK_BYTES + 1),
                      st.integers(MAX_SERVABLE_BLOCK_BYTES - 256 * 1024,
                                  MAX_SERVABLE_BLOCK_BYTES + 1024 * 1024)),
       command_size=st.sampled_from([400, 4_000, 20_000, MAX_COMMAND_SIZE - 1]))
def test_every_block_a_voter_accepts_is_served_on_every_path(size: int,
                                                            command_size: int) -> None:
    """Property (derandomized: hypothesis prints the falsifying size and command size, and
    replays it): for a committee of the largest size at the largest `max_block_bytes`, a
    block the voter notarises has a record served on every path, and only blocks above the
    limit are refused. Removing the size rule makes the voter notarise blocks whose record
    no block server sends."""
    if size // command_size >= MAX_COMMANDS_PER_BLOCK:
        command_size = 4_000
    block = block_of_size(BIG, size, command_size)
    actions = proposal_to(2, block, BIG_KEYS, BIG,
                          CoreConfig(max_block_bytes=MAX_SERVABLE_BLOCK_BYTES))
    accepted = notarized(actions, block)
    if accepted:
        served_everywhere(BIG, record_of(BIG, BIG_KEYS, block))
    assert accepted == (size <= MAX_SERVABLE_BLOCK_BYTES), refusals(actions)


# -- the leader's budget -----------------------------------------------------------------------


def test_a_leader_never_builds_a_block_above_max_block_bytes() -> None:
    """The batch budget is min(max_batch_bytes, max_block_bytes − BLOCK_OVERHEAD_RESERVE),
    counted in encoded bytes: with more pending than fits, the leader's block is at most
    max_block_bytes and the leader notarises its own proposal (the rule accepts it)."""
    config = CoreConfig(max_block_bytes=MIN_MAX_BLOCK_BYTES,
                        max_batch_bytes=8 * 1024 * 1024 - BLOCK_OVERHEAD_RESERVE,
                        max_batch_commands=MAX_COMMANDS_PER_BLOCK)
    leader = AnsweringCore(SMALL, SMALL_KEYS[2], config)  # leads view 2
    started(leader)
    for i in range(40):  # 2.5 MiB pending, gathered in view 1
        assert not leader.step(CommandSubmitted((b"%04d" % i) * (MAX_COMMAND_SIZE // 4)))
    actions: list[object] = []
    for i in (0, 1, 3):  # view 1 is nullified: member 2 enters view 2 and proposes
        actions += leader.step(MessageReceived(i, Vote.sign(
            SMALL_KEYS[i], SMALL, i, VoteKind.NULLIFY, 1, ZERO_DIGEST)))
    proposals = [a.message.block for a in actions
                 if isinstance(a, Broadcast) and isinstance(a.message, Proposal)]
    assert len(proposals) == 1
    block = proposals[0]
    assert len(block.commands) > 0
    assert len(block.encode()) <= MIN_MAX_BLOCK_BYTES - BLOCK_OVERHEAD_RESERVE + 256
    assert notarized(actions, block), refusals(actions)


def test_the_reserve_covers_a_full_batch_with_the_most_evidence() -> None:
    """A block whose commands fill the batch budget exactly, with the most evidence a block
    may carry, still encodes within max_block_bytes."""
    config = CoreConfig(max_block_bytes=MIN_MAX_BLOCK_BYTES,
                        max_batch_bytes=8 * 1024 * 1024 - BLOCK_OVERHEAD_RESERVE)
    commands: list[bytes] = []
    used = 0
    while used + wire_size(bytes(MAX_COMMAND_SIZE)) <= config.batch_budget:
        commands.append(b"%06d" % len(commands) + bytes(MAX_COMMAND_SIZE - 6))
        used += wire_size(commands[-1])
    rest = config.batch_budget - used - 3  # the last command's head: 3 bytes
    assert 256 <= rest < 65_536
    commands.append(b"last" + bytes(rest - 4))
    assert sum(wire_size(c) for c in commands) == config.batch_budget
    evidence = tuple(b"%04d" % i + bytes(MAX_EVIDENCE_SIZE - 4)
                     for i in range(MAX_EVIDENCE_PER_BLOCK))
    big = 2**63 - 1
    block = Block(big, big, big, bytes(32), big, tuple(commands), big - 1, bytes(32), evidence,
                  big, bytes(32))
    assert len(block.encode()) <= config.max_block_bytes
