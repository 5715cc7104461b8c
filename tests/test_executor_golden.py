"""Golden vectors for the executor's state root, the feed entry encoding and the feed root.

Each is also recomputed from its definition in docs/components.md, so the page and the code
cannot drift apart. Change the hex only together with a schema/signature version bump.
"""

from __future__ import annotations

from test_commands_envelope import ACL, COMMITTEE, GOLDEN_ID, KEY, golden

from coalitiond.commands.dedup import NONCE_WINDOW
from coalitiond.components.executor import Executor
from coalitiond.components.feed.component import Feed
from coalitiond.primitives.encoding import encode
from coalitiond.primitives.identity import hash_structure
from coalitiond.verify import merkle_root

EMPTY_ROOT = "81528b8c093c97206f0351e022ab79ca97703a804a81837a87e290a42a217361"
ROOT_AFTER_GOLDEN = "b7ee7c3e92aceb72d2b1fc6f6cae055810a9d55429d010875bd1f9858a3513bc"
FEED_ROOT_AFTER_GOLDEN = "3194cf794454092bd3dee7a306d9c4ad67242781575ad9d5537c8f084042d7de"
GOLDEN_ENTRY = (
    "896a666565642d656e74727901000158202c449943867703745aab7218e63b512d88882af73d11c71993074723"
    "d71d2f7c00582003a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b86570726963"
    "65a26470616972676574682d7573646576616c75651904d2"
)


def test_state_roots_and_entry() -> None:
    executor = Executor(COMMITTEE, ACL, Feed([KEY.public]))
    assert executor.state_root().hex() == EMPTY_ROOT
    assert hash_structure(
        "executor-state", 1, "feed/1", merkle_root([]),
        hash_structure("feed-state", 1, 0, merkle_root([]))).hex() == EMPTY_ROOT

    result = executor.apply_block(1, b"\x0b" * 32, [golden().raw])
    entry = bytes.fromhex(GOLDEN_ENTRY)
    assert [e.data for e in result.entries] == [entry]
    assert entry == encode(["feed-entry", 1, 0, 1, bytes.fromhex(GOLDEN_ID), 0, KEY.public,
                            "price", {"pair": "eth-usd", "value": 1234}])

    feed_root = hash_structure("feed-state", 1, 1, merkle_root([entry]))
    assert executor.component.state_root() == feed_root
    assert feed_root.hex() == FEED_ROOT_AFTER_GOLDEN

    bitmap = (1).to_bytes(NONCE_WINDOW // 8, "big")  # nonce 7 = highest, bit 0
    dedup_root = merkle_root([encode(["nonces", KEY.public, 7, bitmap])])
    root = hash_structure("executor-state", 1, "feed/1", dedup_root, feed_root)
    assert result.state_root == root
    assert root.hex() == ROOT_AFTER_GOLDEN
