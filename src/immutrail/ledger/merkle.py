"""RFC 6962 / RFC 9162 Merkle tree math: hashing, proof generation and proof verification.

Written by hand because it is the core of what we sell: a few dozen lines whose every branch the
tests (RFC vectors from transparency-dev and hypothesis properties) pin down.

The tree is stored as its *perfect subtrees*: the node ``(level, index)`` is the hash of the leaves
``[index << level, (index + 1) << level)``. Such a node never changes once its last leaf exists,
so storage only ever appends. Every proof hash is either one stored node or the hash of a
right-edge range, which folds at most ``log2(n)`` stored nodes; nothing recomputes the tree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"

NodeKey = tuple[int, int]
"""A perfect subtree: ``(level, index)``; level 0 are the leaves."""

NodeFetcher = Callable[[Sequence[NodeKey]], Mapping[NodeKey, bytes]]
"""Returns the stored hashes for the given perfect subtrees (one round trip per call)."""

EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(ValueError):
    """A proof was asked for sizes or indices that do not exist, or it does not verify."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def split_hashes(joined: bytes) -> list[bytes]:
    """Joined hashes, one by one."""
    return [joined[i : i + HASH_SIZE] for i in range(0, len(joined), HASH_SIZE)]


def _split(size: int) -> int:
    """The largest power of two strictly below ``size`` (RFC 6962's k), for size >= 2."""
    return 1 << ((size - 1).bit_length() - 1)


def perfect_subtrees(start: int, end: int) -> list[NodeKey]:
    """Decompose the leaf range ``[start, end)`` into aligned perfect subtrees, left to right.

    For the ranges RFC 6962 hashes (``start`` aligned to the power of two above the range's
    width) folding these right to left gives exactly MTH(D[start:end]).
    """
    keys: list[NodeKey] = []
    pos = start
    while pos < end:
        level = (pos & -pos).bit_length() - 1 if pos else (end - pos).bit_length() - 1
        while (1 << level) > end - pos:
            level -= 1
        keys.append((level, pos >> level))
        pos += 1 << level
    return keys


def fold(hashes: Sequence[bytes]) -> bytes:
    """Fold perfect-subtree hashes, listed left to right, into the hash of their union."""
    acc = hashes[-1]
    for left in reversed(hashes[:-1]):
        acc = node_hash(left, acc)
    return acc


def range_hashes(ranges: Sequence[tuple[int, int]], fetch: NodeFetcher) -> list[bytes]:
    """MTH of each leaf range, with one call of ``fetch`` for all of them."""
    plans = [perfect_subtrees(a, b) for a, b in ranges]
    wanted = sorted({key for plan in plans for key in plan})
    got = fetch(wanted)
    missing = [key for key in wanted if key not in got]
    if missing:
        raise LookupError(f"tree nodes missing from storage: {missing[:5]}")
    return [fold([got[key] for key in plan]) for plan in plans]


def root(size: int, fetch: NodeFetcher) -> bytes:
    """MTH of the first ``size`` leaves, from stored perfect subtrees."""
    if size == 0:
        return EMPTY_ROOT
    return range_hashes([(0, size)], fetch)[0]


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes form PATH(index, D[size]), bottom-up (RFC 6962 2.1.1)."""
    if not 0 <= index < size:
        raise ProofError(f"index {index} is not in a tree of size {size}")
    path: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index - lo < k:
            path.append((lo + k, hi))
            hi = lo + k
        else:
            path.append((lo, lo + k))
            lo += k
    path.reverse()
    return path


def consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes form PROOF(old, D[new]), bottom-up (RFC 6962 2.1.2)."""
    if not 0 <= old_size <= new_size:
        raise ProofError(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size in (0, new_size):
        return []
    path: list[tuple[int, int]] = []
    lo, hi, whole = 0, new_size, True
    while True:
        if old_size - lo == hi - lo:
            if not whole:
                path.append((lo, hi))
            break
        k = _split(hi - lo)
        if old_size - lo <= k:
            path.append((lo + k, hi))
            hi = lo + k
        else:
            path.append((lo, lo + k))
            lo += k
            whole = False
    path.reverse()
    return path


def inclusion_proof(index: int, size: int, fetch: NodeFetcher) -> list[bytes]:
    return range_hashes(inclusion_ranges(index, size), fetch)


def consistency_proof(old_size: int, new_size: int, fetch: NodeFetcher) -> list[bytes]:
    return range_hashes(consistency_ranges(old_size, new_size), fetch)


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """RFC 9162 2.1.3.2: the root that ``proof`` implies for ``leaf`` at ``index``."""
    if not 0 <= index < size:
        raise ProofError(f"index {index} is not in a tree of size {size}")
    fn, sn = index, size - 1
    acc = leaf
    for sibling in proof:
        if sn == 0:
            raise ProofError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            acc = node_hash(sibling, acc)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            acc = node_hash(acc, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the tree is deep")
    return acc


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes
) -> None:
    """Raise ProofError unless ``proof`` puts ``leaf`` at ``index`` under ``expected_root``."""
    _check_hashes([leaf, expected_root, *proof])
    if root_from_inclusion_proof(index, size, leaf, proof) != expected_root:
        raise ProofError(f"inclusion proof for index {index} does not lead to the expected root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 2.1.4.2: raise ProofError unless the old tree is a prefix of the new one."""
    _check_hashes([old_root, new_root, *proof])
    if not 0 <= old_size <= new_size:
        raise ProofError(f"size {old_size} cannot precede size {new_size}")
    if old_size == new_size:
        if proof:
            raise ProofError("consistency proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofError(f"two different roots for the same size {old_size}")
        return
    if old_size == 0:
        if proof:
            raise ProofError("consistency proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofError("consistency proof is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is itself a proof node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for node in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than expected")
        if fn & 1 or fn == sn:
            fr = node_hash(node, fr)
            sr = node_hash(node, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, node)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is shorter than expected")
    if fr != old_root:
        raise ProofError(f"consistency proof does not lead to the old root (size {old_size})")
    if sr != new_root:
        raise ProofError(f"consistency proof does not lead to the new root (size {new_size})")


def _check_hashes(hashes: Iterable[bytes]) -> None:
    for h in hashes:
        if len(h) != HASH_SIZE:
            raise ProofError(f"a hash must be {HASH_SIZE} bytes, got {len(h)}")


@dataclass
class Frontier:
    """The right edge of a growing tree: one perfect-subtree hash per set bit of ``size``.

    Appending a leaf returns the perfect subtrees it completes, which is all a store must write.
    """

    size: int
    hashes: list[bytes]

    @classmethod
    def empty(cls) -> Frontier:
        return cls(0, [])

    @classmethod
    def from_bytes(cls, size: int, packed: bytes) -> Frontier:
        if len(packed) != HASH_SIZE * size.bit_count():
            raise ValueError(f"frontier of size {size} must hold {size.bit_count()} hashes")
        return cls(size, split_hashes(packed))

    def to_bytes(self) -> bytes:
        return b"".join(self.hashes)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf hash; return the completed internal nodes as ``(level, index, hash)``."""
        completed: list[tuple[int, int, bytes]] = []
        index, level, acc = self.size, 0, leaf
        while index & 1:
            acc = node_hash(self.hashes.pop(), acc)
            index >>= 1
            level += 1
            completed.append((level, index, acc))
        self.hashes.append(acc)
        self.size += 1
        return completed

    def extend(self, leaves: Iterable[bytes]) -> list[tuple[int, int, bytes]]:
        """:meth:`append` for many leaves; the completed nodes of all of them, in order.

        The same loop inlined: it runs once per appended entry, on the append path.
        """
        completed: list[tuple[int, int, bytes]] = []
        hashes, size, sha256, prefix = self.hashes, self.size, hashlib.sha256, NODE_PREFIX
        for leaf in leaves:
            index, level, acc = size, 0, leaf
            while index & 1:
                acc = sha256(prefix + hashes.pop() + acc).digest()
                index >>= 1
                level += 1
                completed.append((level, index, acc))
            hashes.append(acc)
            size += 1
        self.size = size
        return completed

    def root(self) -> bytes:
        return fold(self.hashes) if self.hashes else EMPTY_ROOT
