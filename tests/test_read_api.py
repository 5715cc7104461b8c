"""The HTTP read API over a real committee: four in-process members (real TCP, SQLite,
signatures) of a `feed`, member 0's ops app with the read routes on a real port, every
endpoint read with httpx on trio. No sleeps: waits are on the member's finalisations."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from node_harness import Committee, client_for, in_process, write_committee

from coalitiond.commands.client import EnvelopeSigner, publish
from coalitiond.components.base import check_state_proof
from coalitiond.components.executor import CommandOutcome
from coalitiond.consensus.types import Block, BlockHeader, Certificate, VoteKind
from coalitiond.log.checkpoint import verify_checkpoint
from coalitiond.node.member import Member
from coalitiond.ops.http import OpsApp, serve_ops
from coalitiond.ops.read_api import (
    MAX_BLOCKS_PER_PAGE,
    MAX_ENTRIES_PER_PAGE,
    MAX_PARAM_UINT,
    ReadApi,
    ReadSource,
    parse_state_args,
)
from coalitiond.primitives.committee import CommitteeSpec
from coalitiond.primitives.encoding import decode, encode
from coalitiond.primitives.identity import hash_structure
from coalitiond.verify import verify_consistency, verify_inclusion

pytestmark = pytest.mark.live

#: Envelopes submitted, and publish commands in each.
SUBMISSIONS = (1, 2, 1, 3)


@dataclass
class Served:
    base_url: str
    member: Member
    spec: CommitteeSpec
    outcomes: list[Any]   # wire.Outcome per submission
    feed_entries: int
    source: ReadSource
    committee: Committee


@asynccontextmanager
async def served_committee(tmp_path: Path) -> AsyncIterator[Served]:
    """A 4-member feed committee with SUBMISSIONS finalised, member 0's read API served."""
    committee = write_committee(tmp_path, 4)
    spec = committee.member_config(0).committee_spec()
    signer = EnvelopeSigner(committee.operator, spec.committee_id, 1)
    with trio.fail_after(120):
        async with in_process(committee) as running, client_for(committee) as client, \
                trio.open_nursery() as nursery:
            member = running.members()[0]
            outcomes = []
            for k, n in enumerate(SUBMISSIONS):
                envelope = signer.sign([publish("note", {"k": k, "j": j}) for j in range(n)])
                ack, outcome = await client.submit(envelope.raw)
                assert ack.accepted and outcome is not None
                assert all(CommandOutcome.from_wire(o).status == "applied"
                           for o in outcome.outcomes)
                outcomes.append(outcome)
            top = max(o.height for o in outcomes)
            await member.wait_until(lambda m: m.height >= top)
            await _state_certified(member)
            source = ReadSource.for_member(member)
            app = ReadApi(source).install(OpsApp(status=member.status,
                                                 ready=lambda: member.ready))
            (address,) = await nursery.start(serve_ops, app, "127.0.0.1:0")
            try:
                yield Served(address, member, spec, outcomes,
                             sum(SUBMISSIONS), source, committee)
            finally:
                nursery.cancel_scope.cancel()


async def _state_certified(member: Member) -> None:
    """Wait until a stored block commits to the member's current state root. Blocks carry
    the root of a height already executed, so a state read is certified only once a later
    block is final; waiting here keeps every read in the tests from depending on the read
    API's own bounded wait for that block (MAX_CERTIFY_WAIT_S)."""
    assert member.store is not None
    while True:
        root, height = member.state_root, member.height
        if await member.store.run(lambda s, root=root: any(
                s.block(h).state_root == root for h in range(1, s.height + 1))):
            return
        await member.wait_until(lambda m, height=height: m.height > height)


async def _get(http: httpx.AsyncClient, path: str, **params: Any) -> tuple[int, Any]:
    r = await http.get(path, params={k: str(v) for k, v in params.items()})
    if r.headers["content-type"] == "application/cbor":
        return r.status_code, decode(r.content)
    return r.status_code, r.json()


async def test_every_endpoint_serves_what_the_log_and_the_state_hold(tmp_path: Path) -> None:
    async with served_committee(tmp_path) as s, httpx.AsyncClient(base_url=s.base_url) as http:
        committee = s.spec
        # Operator routes are still there.
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).status_code == 200
        assert (await http.get("/status")).json()["member"] == 0
        assert b"coalitiond" in (await http.get("/metrics")).content

        status, st = await _get(http, "/v1/status")
        assert status == 200 and st["api"] == 1 and st["ready"] is True
        assert st["committee"]["id"] == committee.committee_id.hex()
        assert st["committee"]["quorum"] == committee.quorum
        assert st["log"]["height"] >= max(o.height for o in s.outcomes)
        size = st["log"]["size"]
        assert size >= len(SUBMISSIONS)

        # Checkpoint: the member's note, its block and a quorum's finalization.
        status, cp = await _get(http, "/v1/checkpoint", format="cbor")
        assert status == 200
        note = verify_checkpoint(cp["note"], committee.members[0])
        block = Block.decode(cp["block"])
        assert (block.digest, block.height) == (note.block_digest, note.height)
        final = block
        for raw in cp["chain"]:
            nxt = BlockHeader.decode(raw)
            assert nxt.parent == final.digest
            final = nxt
        cert = Certificate.decode(cp["finalization"])
        assert cert.kind is VoteKind.FINALIZE and cert.digest == final.digest
        cert.verify(committee)
        assert (cp["size"], cp["root"]) == (note.size, note.root)
        # ... and the block of the chain that certifies the note's size and root.
        (certifier,) = [BlockHeader.decode(raw) for raw in cp["chain"]
                        if BlockHeader.decode(raw).height == cp["certifier"]]
        assert (certifier.executed_height, certifier.log_size, certifier.log_root) == \
            (note.height, note.size, note.root)
        # An earlier checkpoint by height: the lowest certified height at or above it.
        first_height = s.outcomes[0].height
        status, old_cp = await _get(http, "/v1/checkpoint", height=first_height, format="cbor")
        assert status == 200 and first_height <= old_cp["height"] <= note.height
        old = verify_checkpoint(old_cp["note"], committee.members[0])

        # Blocks: certificates and votes of every block in the range.
        status, page = await _get(http, "/v1/blocks", format="cbor", limit=3)
        assert status == 200 and [b["height"] for b in page["blocks"]] == [1, 2, 3]
        assert page["next"] == 4 and page["head"] >= note.height
        for item in page["blocks"]:
            b = Block.decode(item["block"])
            assert b.digest == item["digest"]
            assert item["finalization"] is not None or item["notarization"] is not None
            assert len(item["votes"]) >= committee.quorum
        status, page = await _get(http, "/v1/blocks", **{"from": note.height + 1})
        assert status == 200 and all(b["height"] > note.height for b in page["blocks"])

        # Entries: every submitted envelope at the log index its outcome named.
        status, entries = await _get(http, "/v1/entries", format="cbor", size=note.size)
        assert status == 200 and entries["proof_size"] == note.size
        by_index = {e["index"]: e for e in entries["entries"]}
        for outcome in s.outcomes:
            e = by_index[outcome.log_index]
            assert e["height"] == outcome.height
            assert decode(e["leaf"])[-1] == e["command"]
            assert verify_inclusion(e["leaf"], e["index"], note.size, e["proof"], note.root)

        # Proofs.
        index = s.outcomes[-1].log_index
        status, inc = await _get(http, "/v1/proof/inclusion", format="cbor", index=index,
                                 size=note.size)
        assert status == 200 and inc["leaf"] == by_index[index]["leaf"]
        assert verify_inclusion(inc["leaf"], index, note.size, inc["proof"], note.root)
        status, con = await _get(http, "/v1/proof/consistency", format="cbor", old=old.size,
                                 new=note.size)
        assert status == 200
        assert verify_consistency(old.size, note.size, old.root, note.root, con["proof"])
        # JSON renders the same bytes as hex.
        status, inc_json = await _get(http, "/v1/proof/inclusion", index=index, size=note.size)
        assert inc_json["proof"] == [h.hex() for h in inc["proof"]]

        # State: a feed entry with its state proof up to a certified executor root.
        status, read = await _get(http, "/v1/state/entry", index=2, wait=1, format="cbor")
        assert status == 200, read
        leaf = check_state_proof(read["result"]["state_proof"], read["component_root"])
        assert decode(leaf)[2] == 2  # feed entry seq
        assert hash_structure("executor-state", 1, read["component_signature"],
                              read["dedup_root"], read["component_root"]) == read["executor_root"]
        certified = read["certified"]
        assert certified is not None
        cblock = Block.decode(certified["block"])
        assert cblock.state_root == read["executor_root"]
        assert cblock.executed_height <= s.member.height
        status, head = await _get(http, "/v1/state/head")
        assert status == 200 and head["result"]["count"] == s.feed_entries
        # Executor-level reads, with plain arguments (0x... is bytes).
        client = committee.members[0]  # any key: no nonce yet
        status, nonce = await _get(http, "/v1/state/client_nonce", client="0x" + client.hex())
        assert status == 200 and nonce["result"]["highest"] == 0
        status, since = await _get(http, "/v1/state/since",
                                   args=encode({"index": 1, "limit": 2}).hex(), format="cbor")
        assert status == 200 and [e["seq"] for e in since["result"]["entries"]] == [1, 2]

        status, ev = await _get(http, "/v1/evidence")
        assert status == 200 and ev == {"count": 0, "next": 0, "evidence": []}


async def test_bad_parameters_absent_things_and_oversize_ranges(tmp_path: Path) -> None:
    async with served_committee(tmp_path) as s, httpx.AsyncClient(base_url=s.base_url) as http:
        bad = [
            ("/v1/blocks", {"from": "x"}, "from: must be an unsigned decimal integer"),
            ("/v1/blocks", {"from": "0"}, "from: must be >= 1"),
            ("/v1/blocks", {"limit": "0"}, "limit: must be >= 1"),
            ("/v1/blocks", {"frm": "1"}, "unknown parameter 'frm'"),
            ("/v1/entries", {"from": "-1"}, "from: must be an unsigned decimal integer"),
            ("/v1/entries", {"format": "xml"}, "format: must be json or cbor"),
            ("/v1/proof/inclusion", {}, "index: required"),
            ("/v1/proof/inclusion", {"index": "5", "size": "3"}, "index: must be below size 3"),
            ("/v1/proof/consistency", {"old": "4", "new": "2"}, "old: must be at most new"),
            ("/v1/checkpoint", {"height": "01"}, "height: must be an unsigned decimal"),
            ("/v1/state/entry", {"index": "x"}, "entry: index must be an unsigned"),
            ("/v1/state/nope", {}, "unknown feed query 'nope'"),
            ("/v1/state/entry", {"wait": "yes"}, "wait: must be 0 or 1"),
            ("/v1/state/entry", {"args": "zz"}, "args: must be lowercase hex"),
            ("/v1/state/entry", {"args": "a0", "index": "1"}, "args: cannot be combined"),
            ("/v1/state/BAD", {}, "query name 'BAD'"),
        ]
        for path, params, message in bad:
            r = await http.get(path, params=params)
            assert r.status_code == 400, (path, params, r.text)
            error = r.json()["error"]
            assert message in error and "\n" not in error, (path, error)

        size = s.member.log_size
        height = s.member.height
        absent = [
            ("/v1/checkpoint", {"height": str(height + 1000)}, "is not certified yet"),
            ("/v1/proof/inclusion", {"index": "0", "size": str(size + 1000)},
             "size: no tree of size"),
            ("/v1/proof/consistency", {"old": "1", "new": str(size + 1000)},
             "new: no tree of size"),
            ("/v1/entries", {"size": str(size + 1000)}, "size: no tree of size"),
            ("/v1/nothing", {}, "no route /v1/nothing"),
            # A well-formed read of something the component does not hold (QueryNotFound).
            ("/v1/state/entry", {"index": "99"}, "entry: no entry 99 (the feed has"),
        ]
        for path, params, message in absent:
            r = await http.get(path, params=params)
            assert r.status_code == 404 and message in r.json()["error"], (path, r.text)

        # Oversize limits are capped to the page bound, not refused.
        r = await http.get("/v1/entries", params={"limit": str(10 ** 9)})
        assert r.status_code == 200
        assert len(r.json()["entries"]) == min(size, MAX_ENTRIES_PER_PAGE)
        r = await http.get("/v1/blocks", params={"limit": str(10 ** 9)})
        assert r.status_code == 200
        assert len(r.json()["blocks"]) == min(r.json()["head"], MAX_BLOCKS_PER_PAGE)


async def test_a_diverged_member_serves_no_state_reads(tmp_path: Path) -> None:
    async with served_committee(tmp_path) as s, httpx.AsyncClient(base_url=s.base_url) as http:
        assert (await http.get("/v1/state/head")).status_code == 200
        s.member.diverged = "height 3: a block claims state root 00, ours is 11"
        r = await http.get("/v1/state/head")
        assert r.status_code == 503 and "state diverged: height 3" in r.json()["error"]
        # The signed log is still served (it is checked by readers, not by our state).
        assert (await http.get("/v1/checkpoint")).status_code == 200


def test_state_arguments_parse_plain_and_exact_forms() -> None:
    assert parse_state_args({"index": "12", "name": "abc", "key": "0x00ff", "n": "-3",
                             "format": "cbor", "wait": "1"}) == {
        "index": 12, "name": "abc", "key": b"\x00\xff", "n": -3}
    assert parse_state_args({"index": "012"}) == {"index": "012"}  # not canonical: text
    exact = {"index": 1, "flag": True, "key": b"\x01"}
    assert parse_state_args({"args": encode(exact).hex()}) == exact


# ---------------------------------------------------------------------------------------
# Parameter bounds: never a 500 (issue 20)

#: Where the store and the encoder stop: SQLite's signed 64-bit INTEGER and CBOR's 2^64.
EDGES = (0, 1, 2, 63, 64, 255, 256, 257, (1 << 32), (1 << 53) + 1, MAX_PARAM_UINT - 256,
         MAX_PARAM_UINT - 1, MAX_PARAM_UINT, MAX_PARAM_UINT + 1, (1 << 64) - 1, 1 << 64,
         (1 << 64) + 1, 10 ** 19, 10 ** 20 - 1, 10 ** 20, 10 ** 30)
ROUTES = ("/v1/status", "/v1/checkpoint", "/v1/blocks", "/v1/entries", "/v1/proof/inclusion",
          "/v1/proof/consistency", "/v1/evidence", "/status", "/readyz", "/healthz",
          "/metrics")
STATE_NAMES = ("entry", "head", "latest", "since", "client_nonce", "stamp", "x", "BAD",
               "a" * 65, "entry:1", "-entry")
PARAM_NAMES = ("from", "limit", "size", "index", "old", "new", "height", "format", "wait",
               "args", "client", "seq", "frm", "")
#: What any route may answer; 500 is a bug, whatever the query string.
DOCUMENTED = {200, 400, 404, 413, 414, 503}


async def _raw_get(address: str, target: bytes) -> tuple[int, bytes, bytes]:
    """One request with exactly `target` on the request line: (status, headers, body)."""
    host, port = address.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n"
                              b"Connection: close\r\n\r\n")
        data = b""
        while chunk := await stream.receive_some(1 << 20):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), head, body


async def test_parameters_beyond_the_store_and_the_encoder_are_400_not_500(
        tmp_path: Path) -> None:
    """The verifier's probes of issue 20: `from ≥ 2^63` went into SQLite (500), `from ≥ 2^64`
    could not be encoded as CBOR (500) and came back in JSON as `next ≥ 2^64`. Each is now a
    400 naming the parameter and its bound; the largest accepted value still answers, and
    the log is served as before."""
    async with served_committee(tmp_path) as s, httpx.AsyncClient(base_url=s.base_url) as http:
        status, before = await _get(http, "/v1/blocks", limit=3, format="cbor")
        assert status == 200
        top = str(MAX_PARAM_UINT)
        refused = [
            ("/v1/evidence", {"from": str(1 << 63)}, f"from: must be 0..{top}, got {1 << 63}"),
            ("/v1/evidence", {"limit": str(1 << 64)}, f"limit: must be 1..{top}"),
            ("/v1/blocks", {"from": str(1 << 64), "format": "cbor"}, f"from: must be 1..{top}"),
            ("/v1/blocks", {"from": str(1 << 64)}, f"from: must be 1..{top}"),
            ("/v1/entries", {"from": str(1 << 64), "format": "cbor"}, f"from: must be 0..{top}"),
            ("/v1/entries", {"size": str(10 ** 20 - 1)}, f"size: must be 1..{top}"),
            ("/v1/proof/inclusion", {"index": str(1 << 63)}, f"index: must be 0..{top}"),
            ("/v1/proof/consistency", {"old": "0", "new": str(1 << 63)}, "new: must be 0.."),
            ("/v1/checkpoint", {"height": str(1 << 63)}, f"height: must be 1..{top}"),
            ("/v1/blocks", {"from": "1" * 21}, "from: must be an unsigned decimal integer"),
        ]
        for path, params, message in refused:
            r = await http.get(path, params=params)
            assert r.status_code == 400, (path, params, r.status_code, r.text)
            assert message in r.json()["error"], (path, r.text)
        # The largest value is accepted: an empty page whose `next` still encodes.
        for path in ("/v1/blocks", "/v1/entries", "/v1/evidence"):
            status, page = await _get(http, path, **{"from": top, "format": "cbor"})
            assert status == 200 and page["next"] == MAX_PARAM_UINT, (path, page)
        status, after = await _get(http, "/v1/blocks", limit=3, format="cbor")
        assert status == 200 and after["blocks"] == before["blocks"]


#: Each route's own parameter names (drawn most often, so most strings reach the bounds).
ROUTE_PARAMS = {"/v1/checkpoint": ("height",), "/v1/blocks": ("from", "limit"),
                "/v1/entries": ("from", "limit", "size"),
                "/v1/proof/inclusion": ("index", "size"), "/v1/proof/consistency": ("old", "new"),
                "/v1/evidence": ("from", "limit")}


def _query_strings(route: str) -> Any:
    """Random query strings for `route`: its own names and others, numbers at and around
    every bound, signs, leading zeros, hex, CBOR `args`, long and non-ASCII text, repeated
    names, escaped and raw."""
    from hypothesis import strategies as st

    numbers = st.one_of(st.sampled_from(EDGES), st.sampled_from(EDGES),
                        st.integers(min_value=0, max_value=1 << 70))
    cbor_values = st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(-(1 << 64), (1 << 64) - 1),
                  st.binary(max_size=40), st.text(max_size=20)),
        lambda inner: st.one_of(st.lists(inner, max_size=4),
                                st.dictionaries(st.text(max_size=8), inner, max_size=4)),
        max_leaves=8)
    odd = st.one_of(
        numbers.map(lambda n: f"-{n}"),
        numbers.map(lambda n: f"0{n}"),
        numbers.map(lambda n: f"+{n}"),
        numbers.map(lambda n: f"{n}.0"),
        st.sampled_from(("", "json", "cbor", "CBOR", "0", "1", "2", "yes", "0x", "0x0", "0xzz",
                         "0x" + "00" * 32, "١٢", "²", " 1", "1 ", "nan", "1e3")),
        st.binary(max_size=40).map(lambda b: "0x" + b.hex()),
        cbor_values.map(lambda v: encode(v).hex()),
        st.text(max_size=40),
        st.integers(min_value=4000, max_value=5000).map(lambda n: "9" * n),
    )
    values = st.one_of(numbers.map(str), numbers.map(str), odd)
    own = ROUTE_PARAMS.get(route, ("index", "seq", "limit", "client", "args", "wait"))
    names = st.one_of(st.sampled_from(own), st.sampled_from(own), st.just("format"),
                      st.sampled_from(PARAM_NAMES), st.text(max_size=12))
    aimed = st.tuples(st.sampled_from(own), st.sampled_from(EDGES).map(str))
    pairs = st.tuples(st.lists(aimed, min_size=1, max_size=2),
                      st.lists(st.tuples(names, values), max_size=3)).map(lambda t: t[0] + t[1])
    many = st.integers(min_value=30, max_value=40).map(
        lambda n: [(f"p{i}", "1") for i in range(n)])
    fmt = st.sampled_from([[], [("format", "cbor")]])
    with_format = st.tuples(pairs, fmt).map(lambda t: t[0] + t[1])
    return st.tuples(st.one_of(with_format, with_format, pairs, many), st.booleans())


def _render(pairs: list[tuple[str, str]], escaped: bool) -> bytes:
    from urllib.parse import quote

    if escaped:
        return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs).encode()
    # Unescaped: what a careless client sends; only bytes HTTP allows on the request line.
    text = "&".join(f"{k}={v}" for k, v in pairs)
    return bytes(b for b in text.encode() if 0x21 <= b < 0x7F and b not in b"#")


async def test_no_query_string_on_any_route_gets_a_500(tmp_path: Path) -> None:
    """Property: whatever the query string, every route (the read API's, the state reads',
    the operator's) answers with a documented status — never 500 — and an error is one JSON
    line. Hypothesis draws the strings (seed printed; replay with
    COALITIOND_API_QUERY_SEED=<seed>); requests go to member 0's real HTTP server, so
    hypercorn's own parsing is part of what is tested."""
    import os
    import random

    from hypothesis import HealthCheck, example, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    run_seed = int(os.environ.get("COALITIOND_API_QUERY_SEED", random.randrange(1 << 32)))
    print(f"COALITIOND_API_QUERY_SEED={run_seed}")
    async with served_committee(tmp_path) as s:
        token = trio.lowlevel.current_trio_token()
        seen: dict[int, int] = {}

        # The verifier's probes of issue 20 always run; the drawn strings find such bounds
        # on their own too (about one run in two at 300 examples with the bound removed).
        @example(route_and_query=("/v1/evidence", ([("from", str(1 << 63))], True)),
                 head=False)
        @example(route_and_query=("/v1/blocks", ([("from", str(1 << 64)), ("format", "cbor")],
                                                 True)), head=False)
        @example(route_and_query=("/v1/entries", ([("from", str(1 << 64)), ("format", "cbor")],
                                                  False)), head=False)
        @hypothesis_seed(run_seed)
        @settings(max_examples=300, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(route_and_query=st.one_of(
                   st.sampled_from(sorted(ROUTE_PARAMS)),
                   st.sampled_from(sorted(ROUTE_PARAMS)),
                   st.sampled_from(ROUTES),
                   st.sampled_from(STATE_NAMES).map(lambda n: "/v1/state/" + n),
               ).flatmap(lambda r: st.tuples(st.just(r), _query_strings(r))),
               head=st.booleans())
        def no_500(route_and_query: tuple[str, tuple[list[tuple[str, str]], bool]],
                   head: bool) -> None:
            route, query = route_and_query
            raw = _render(*query)
            target = route.encode() + (b"?" + raw if raw or head else b"")
            status, headers, body = trio.from_thread.run(
                _raw_get, s.base_url, target, trio_token=token)
            seen[status] = seen.get(status, 0) + 1
            assert status in DOCUMENTED, (target[:300], status, body[:300])
            if status >= 400 and b"application/json" in headers:
                error = json.loads(body)["error"]
                assert isinstance(error, str) and "\n" not in error, (target[:300], body)

        await trio.to_thread.run_sync(no_500)
        print(f"statuses seen: {sorted(seen.items())}")
        # The run reached the refusals and the answers, not only one of them.
        assert seen.get(200, 0) > 0 and seen.get(400, 0) > 0, seen
