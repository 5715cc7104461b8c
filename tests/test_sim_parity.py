"""The simulator does what the daemon does, its attackers attack, and its oracle judges.

* own broadcasts reach the sender's core within the same step (node/voter.py `_step_core`);
* a finalised block is durable, and executed, only once the block journal would store it
  (node/journal.py `take_blocks`: a run is stored when its last block carries its own
  finalization); a crash loses the rest;
* fetches go to any peer in turn, Byzantine ones included (node/resolver.py `fetcher`);
* validation refusals are simulated identically at every honest member;
* the fork-seeker proposes on stale parents and plants un-notarised blocks;
* the oracle (testing/oracle.py) refuses unjustified votes and finalisations.
"""

from __future__ import annotations

from coalitiond.consensus.events import Broadcast, Finalized, MessageReceived, Send
from coalitiond.consensus.types import ZERO_DIGEST, Block, Certificate, Vote, VoteKind
from coalitiond.consensus.voter import Core
from coalitiond.primitives.committee import CommitteeSpec
from coalitiond.testing.byzantine import ForkSeeker
from coalitiond.testing.oracle import Oracle, reference_quorum
from coalitiond.testing.simulator import (
    Crash,
    NetworkConfig,
    SimConfig,
    Simulation,
    make_committee,
    run,
)


def test_own_broadcasts_reach_the_senders_core_in_the_same_step() -> None:
    sim = Simulation(SimConfig(seed=4, n=4, target_new_blocks=3))
    seen: list[tuple[int, str]] = []  # (member, "sent" | "got own") in stepping order
    original = Core.step

    def step(self: Core, event: object) -> list[object]:
        if isinstance(event, MessageReceived) and event.sender == self.me:
            seen.append((self.me, "got own"))
        actions = original(self, event)  # type: ignore[arg-type]
        for a in actions:
            if isinstance(a, Broadcast) or (isinstance(a, Send) and a.to == self.me):
                seen.append((self.me, "sent"))
        return actions  # type: ignore[return-value]

    try:
        Core.step = step  # type: ignore[method-assign,assignment]
        sim.run()
    finally:
        Core.step = original  # type: ignore[method-assign]
    for member in range(4):
        mine = [kind for m, kind in seen if m == member]
        assert mine.count("sent") == mine.count("got own") > 5, member


def _chain(committee: CommitteeSpec) -> tuple[Block, Block, Certificate, Certificate]:
    from coalitiond.consensus.types import genesis_block
    g = genesis_block(committee)
    a = Block(0, 1, 1, g.digest, 1, (b"a",), 0, ZERO_DIGEST)
    b = Block(0, 2, 2, a.digest, 2, (b"b",), 0, ZERO_DIGEST)
    return a, b, Certificate(VoteKind.FINALIZE, 0, 1, a.digest, ()), \
        Certificate(VoteKind.FINALIZE, 0, 2, b.digest, ())


def test_blocks_are_durable_and_executed_only_once_stored() -> None:
    sim = Simulation(SimConfig(seed=1, n=4))
    sim.oracle.finalized_refusal = lambda block, cert: None  # type: ignore[method-assign]
    node = sim.nodes[0]
    a, _b, cert_a, cert_b = _chain(sim.committee)
    queued = len(sim._queue)
    # a is final through b's certificate, which has not arrived: not stored, not executed
    sim._on_finalized(node, Finalized(a, cert_b))
    assert node.durable == 0 and len(sim._queue) == queued
    sim._restart(node, wipe_guard=False)
    assert node.finalized == [] and node.core.tip.height == 0  # lost in the crash
    # finalised under its own certificate: stored and executed
    sim._on_finalized(node, Finalized(a, cert_a))
    assert node.durable == 1
    assert [e for e in sim._queue if e[2] == "execute" and e[3][0] == 0]
    sim._restart(node, wipe_guard=False)
    assert node.core.tip == a


def test_catch_up_asks_byzantine_peers_too_and_moves_on_when_refused() -> None:
    sim = run(SimConfig(seed=0, n=5, byzantine=((1, "lying-fetch-server"),),
                        crashes=(Crash(3, 200, 2500, torn=False), Crash(4, 700, 3000)),
                        target_new_blocks=5))
    refused = {r: c for r, c in sim.stats.refused_wire.items() if r.startswith("fetched:")}
    assert refused, sim.stats.refused_wire
    # and the members that were down caught up (from an honest peer) and finalised on
    assert all(x.finals_since_stable >= 5 for x in sim.nodes if not x.faulty)


def test_validation_refusals_are_the_same_everywhere() -> None:
    sim = run(SimConfig(seed=2, n=5, refuse_commands=0.25, byzantine=((2, "replayer"),),
                        target_new_blocks=12))
    assert any("the component refused the block's commands" in r
               for r in sim.stats.refused_core), sim.stats.refused_core
    for x in sim.nodes:
        if not x.faulty:
            assert not [c for blk, _ in x.finalized for c in blk.commands if sim.refuses(c)]
    assert sum(1 for i in range(200) if sim.refuses(b"cmd/%d" % i)) in range(25, 76)


def test_fork_seeker_proposes_on_stale_parents_and_plants_blocks() -> None:
    sim = run(SimConfig(seed=0, n=5, byzantine=((1, "fork-seeker"), (2, "fork-seeker")),
                        network=NetworkConfig(drop=0.1, duplicate=0.1), gst_ms=2000,
                        max_time_ms=20_000))
    seekers = [x.handler for x in sim.nodes if isinstance(x.handler, ForkSeeker)]
    assert sum(s.stale_proposals for s in seekers) > 0
    assert sum(s.plants for s in seekers) > 0
    assert sim.stats.max_height > 5


def test_oracle_quorum_is_the_dial() -> None:
    for n in range(1, 16):
        for fb in range(0, n):
            if reference_quorum(n, fb) <= n:
                assert reference_quorum(n, fb) == make_committee(n, fb)[0].quorum


def test_oracle_refuses_unjustified_votes_and_finalisations() -> None:
    committee, keys = make_committee(4)  # q = 3
    oracle = Oracle(committee)
    a, b, _, _ = _chain(committee)
    skip = Block(0, 2, 3, a.digest, 3, (b"c",), 0, ZERO_DIGEST)  # skips view 2
    for blk in (a, b, skip):
        oracle.learn_block(blk)

    def votes(kind: VoteKind, view: int, digest: bytes, signers: range) -> None:
        for i in signers:
            oracle.learn(Vote.sign(keys[i], committee, i, kind, view, digest))

    assert oracle.notarize_refusal(a.digest) is None  # on genesis
    assert "no quorum notarised" in (oracle.notarize_refusal(b.digest) or "")
    votes(VoteKind.NOTARIZE, 1, a.digest, range(2))
    assert "no quorum notarised" in (oracle.notarize_refusal(b.digest) or "")
    votes(VoteKind.NOTARIZE, 1, a.digest, range(3))
    assert oracle.notarize_refusal(b.digest) is None
    assert "skips view 2" in (oracle.notarize_refusal(skip.digest) or "")
    votes(VoteKind.NULLIFY, 2, ZERO_DIGEST, range(1, 4))
    assert oracle.notarize_refusal(skip.digest) is None
    sig = keys[1].sign(b"x", b"y")
    dup = Certificate(VoteKind.FINALIZE, 0, 2, b.digest, ((1, sig),) * 3)
    assert "not distinct" in (oracle.finalized_refusal(b, dup) or "")
    good = Certificate(VoteKind.FINALIZE, 0, 2, b.digest, ((0, sig), (1, sig), (2, sig)))
    assert "never notarised" in (oracle.finalized_refusal(b, good) or "")
    votes(VoteKind.NOTARIZE, 2, b.digest, range(3))
    assert oracle.finalized_refusal(b, good) is None
