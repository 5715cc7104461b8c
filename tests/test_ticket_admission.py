"""Clients admitted by a recognised ticket issuer: the executor's replicated set, and a real
issuer committee whose tickets admit (and, revoked, remove) a client of another committee."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import trio
from node_harness import all_reach, client_for, in_process, write_committee

from coalitiond.commands.client import EnvelopeSigner, publish
from coalitiond.commands.envelope import Acl, Envelope, InvalidCommand, NotAdmitted
from coalitiond.commands.member import MemberCommand
from coalitiond.components.base import MalformedSnapshot
from coalitiond.components.executor import (
    ADMIT_CLIENTS_OP,
    APPLIED,
    REFUSED,
    REMOVE_CLIENTS_OP,
    Executor,
)
from coalitiond.components.feed.component import Feed
from coalitiond.components.tickets.component import Ticket, issue, revoke
from coalitiond.config import load_config
from coalitiond.primitives.crypto import SigningKey
from coalitiond.primitives.encoding import encode

pytestmark = pytest.mark.live

COMMITTEE_ID = b"\x33" * 32
ROOT = b"\x77" * 32
OTHER_ROOT = b"\x78" * 32
OPERATOR = SigningKey(b"\x01" * 32)
HOLDER = SigningKey(b"\x02" * 32)
TICKET_ID = b"\x99" * 32


def executor(roots: tuple[bytes, ...] = (ROOT,)) -> Executor:
    return Executor(COMMITTEE_ID, Acl.allow([OPERATOR.public], roots),
                    Feed([OPERATOR.public, HOLDER.public]))


def admit(*clients: bytes, root: bytes = ROOT, ticket: bytes = TICKET_ID) -> bytes:
    return MemberCommand.make(COMMITTEE_ID, ADMIT_CLIENTS_OP, {
        "issuer": root, "clients": [[c, ticket] for c in clients]}).raw


def remove(*clients: bytes, root: bytes = ROOT) -> bytes:
    return MemberCommand.make(COMMITTEE_ID, REMOVE_CLIENTS_OP, {
        "issuer": root, "clients": list(clients)}).raw


def holder_envelope(nonce: int) -> bytes:
    return Envelope.sign(HOLDER, COMMITTEE_ID, nonce, [publish("k", nonce)]).raw


def test_an_admitted_client_is_served_from_its_admitting_block_until_removed() -> None:
    ex = executor()
    with pytest.raises(NotAdmitted):
        ex.check_command(holder_envelope(1))
    before = ex.state_root()
    # Member commands apply first: the admission covers the same block's envelopes.
    result = ex.apply_block(1, b"\x01" * 32, [holder_envelope(1), admit(HOLDER.public)])
    assert [o.status for o in result.outcomes] == [APPLIED, APPLIED]
    assert ex.ticket_clients == {HOLDER.public: (ROOT, TICKET_ID)}
    assert ex.state_root() != before
    ex.check_command(holder_envelope(2))  # admitted before voting too
    result = ex.apply_block(2, b"\x02" * 32, [remove(HOLDER.public), holder_envelope(2)])
    assert [(o.status, o.reason) for o in result.outcomes] == [
        (APPLIED, None), (REFUSED, "not_admitted")]
    assert ex.ticket_clients == {}


def test_removal_by_one_issuer_leaves_another_issuers_admission() -> None:
    ex = executor((ROOT, OTHER_ROOT))
    ex.apply_block(1, b"\x01" * 32, [admit(HOLDER.public, root=OTHER_ROOT)])
    ex.apply_block(2, b"\x02" * 32, [remove(HOLDER.public, root=ROOT)])
    assert ex.ticket_clients == {HOLDER.public: (OTHER_ROOT, TICKET_ID)}


@pytest.mark.parametrize(("command", "message"), [
    (admit(HOLDER.public, root=OTHER_ROOT), "is not recognised by this committee's ACL"),
    (MemberCommand.make(COMMITTEE_ID, ADMIT_CLIENTS_OP, {"issuer": ROOT}).raw,
     "args must be exactly {issuer, clients}"),
    (MemberCommand.make(COMMITTEE_ID, ADMIT_CLIENTS_OP, {"issuer": ROOT, "clients": []}).raw,
     "clients a list of 1..256"),
    (MemberCommand.make(COMMITTEE_ID, ADMIT_CLIENTS_OP, {
        "issuer": ROOT, "clients": [[HOLDER.public]]}).raw,
     "each client must be [32-byte key, 32-byte ticket id]"),
    (admit(*sorted([HOLDER.public, OPERATOR.public], reverse=True)),
     "strictly ascending key order"),
    (MemberCommand.make(COMMITTEE_ID, REMOVE_CLIENTS_OP, {
        "issuer": ROOT, "clients": [b"\x01"]}).raw, "each client must be a 32-byte key"),
])
def test_malformed_admissions_are_refused_before_voting(command: bytes, message: str) -> None:
    with pytest.raises(InvalidCommand, match=re.escape(message)):
        executor().check_command(command)


def test_a_committee_without_issuers_refuses_admissions_and_keeps_its_root() -> None:
    plain = executor(roots=())
    with pytest.raises(InvalidCommand, match="not recognised"):
        plain.check_command(admit(HOLDER.public))
    assert plain.state_root() == Executor(COMMITTEE_ID, Acl.allow([OPERATOR.public]),
                                          Feed([OPERATOR.public, HOLDER.public])).state_root()


def test_snapshot_keeps_the_ticket_clients() -> None:
    ex = executor()
    ex.apply_block(1, b"\x01" * 32, [admit(HOLDER.public)])
    copy = executor()
    copy.restore(ex.snapshot())
    assert copy.ticket_clients == ex.ticket_clients and copy.state_root() == ex.state_root()
    copy.check_command(holder_envelope(1))


def test_snapshot_with_unsorted_ticket_clients_is_refused() -> None:
    ex = executor()
    rows = [[k, ROOT, TICKET_ID] for k in sorted([HOLDER.public, OPERATOR.public],
                                                 reverse=True)]
    bad = encode(["executor-snapshot", 1, "feed/1", 0, b"\x00" * 32, [], Feed(
        [OPERATOR.public]).snapshot(), None, rows])
    with pytest.raises(MalformedSnapshot, match="strictly ascending"):
        ex.restore(bad)
    assert ex.ticket_clients == {}


# -- two real committees ------------------------------------------------------------------


def _issuer_and_admitter(tmp_path: Path) -> tuple[object, object, bytes]:
    issuer = write_committee(tmp_path / "issuer", 3, component="tickets")
    spec = load_config(issuer.configs[0], check_key=False).committee_spec()
    coalition = ("\n[coalition]\nname = \"test.coalition\"\nmodules = []\n"
                 "not_shipped = [\"atlas\", \"almanac\", \"chronicle\", \"compute\"]\n"
                 f"ticket_issuer = \"{spec.committee_id.hex()}\"\n")
    for path in issuer.configs:
        text = path.read_text().replace("\nissuers = []",
                                        f'\nissuers = ["{issuer.operator.public.hex()}"]')
        path.write_text(text + coalition)
    issuer_config = load_config(issuer.configs[0], check_key=False)
    root = issuer_config.coalition.ticket_issuer_root if issuer_config.coalition else None
    assert root is not None
    admitter = write_committee(tmp_path / "admitter", 3, component="feed")
    for path in admitter.configs:
        text = path.read_text()
        # The holder may publish, but only its ticket admits it.
        text = text.replace("publishers = [\n", f'publishers = [\n  "{HOLDER.public.hex()}",\n', 1)
        text = text.replace("ticket_issuers = []", f'ticket_issuers = ["{root.hex()}"]')
        text = text.replace("[network]", "ticket_issuer_configs = [\"../issuer/member-0.toml\"]"
                            "\n\n[network]", 1)
        path.write_text(text)
    return issuer, admitter, root


async def test_a_ticket_admits_its_holder_and_revocation_removes_it(tmp_path: Path) -> None:
    issuer, admitter, _ = _issuer_and_admitter(tmp_path)
    now = int(time.time())
    ticket = Ticket("client", HOLDER.public, encode({}), now - 60, now + 3600)
    async with in_process(issuer) as issuers, in_process(admitter) as members:
        await all_reach(issuers.members() + members.members(), 1)
        async with client_for(admitter) as client:
            committee_id = client.committee.committee_id
            holder = EnvelopeSigner(HOLDER, committee_id)
            ack, _ = await client.submit(holder.sign([publish("k", 1)]).raw, wait=False)
            assert not ack.accepted and "not admitted" in (ack.reason or "")
            async with client_for(issuer) as issuing:
                signer = EnvelopeSigner(issuer.operator, issuing.committee.committee_id)
                _, outcome = await issuing.submit(signer.sign([issue(ticket)]).raw)
                assert outcome is not None
                with trio.fail_after(60):
                    for m in members.members():
                        await m.wait_until(lambda m: HOLDER.public in m.executor.ticket_clients)
                ack, outcome = await client.submit(holder.sign([publish("k", 2)]).raw)
                assert ack.accepted and outcome is not None
                assert outcome.outcomes[0][4] == APPLIED
                await issuing.submit(signer.sign([revoke(ticket.ticket_id)]).raw)
                with trio.fail_after(60):
                    for m in members.members():
                        await m.wait_until(
                            lambda m: HOLDER.public not in m.executor.ticket_clients)
            ack, _ = await client.submit(holder.sign([publish("k", 3)]).raw, wait=False)
            assert not ack.accepted


def test_an_issuer_config_that_does_not_match_the_acl_is_refused_at_start(tmp_path: Path
                                                                          ) -> None:
    from coalitiond.node.member import Member
    from coalitiond.primitives.errors import OperatorError

    _, admitter, _ = _issuer_and_admitter(tmp_path)
    path = admitter.configs[0]
    path.write_text(path.read_text().replace('ticket_issuer_configs = ["../issuer/member-0.toml"]',
                                             "ticket_issuer_configs = []"))
    with pytest.raises(OperatorError, match="no issuer config for ticket issuer root"):
        Member(load_config(path), admitter.keys[0])


def test_an_envelope_checked_earlier_is_refused_once_its_client_was_removed() -> None:
    ex = executor()
    ex.apply_block(1, b"\x01" * 32, [admit(HOLDER.public)])
    envelope = holder_envelope(1)
    checked = ex.check_command(envelope)  # admitted when the member checked it
    result = ex.apply_block(2, b"\x02" * 32, [remove(HOLDER.public), envelope],
                            checked=[None, checked])
    assert [(o.status, o.reason) for o in result.outcomes] == [
        (APPLIED, None), (REFUSED, "not_admitted")]
