"""RFC 6962 Merkle tree: published vectors, a naive reference (Hypothesis), rejections."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coalitiond.primitives import merkle
from coalitiond.primitives.errors import LocalError
from coalitiond.verify import (
    consistency_proof,
    inclusion_proof,
    merkle_root,
    verify_consistency,
    verify_inclusion,
)

# Certificate Transparency's reference test data (RFC 6962 §2.1 trees over these leaves).
CT_LEAVES = [bytes.fromhex(x) for x in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f")]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]


# --- naive reference, written straight from RFC 6962 §2.1 (recursive, no sharing) -------

def _h(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    if not d:
        return _h(b"")
    if len(d) == 1:
        return _h(b"\x00" + d[0])
    k = _k(len(d))
    return _h(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_proof(m: int, d: list[bytes]) -> list[bytes]:
    return ref_subproof(m, d, True) if 0 < m < len(d) else []


# Distinct leaves: with repeated leaves, a proof can be genuinely valid for another index or
# size (equal subtrees hash equal), which would make the negative checks below meaningless.
leaves_st = st.lists(st.binary(max_size=8), min_size=1, max_size=70, unique=True)


def test_roots_match_the_published_vectors() -> None:
    for n in range(9):
        assert merkle_root(CT_LEAVES[:n]).hex() == CT_ROOTS[n]


def test_inclusion_proofs_match_the_published_vectors() -> None:
    for index, size, proof in CT_INCLUSION:
        got = inclusion_proof(CT_LEAVES[:size], index)
        assert [p.hex() for p in got] == proof
        assert verify_inclusion(CT_LEAVES[index], index, size, got, bytes.fromhex(CT_ROOTS[size]))


def test_consistency_proofs_match_the_published_vectors() -> None:
    # CT's consistency vectors 1→8 and 6→8.
    assert [p.hex()[:8] for p in consistency_proof(CT_LEAVES, 1)] == [
        "96a296d2", "5f083f0a", "6b47aaf2"]
    assert [p.hex()[:8] for p in consistency_proof(CT_LEAVES, 6)] == [
        "0ebc5d34", "ca854ea1", "d37ee418"]


@settings(max_examples=150, deadline=None, derandomize=True)
@given(leaves_st, st.data())
def test_inclusion_matches_the_reference(leaves: list[bytes], data: st.DataObject) -> None:
    n = len(leaves)
    i = data.draw(st.integers(0, n - 1))
    root = merkle_root(leaves)
    assert root == ref_mth(leaves)
    proof = inclusion_proof(leaves, i)
    assert proof == ref_path(i, leaves)
    assert verify_inclusion(leaves[i], i, n, proof, root)
    # Wrong leaf, index or root, or a flipped proof hash: refused. (Not a wrong size: proofs
    # for sizes n and n+1 can share their shape; the signed checkpoint binds the size.)
    assert not verify_inclusion(leaves[i] + b"x", i, n, proof, root)
    if n > 1:
        assert not verify_inclusion(leaves[i], (i + 1) % n, n, proof, root)
        j = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[j] = bytes([bad[j][0] ^ 1]) + bad[j][1:]
        assert not verify_inclusion(leaves[i], i, n, bad, root)
    assert not verify_inclusion(leaves[i], i, n, [*proof, b"\x00" * 32], root)
    assert not verify_inclusion(leaves[i], i, n, proof, bytes(32))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(leaves_st, st.data())
def test_consistency_matches_the_reference(leaves: list[bytes], data: st.DataObject) -> None:
    n = len(leaves)
    m = data.draw(st.integers(0, n))
    old, new = merkle_root(leaves[:m]), merkle_root(leaves)
    proof = consistency_proof(leaves, m)
    assert proof == ref_proof(m, leaves)
    assert verify_consistency(m, n, old, new, proof)
    if 0 < m < n:
        assert not verify_consistency(m, n, new, new, proof)
        assert not verify_consistency(m, n, old, bytes(32), proof)
        j = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[j] = bytes([bad[j][0] ^ 1]) + bad[j][1:]
        assert not verify_consistency(m, n, old, new, bad)
        assert not verify_consistency(m, n, old, new, proof[:-1])


@settings(max_examples=50, deadline=None, derandomize=True)
@given(leaves_st)
def test_frontier_and_memory_tree_agree_with_the_reference(leaves: list[bytes]) -> None:
    frontier = merkle.Frontier()
    stored: dict[tuple[int, int], bytes] = {}
    for i, leaf in enumerate(leaves):
        for level, idx, h in frontier.append(merkle.leaf_hash(leaf)):
            stored[(level, idx)] = h
        assert frontier.root() == ref_mth(leaves[: i + 1])
    tree = merkle.MemoryTree([merkle.leaf_hash(x) for x in leaves])
    # The frontier reported exactly the perfect subtrees the in-memory tree holds.
    assert stored == {(lv, i): h for lv, row in enumerate(tree.levels) for i, h in enumerate(row)}
    reloaded = merkle.Frontier.load(tree, len(leaves))
    assert reloaded.root() == frontier.root() and reloaded.stack == frontier.stack


def test_empty_and_degenerate_cases() -> None:
    assert merkle_root([]) == merkle.EMPTY_ROOT
    assert verify_consistency(0, 5, merkle.EMPTY_ROOT, merkle_root(CT_LEAVES[:5]), [])
    assert not verify_consistency(0, 5, bytes(32), merkle_root(CT_LEAVES[:5]), [])
    assert verify_consistency(3, 3, b"r" * 32, b"r" * 32, [])
    assert not verify_consistency(3, 3, b"r" * 32, b"s" * 32, [])
    assert not verify_consistency(4, 3, b"r" * 32, b"r" * 32, [])
    assert not verify_inclusion(b"", 0, 0, [], merkle.EMPTY_ROOT)
    assert not verify_inclusion(b"", 0, 2, [b"short"], merkle_root([b"", b""]))
    assert not verify_inclusion(b"", 0, 2, [b"\x00" * 32] * (merkle.MAX_PROOF_LEN + 1),
                                merkle_root([b"", b""]))


def test_bad_requests_are_refused_with_a_clear_message() -> None:
    with pytest.raises(LocalError, match=r"^inclusion_proof: index 3 outside 0\.\.2$"):
        inclusion_proof([b"a", b"b", b"c"], 3)
    with pytest.raises(LocalError, match=r"^consistency_proof: old size 4 outside 0\.\.3$"):
        consistency_proof([b"a", b"b", b"c"], 4)
