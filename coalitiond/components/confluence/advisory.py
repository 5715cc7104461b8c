"""Citizen-bump advisories (docs/confluences.md §7): what a confluence operator files in a
Chronicle when a referenced citizen's stable id or content hash changes.

A Chronicle `append` of kind `advisory` whose subject is the confluence's fingerprint and
whose body is the deterministic CBOR map

    {"advisory": "citizen-bump", "confluence": fingerprint, "citizen": old stable id,
     "new_stable_id": id | null, "old_content_hash": id | null,
     "new_content_hash": id | null, "note": text}

with optional evidence pointers `[citizen committee id, height, block digest]` to where the
change is visible (Chronicle's own pointer shape).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from ...commands.envelope import Command
from ...primitives.errors import OperatorError
from ...primitives.identity import ID_LEN
from ..chronicle.records import EvidencePointer, append_command

ADVISORY_KIND: Final = "advisory"
CITIZEN_BUMP: Final = "citizen-bump"
MAX_NOTE_LEN: Final = 1024


def citizen_bump(confluence: bytes, citizen: bytes, *, new_stable_id: bytes | None = None,
                 old_content_hash: bytes | None = None,
                 new_content_hash: bytes | None = None, note: str = "",
                 pointers: Sequence[EvidencePointer] = ()) -> Command:
    for name, value in (("confluence", confluence), ("citizen", citizen)):
        if len(value) != ID_LEN:
            raise OperatorError(f"advisory: {name} must be {ID_LEN} bytes")
    for name, opt in (("new_stable_id", new_stable_id), ("old_content_hash", old_content_hash),
                      ("new_content_hash", new_content_hash)):
        if opt is not None and len(opt) != ID_LEN:
            raise OperatorError(f"advisory: {name} must be {ID_LEN} bytes")
    if new_stable_id is None and new_content_hash is None:
        raise OperatorError("advisory: a citizen bump names a new stable id or a new content "
                            "hash (or both)")
    if len(note) > MAX_NOTE_LEN:
        raise OperatorError(f"advisory: note longer than {MAX_NOTE_LEN} characters")
    body: dict[str, Any] = {"advisory": CITIZEN_BUMP, "confluence": confluence,
                            "citizen": citizen, "new_stable_id": new_stable_id,
                            "old_content_hash": old_content_hash,
                            "new_content_hash": new_content_hash, "note": note}
    return append_command(ADVISORY_KIND, confluence, body, evidence_pointers=pointers)
