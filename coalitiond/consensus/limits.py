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
#: The start-up recall lasts one base view timeout, in this many rounds: each round
#: re-sends the request (links may still be coming up when the member starts), the last
#: one ends it (docs/protocol.md §8).
RECALL_ROUNDS: Final = 4
#: Statements in one recall answer (docs/protocol.md §8): the requester's newest of each of
#: the four signed kinds.
MAX_RECALL_STATEMENTS: Final = 4
#: Bytes of one encoded recall answer (envelope included): four statements of 108 bytes at
#: most plus the envelope is below 600; anything larger is refused before decoding further.
MAX_RECALL_ANSWER_SIZE: Final = 1024
#: Certificates sent in answer to one SyncRequest (parent + intervening nullifications).
MAX_SYNC_CERTS: Final = MAX_VIEWS_BEHIND
#: Views asked for in one `nullifications?` request, and certificates in one answer
#: (docs/protocol.md §9, fetching nullifications by view).
MAX_FETCH_VIEWS: Final = 256
#: Bytes of one `nullifications` answer (the whole wire message): the server stops adding
#: certificates before this, the receiver refuses a larger one before decoding it.
MAX_FETCH_ANSWER_BYTES: Final = 512 * 1024
#: `nullifications?` requests answered per member and per view of ours (a member pages
#: through a long run of nullified views a few pages per view; a Byzantine one cannot make
#: us send more than this many answers per view).
MAX_FETCH_ANSWERS_PER_VIEW: Final = 8
#: Room kept in a block for the header and evidence when batching commands: the header is
#: under 256 bytes, evidence at most MAX_EVIDENCE_PER_BLOCK × (MAX_EVIDENCE_SIZE + 3) bytes
#: (262 339); each command's own CBOR head is counted by the batcher (`batcher.wire_size`).
BLOCK_OVERHEAD_RESERVE: Final = 512 * 1024
#: The size rule (docs/protocol.md §10, `rules.check_block_size`): voters refuse a proposal
#: whose encoded block is above the committee's `max_block_bytes`, and leaders never build
#: one. `MAX_SERVABLE_BLOCK_BYTES` is the largest value a committee may configure: a block of
#: that size, served as a record with its certificates, votes and checkpoint (at most
#: `log.records.MAX_RECORD_OVERHEAD` more), fits one "blocks" reply (4 MiB − 64 KiB − 1:
#: catch-up, followers, `tail`) and one /v1/blocks page (4 MiB), and every consensus message
#: carrying it fits one transport message (4 MiB − 1); tests/test_block_size.py checks it.
MAX_SERVABLE_BLOCK_BYTES: Final = 3 * 1024 * 1024
DEFAULT_MAX_BLOCK_BYTES: Final = 2 * 1024 * 1024
#: The smallest `max_block_bytes`: the reserve above plus the largest single command.
MIN_MAX_BLOCK_BYTES: Final = 1024 * 1024
#: Dead-leader skip (docs/protocol.md §3.10): a leader whose last this-many led views were
#: nullified, with nothing signed by it seen since the earliest of them, is nullified at once.
SKIP_AFTER_SILENT_LEADS: Final = 1
#: Stored blocks whose certified roots a restarted member is handed (§7): enough to check a
#: leader that executed a few heights less than this member had when it stopped.
RECOVERED_CERTIFIED_BLOCKS: Final = 64
