"""RFC 6962 tree math against the transparency-dev vectors and hypothesis properties."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from immutrail.ledger import merkle
from immutrail.ledger.merkle import Frontier, NodeKey, ProofError

VECTORS = Path(__file__).parent.parent / "data" / "merkle" / "transparency-dev-merkle"

# The standard 8-leaf RFC 6962 test tree of transparency-dev/merkle and Certificate Transparency.
RFC6962_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]


class MemoryTree:
    """An in-memory store of perfect subtrees, filled the way the ledger fills its storage."""

    def __init__(self, leaves: Sequence[bytes] = ()):
        self.nodes: dict[NodeKey, bytes] = {}
        self.frontier = Frontier.empty()
        for leaf in leaves:
            self.add(leaf)

    def add(self, entry: bytes) -> None:
        h = merkle.leaf_hash(entry)
        self.nodes[(0, self.frontier.size)] = h
        for level, index, node in self.frontier.append(h):
            self.nodes[(level, index)] = node

    def fetch(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        return {k: self.nodes[k] for k in keys if k in self.nodes}


def reference_mth(leaves: Sequence[bytes]) -> bytes:
    """MTH straight from RFC 6962 section 2.1, recursively: the oracle for the fast paths."""
    if not leaves:
        return merkle.EMPTY_ROOT
    if len(leaves) == 1:
        return merkle.leaf_hash(leaves[0])
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return merkle.node_hash(reference_mth(leaves[:k]), reference_mth(leaves[k:]))


def d(text: str) -> bytes:
    return base64.b64decode(text)


def load(kind: str) -> list[tuple[str, dict[str, object]]]:
    return [(p.name, json.loads(p.read_text())) for p in sorted((VECTORS / kind).glob("*.json"))]


@pytest.mark.parametrize(("name", "vector"), load("inclusion"))
def test_inclusion_vectors(name: str, vector: dict) -> None:
    proof = [d(h) for h in vector["proof"] or []]
    args = (vector["leafIdx"], vector["treeSize"], d(vector["leafHash"]), proof, d(vector["root"]))
    if vector["wantErr"]:
        with pytest.raises(ProofError):
            merkle.verify_inclusion(*args)
        return
    merkle.verify_inclusion(*args)
    tree = MemoryTree(RFC6962_LEAVES[: vector["treeSize"]])
    assert merkle.inclusion_proof(vector["leafIdx"], vector["treeSize"], tree.fetch) == proof


@pytest.mark.parametrize(("name", "vector"), load("consistency"))
def test_consistency_vectors(name: str, vector: dict) -> None:
    proof = [d(h) for h in vector["proof"] or []]
    args = (vector["size1"], vector["size2"], d(vector["root1"]), d(vector["root2"]), proof)
    if vector["wantErr"]:
        with pytest.raises(ProofError):
            merkle.verify_consistency(*args)
        return
    merkle.verify_consistency(*args)
    tree = MemoryTree(RFC6962_LEAVES[: vector["size2"]])
    assert merkle.consistency_proof(vector["size1"], vector["size2"], tree.fetch) == proof


def test_roots_of_the_rfc6962_tree() -> None:
    tree = MemoryTree(RFC6962_LEAVES)
    expected_root8 = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    assert merkle.root(8, tree.fetch).hex() == expected_root8
    assert tree.frontier.root().hex() == expected_root8
    assert merkle.root(0, tree.fetch) == bytes.fromhex(
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    for size in range(9):
        assert merkle.root(size, tree.fetch) == reference_mth(RFC6962_LEAVES[:size])


def test_storage_holds_one_node_per_completed_subtree() -> None:
    tree = MemoryTree([i.to_bytes(2, "big") for i in range(1000)])
    internal = [k for k in tree.nodes if k[0] > 0]
    assert len(internal) == 1000 - bin(1000).count("1")


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 300), data=st.data())
def test_inclusion_proofs_verify_for_all_sizes_and_indices(size: int, data: st.DataObject) -> None:
    leaves = [i.to_bytes(4, "big") for i in range(size)]
    tree = MemoryTree(leaves)
    root = merkle.root(size, tree.fetch)
    assert root == reference_mth(leaves)
    index = data.draw(st.integers(0, size - 1))
    proof = merkle.inclusion_proof(index, size, tree.fetch)
    merkle.verify_inclusion(index, size, merkle.leaf_hash(leaves[index]), proof, root)


@settings(max_examples=200, deadline=None)
@given(new=st.integers(1, 300), data=st.data())
def test_consistency_proofs_verify_for_all_size_pairs(new: int, data: st.DataObject) -> None:
    old = data.draw(st.integers(0, new))
    tree = MemoryTree([i.to_bytes(4, "big") for i in range(new)])
    proof = merkle.consistency_proof(old, new, tree.fetch)
    merkle.verify_consistency(
        old, new, merkle.root(old, tree.fetch), merkle.root(new, tree.fetch), proof
    )


@settings(max_examples=200, deadline=None)
@given(size=st.integers(2, 200), data=st.data())
def test_a_changed_inclusion_proof_fails(size: int, data: st.DataObject) -> None:
    tree = MemoryTree([i.to_bytes(4, "big") for i in range(size)])
    index = data.draw(st.integers(0, size - 1))
    proof = merkle.inclusion_proof(index, size, tree.fetch)
    root = merkle.root(size, tree.fetch)
    leaf = tree.nodes[(0, index)]
    which = data.draw(st.integers(0, len(proof) - 1))
    bit = data.draw(st.integers(0, 255))
    changed = list(proof)
    flipped = bytearray(changed[which])
    flipped[bit // 8] ^= 1 << (bit % 8)
    changed[which] = bytes(flipped)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(index, size, leaf, changed, root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(index, size, leaf, proof[:-1], root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(index, size, leaf, [*proof, proof[0]], root)
    other = data.draw(st.integers(0, size - 1).filter(lambda i: i != index))
    with pytest.raises(ProofError):
        merkle.verify_inclusion(other, size, leaf, proof, root)


@settings(max_examples=200, deadline=None)
@given(new=st.integers(3, 200), data=st.data())
def test_a_changed_consistency_proof_fails(new: int, data: st.DataObject) -> None:
    old = data.draw(st.integers(1, new - 1))
    tree = MemoryTree([i.to_bytes(4, "big") for i in range(new)])
    proof = merkle.consistency_proof(old, new, tree.fetch)
    old_root, new_root = merkle.root(old, tree.fetch), merkle.root(new, tree.fetch)
    which = data.draw(st.integers(0, len(proof) - 1))
    changed = list(proof)
    changed[which] = bytes([changed[which][0] ^ 0x80]) + changed[which][1:]
    with pytest.raises(ProofError):
        merkle.verify_consistency(old, new, old_root, new_root, changed)
    with pytest.raises(ProofError):
        merkle.verify_consistency(old, new, new_root, old_root, proof)
    forked = MemoryTree([i.to_bytes(4, "big") for i in range(old - 1)] + [b"forged"])
    with pytest.raises(ProofError):
        merkle.verify_consistency(old, new, merkle.root(old, forked.fetch), new_root, proof)


def test_out_of_range_requests_are_refused() -> None:
    tree = MemoryTree(RFC6962_LEAVES)
    with pytest.raises(ProofError):
        merkle.inclusion_proof(8, 8, tree.fetch)
    with pytest.raises(ProofError):
        merkle.consistency_proof(5, 4, tree.fetch)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(0, 8, b"short", [], merkle.root(8, tree.fetch))
    with pytest.raises(LookupError):
        merkle.root(9, tree.fetch)


def test_frontier_round_trips_and_rejects_wrong_lengths() -> None:
    tree = MemoryTree(RFC6962_LEAVES[:7])
    packed = tree.frontier.to_bytes()
    assert len(packed) == 3 * 32
    again = Frontier.from_bytes(7, packed)
    assert again.root() == tree.frontier.root()
    with pytest.raises(ValueError, match="3 hashes"):
        Frontier.from_bytes(7, packed[:-1])
