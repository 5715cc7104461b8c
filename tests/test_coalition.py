"""Coalition identity (DESIGN §2.3): SPEC §6's two golden tables, our confluence fingerprint
vector, and the properties the encoding promises (order matters, pins matter, labels don't)."""

from __future__ import annotations

import json
from pathlib import Path

import blake3
import cbor2
import pytest

from coalitiond.config import load_coalition
from coalitiond.primitives.coalition import (
    MODULES,
    CitizenRef,
    Coalition,
    ConfluenceRef,
    coalition_id,
    coalition_root,
    confluence_fingerprint,
    module_id,
    ticket_issuer_root,
)
from coalitiond.primitives.encoding import encode
from coalitiond.primitives.errors import LocalError
from coalitiond.primitives.identity import make_id

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "configs" / "coalition-example.toml"

# SPEC §6 inputs.
ETHEREUM = "87d4e11436c7eedfc615636267e676f84cddb496455eaf69317e0222c6573120"
BASE = "0123df8bce13d42995549049d0fb4ed358c789f6dad9130d90b3219ea6afd20c"
ORACLE = "66cc1949c13c23a97e88b1363fc8df51b2be1e69e1f362110de87d3151a3d29e"
INTENTS = "c84b1bba373ee26ffdca1f84def7bc42e94c0410696123057b4ad306f03e9860"
ISSUER = "ab33fa0a88ee96b0d105d3543deedccf04ad526c7d7f9ba197c296c6d79bce9e"

# SPEC §6, first table (no ticket issuer).
GOLDEN = {
    "encoding": "8369636f616c6974696f6e016e61636d652e636f616c6974696f6e",
    "coalition": "661e272774fdd4d48a67dc58b1807e2091e2d075906e51b6c91938d45f698948",
    "coalition_root": "9f0c9887fb848ed107f96e10fd2fa41cd704766640774aef08059e85992f07fe",
    "atlas": "573d3abe19db3e1bdfb5724f398db74aca5e3dd41a99a3d99b3894375e0a9c02",
    "almanac": "8284e44ef6fa4a0182fa6551349b02796d9bd0990195f0338a352f721237863f",
    "chronicle": "608aa58a518eee990c27015d86c134214f63c37164fedc34f0e12b4e417eb1fb",
    "compute": "e943e18404ec065c41ae8e1bd08199fb29c0ea0f2b5a6ce4d88604b66407c273",
}
# SPEC §6, second table (ticket issuer id("issuer|acme.tickets")).
GOLDEN_WITH_ISSUER = {
    "coalition_root": "15bb263a7f9f781bc7b02fd082102c7e559556249f136871d4a21b751cba0269",
    "ticket_issuer_root": "fe858df7e92aef7ccd4ca74850432976b371b270647a0339d1614132abeb6510",
}


def _acme(ticket_issuer: bytes | None = None) -> Coalition:
    return Coalition(
        name="acme.coalition",
        lattices=(CitizenRef(bytes.fromhex(ETHEREUM)), CitizenRef(bytes.fromhex(BASE))),
        organisms=(CitizenRef(bytes.fromhex(ORACLE), role="oracle"),),
        confluences=(ConfluenceRef("acme.intents", bytes.fromhex(INTENTS)),),
        modules=MODULES,
        ticket_issuer=ticket_issuer,
    )


def test_spec_input_ids() -> None:
    assert make_id("lattice|ethereum.mainnet").hex() == ETHEREUM
    assert make_id("lattice|base.mainnet").hex() == BASE
    assert make_id("instance|acme.oracle").hex() == ORACLE
    assert make_id("confluence|acme.intents").hex() == INTENTS
    assert make_id("issuer|acme.tickets").hex() == ISSUER


def test_golden_table_without_ticket_issuer() -> None:
    assert encode(["coalition", 1, "acme.coalition"]).hex() == GOLDEN["encoding"]
    assert coalition_id("acme.coalition").hex() == GOLDEN["coalition"]
    c = _acme()
    assert c.root.hex() == GOLDEN["coalition_root"]
    for name in MODULES:
        assert module_id(c.root, name).hex() == GOLDEN[name]
    assert c.ticket_issuer_root is None


def test_golden_table_with_ticket_issuer() -> None:
    c = _acme(bytes.fromhex(ISSUER))
    assert c.id.hex() == GOLDEN["coalition"]
    assert c.root.hex() == GOLDEN_WITH_ISSUER["coalition_root"]
    assert ticket_issuer_root(c.root).hex() == GOLDEN_WITH_ISSUER["ticket_issuer_root"]
    assert c.fingerprint_json()["ticket_issuer_root"] == GOLDEN_WITH_ISSUER["ticket_issuer_root"]


def test_root_preimage_agrees_with_an_independent_encoder() -> None:
    # Only text keys / no maps here, so cbor2's canonical mode must produce the same bytes.
    preimage = cbor2.dumps(
        ["coalition-root", 1, bytes.fromhex(GOLDEN["coalition"]),
         [bytes.fromhex(ETHEREUM), bytes.fromhex(BASE)], [bytes.fromhex(ORACLE)],
         [bytes.fromhex(INTENTS)], None],
        canonical=True,
    )
    assert blake3.blake3(preimage).hexdigest() == GOLDEN["coalition_root"]


def test_example_file_prints_the_golden_values() -> None:
    out = load_coalition(EXAMPLE).fingerprint_json()
    assert out == {
        "coalition": GOLDEN["coalition"],
        "coalition_root": GOLDEN["coalition_root"],
        "modules": {m: GOLDEN[m] for m in MODULES},
        "ticket_issuer_root": None,
        "confluences": [INTENTS],
    }
    json.dumps(out)  # plain JSON types only


def test_example_file_with_issuer_gives_second_table(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace("# ticket_issuer =", "ticket_issuer =")
    f = tmp_path / "c.toml"
    f.write_text(text)
    out = load_coalition(f).fingerprint_json()
    assert out["coalition_root"] == GOLDEN_WITH_ISSUER["coalition_root"]
    assert out["ticket_issuer_root"] == GOLDEN_WITH_ISSUER["ticket_issuer_root"]


# Our own choices, pinned (docs/decisions.md): the confluence fingerprint encoding and the
# content-pinned citizen reference.
CONFLUENCE_PREIMAGE = (
    "866a636f6e666c75656e6365016c61636d652e696e74656e747382582087d4e11436c7eedfc615636267e6"
    "76f84cddb496455eaf69317e0222c657312058200123df8bce13d42995549049d0fb4ed358c789f6dad913"
    "0d90b3219ea6afd20ca26a706172616d6574657273a16c6661696c7572655f6d6f6465657374616c6c6d73"
    "746174655f6d616368696e656a696e74656e74732f7631a267636c69656e7473806e7469636b65745f6973"
    "737565727380"
)
CONFLUENCE_FP = "905fde679568901a344e8756fab8d8c56d403532626602c49b4ef5f0ee1293f7"
PINNED_ROOT = "fb26fe6dbdc40223306e832c3e1cf125bfad5ec6fd23890783e0dd406e0ec8de"


def test_confluence_fingerprint_golden_vector() -> None:
    spans = [CitizenRef(bytes.fromhex(ETHEREUM)), CitizenRef(bytes.fromhex(BASE))]
    content = {"state_machine": "intents/v1", "parameters": {"failure_mode": "stall"}}
    acl: dict[str, list[bytes]] = {"clients": [], "ticket_issuers": []}
    preimage = encode(["confluence", 1, "acme.intents", [s.preimage() for s in spans],
                       content, acl])
    assert preimage.hex() == CONFLUENCE_PREIMAGE
    fp = confluence_fingerprint("acme.intents", spans, content, acl)
    assert fp.hex() == CONFLUENCE_FP
    # No coalition is folded: the same confluence has the same fingerprint everywhere.
    assert confluence_fingerprint("acme.intents", spans, dict(content), dict(acl)) == fp
    # Order of spanned citizens is part of it.
    assert confluence_fingerprint("acme.intents", spans[::-1], content, acl) != fp


def test_content_pinned_citizen_golden_vector() -> None:
    pinned = CitizenRef(bytes.fromhex(ETHEREUM), content_hash=make_id("content|ethereum.mainnet|v1"))
    assert pinned.preimage() == [bytes.fromhex(ETHEREUM), make_id("content|ethereum.mainnet|v1")]
    root = coalition_root(
        coalition_id("acme.coalition"),
        [pinned, CitizenRef(bytes.fromhex(BASE))],
        [CitizenRef(bytes.fromhex(ORACLE))],
        [bytes.fromhex(INTENTS)],
        None,
    )
    assert root.hex() == PINNED_ROOT
    assert root.hex() != GOLDEN["coalition_root"]


def test_order_matters_labels_do_not() -> None:
    c = _acme()
    swapped = Coalition(name=c.name, lattices=c.lattices[::-1], organisms=c.organisms,
                        confluences=c.confluences, modules=MODULES)
    assert swapped.root != c.root
    relabelled = Coalition(
        name=c.name, lattices=tuple(CitizenRef(x.stable_id, role="chain") for x in c.lattices),
        organisms=(CitizenRef(bytes.fromhex(ORACLE), role="price-oracle"),),
        confluences=(ConfluenceRef("another-label", bytes.fromhex(INTENTS)),), modules=MODULES,
    )
    assert relabelled.root == c.root


def test_moving_a_citizen_between_lists_changes_the_root() -> None:
    # The lists are separate CBOR arrays: a lattice is never confused with an organism.
    c = _acme()
    moved = Coalition(name=c.name, lattices=c.lattices[:1], organisms=(c.lattices[1], *c.organisms),
                      confluences=c.confluences, modules=MODULES)
    assert moved.root != c.root


def test_only_shipped_modules_are_printed() -> None:
    c = Coalition(name="acme.coalition", modules=("atlas",),
                  not_shipped=("almanac", "chronicle", "compute"))
    assert list(c.fingerprint_json()["modules"]) == ["atlas"]
    assert c.fingerprint_json()["confluences"] == []


def test_refusals() -> None:
    with pytest.raises(LocalError, match="citizen stable id must be 32 bytes, got 31"):
        CitizenRef(b"\x00" * 31)
    with pytest.raises(LocalError, match="citizen content hash must be 32 bytes, got 0"):
        CitizenRef(b"\x00" * 32, content_hash=b"")
    with pytest.raises(LocalError, match="unknown module 'randomness'"):
        Coalition(name="x", modules=("randomness",))
    with pytest.raises(LocalError, match="ticket issuer fingerprint must be 32 bytes"):
        Coalition(name="x", ticket_issuer=b"\x01")
    with pytest.raises(LocalError, match="confluence fingerprint must be 32 bytes"):
        ConfluenceRef("x", b"\x01" * 33)
