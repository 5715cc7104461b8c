"""Every component's state reads, with arguments a reader can send (`/v1/state/<query>`):
a refusal is the component's QueryError (400) or QueryNotFound (404), and an answer encodes
as deterministic CBOR. Anything else would be the read API's 500. Hypothesis draws the
arguments (plain `name=value` pairs parse to integers within ±2^64, byte strings and text;
`args=` carries any CBOR value); its failure output replays the example."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coalitiond.cli.devnet import generate_devnet
from coalitiond.commands.envelope import Acl
from coalitiond.components.base import QueryError, QueryNotFound, known_kinds
from coalitiond.components.executor import Executor
from coalitiond.config import load_config
from coalitiond.node.member import build_component
from coalitiond.primitives.encoding import encode

#: Argument names the components read, and a few they do not.
ARG_NAMES = ("index", "limit", "seq", "upto_seq", "client", "citizen_id", "ticket_id",
             "provider_id", "request_id", "id", "key", "from", "count", "x")

values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(1 << 64), (1 << 64) - 1),
              st.sampled_from((0, 1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, -1)),
              st.binary(max_size=40), st.sampled_from((b"\x00" * 32, b"\xff" * 32)),
              st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)
#: Mostly one or two of the names the components read, sometimes others besides.
arguments = st.tuples(
    st.dictionaries(st.sampled_from(ARG_NAMES), values, min_size=1, max_size=2),
    st.dictionaries(st.text(max_size=8), values, max_size=2),
    st.booleans(),
).map(lambda t: {**t[0], **t[1]} if t[2] else t[0])


def _executor(tmp: Path, kind: str) -> Executor:
    config = load_config(generate_devnet(3, kind, tmp / kind, 7400)[0], check_key=False)
    component = build_component(config)
    spec = config.committee_spec()
    component.bind(spec)
    return Executor(spec.committee_id, Acl.allow(config.committee.acl.clients,
                                                 config.committee.acl.ticket_issuers),
                    component, follow_almanac=getattr(config.component, "follow_almanac", None))


def _queries(ex: Executor) -> list[str]:
    with pytest.raises(QueryError) as unknown:
        ex.query("no-such-query", {})
    known = re.search(r"known: ([a-z_, ]+)", str(unknown.value))
    assert known, str(unknown.value)
    return [q.strip() for q in known.group(1).split(",")] + ["client_nonce", "stamp"]


@pytest.mark.parametrize("kind", sorted(known_kinds()))
def test_no_state_read_arguments_escape_the_components_refusals(tmp_path: Path,
                                                                kind: str) -> None:
    ex = _executor(tmp_path, kind)
    queries = _queries(ex)

    @settings(max_examples=100, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(name=st.sampled_from(queries), args=arguments)
    def refused_or_answered(name: str, args: dict[str, Any]) -> None:
        try:
            result = ex.query(name, args)
        except (QueryError, QueryNotFound):
            return
        encode(result)

    refused_or_answered()
