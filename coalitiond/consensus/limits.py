"""The consensus core's limits (docs/protocol.md §10): every table it keeps is bounded by one.

The wire-level limits (block size, commands and evidence per block, message size) stay next to
the types they bound, in `types.py` and `messages.py`; the batcher's queue limits stay in
`batcher.py`. These are the core's own: how far views may be apart, and what it remembers.
"""

from __future__ import annotations

from typing import Final

#: Votes and proposals further ahead than this are refused (certificates may jump any
#: distance: they carry q signatures, so they cannot be minted to flood us).
MAX_VIEWS_AHEAD: Final = 64
#: Votes older than `view − MAX_VIEWS_BEHIND` are dropped and their tables pruned.
MAX_VIEWS_BEHIND: Final = 64
#: Evidence waiting to be put into a block.
MAX_PENDING_EVIDENCE: Final = 256
#: Evidence ids remembered as already finalised (no re-inclusion).
KNOWN_EVIDENCE_WINDOW: Final = 4096
#: Heights asked for in one FetchBlocks action.
MAX_FETCH_BLOCKS: Final = 256
#: Executed state roots and claimed roots remembered, by height.
MAX_ROOTS_KEPT: Final = 1024
#: Amnesia rule margin (docs/protocol.md §8).
AMNESIA_MARGIN_VIEWS: Final = 1
#: Certificates sent in answer to one SyncRequest (parent + intervening nullifications).
MAX_SYNC_CERTS: Final = MAX_VIEWS_BEHIND
#: Room kept in a block for the header and evidence when batching commands.
BLOCK_OVERHEAD_RESERVE: Final = 512 * 1024
#: Dead-leader skip (docs/protocol.md §3.10): a leader whose last this-many led views were
#: nullified, with nothing signed by it seen since the earliest of them, is nullified at once.
SKIP_AFTER_SILENT_LEADS: Final = 1
