"""Which worker holds a keyed step's state, and state keys that spread evenly over the workers.

Bytewax 0.21.1 sends the state of a key to worker ``hash(key) % workers``,
``hash`` being Rust's default hasher (SipHash-1-3 with zero keys) over the
key's UTF-8 bytes and a 0xFF terminator (``StatefulBatchOp`` in its
``src/operators.rs``; ``tests/stream/test_placement.py`` checks it against
Bytewax itself). Keys named ``"0"``..``"15"`` put 10 customer shards on one
of two workers and 6 on the other, and ``"0"``..``"3"`` all on the same one:
one process did most of the work while the other waited.

``balanced_key(i)`` is the first of ``"i"``, ``"i~1"``, ``"i~2"``, ... that
Bytewax sends to worker ``i % w`` for every worker count ``w`` dividing
``SPREAD`` (840: every count up to 8, and 10, 12, 14, 15, 20, ...): n shards
lie over w workers as evenly as n allows, whatever w a run or its resume has,
and the names never change (a recovery store keeps state by name).

``Placement`` is how a run names its keys: stores made before these names
keep the plain ones (``stream.recovery`` tells them apart by the keys they hold).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

SPREAD = 840  # lcm(1..8)
_INIT = (0x736F6D6570736575, 0x646F72616E646F6D, 0x6C7967656E657261, 0x7465646279746573)


def _rotl(x: np.ndarray, b: int) -> np.ndarray:
    return (x << np.uint64(b)) | (x >> np.uint64(64 - b))


def _rounds(v: list[np.ndarray], n: int) -> None:
    """``n`` SipRounds on v0..v3, uint64 arrays (their sums wrap at 64 bits)."""
    v0, v1, v2, v3 = v
    for _ in range(n):
        v0 = v0 + v1
        v1 = _rotl(v1, 13) ^ v0
        v0 = _rotl(v0, 32)
        v2 = v2 + v3
        v3 = _rotl(v3, 16) ^ v2
        v0 = v0 + v3
        v3 = _rotl(v3, 21) ^ v0
        v2 = v2 + v1
        v1 = _rotl(v1, 17) ^ v2
        v2 = _rotl(v2, 32)
    v[:] = [v0, v1, v2, v3]


def _siphash13(msgs: np.ndarray) -> np.ndarray:
    """SipHash-1-3 (zero keys) of each row of ``msgs``, a (n, length) uint8 array: uint64 per row."""
    n, length = msgs.shape
    padded = np.zeros((n, (length // 8 + 1) * 8), dtype=np.uint8)
    padded[:, :length] = msgs
    padded[:, -1] = length & 0xFF
    words = padded.view("<u8")
    with np.errstate(over="ignore"):
        v = [np.full(n, x, dtype=np.uint64) for x in _INIT]
        for k in range(words.shape[1]):
            m = words[:, k].astype(np.uint64)
            v[3] = v[3] ^ m
            _rounds(v, 1)
            v[0] = v[0] ^ m
        v[2] = v[2] ^ np.uint64(0xFF)
        _rounds(v, 3)
        return v[0] ^ v[1] ^ v[2] ^ v[3]


def key_hash(key: str) -> int:
    """The hash Bytewax routes ``key``'s state by (Rust's ``Hash`` of a ``str``: its bytes, then 0xFF)."""
    raw = np.frombuffer(key.encode() + b"\xff", dtype=np.uint8)[None, :]
    return int(_siphash13(raw)[0])


def worker_of(key: str, workers: int) -> int:
    """The worker (0 .. workers - 1) that holds ``key``'s state in a keyed Bytewax step."""
    return key_hash(key) % workers


@functools.cache
def balanced_key(i: int) -> str:
    """The state key of slot ``i``: on worker ``i % w`` for every worker count ``w`` dividing ``SPREAD``."""
    want = i % SPREAD
    if key_hash(str(i)) % SPREAD == want:
        return str(i)
    lo = 1
    while True:  # suffixes of one length at a time, hashed together: ~SPREAD candidates on average
        hi = lo * 10
        names = [f"{i}~{j}" for j in range(lo, hi)]
        raw = np.frombuffer("".join(names).encode(), dtype=np.uint8).reshape(len(names), -1)
        msgs = np.concatenate([raw, np.full((len(names), 1), 0xFF, dtype=np.uint8)], axis=1)
        hit = np.flatnonzero(_siphash13(msgs) % np.uint64(SPREAD) == want)
        if hit.size:
            return names[int(hit[0])]
        lo = hi


def is_balanced_key(key: str) -> bool:
    """Whether ``key`` is ``balanced_key`` of some slot (the names recovery stores of earlier versions hold are not)."""
    head = key.split("~", 1)[0]
    return head.isdigit() and balanced_key(int(head)) == key


@dataclass(frozen=True)
class Placement:
    """How a run names the state keys of its keyed steps, and which worker of how many this process is.

    ``balanced``: shard and partition slots get ``balanced_key`` names, and a
    Kafka source reads on each worker the partitions whose state that worker
    holds (no event crosses between processes before it is routed to its
    shard). False: the names of recovery stores made before (``str(i)`` and
    the partition's name), read wherever Bytewax assigns a partition.
    """

    balanced: bool = True
    worker: int = 0  # this process's worker (one worker per process)
    workers: int = 1

    def shard_key(self, shard: int) -> str:
        """The state key of customer or trend shard ``shard``."""
        return balanced_key(shard) if self.balanced else str(shard)

    def partition_key(self, part: str, index: int | None) -> str:
        """The partition steps' state key of ``part``, its source's ``index``-th partition (None: not known)."""
        return balanced_key(index) if self.balanced and index is not None else part

    def shards_held(self, n_shards: int) -> int:
        """How many of ``n_shards`` customer shards this worker holds."""
        return sum(worker_of(self.shard_key(s), self.workers) == self.worker for s in range(n_shards))

    def reads(self, index: int) -> bool:
        """Whether this worker should read its source's ``index``-th partition: the one that holds its state.

        With plain names every worker lists every partition, and Bytewax assigns them.
        """
        return not self.balanced or worker_of(balanced_key(index), self.workers) == self.worker
