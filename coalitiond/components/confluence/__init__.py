"""The confluences (SPEC §4): `intents` and `ledger`, deterministic state machines over
their spanned citizens' certified feeds, with evidence pointers (docs/confluences.md)."""

from . import intents as intents
from . import ledger as ledger
