"""Simplex-style BFT consensus: the sans-IO core and its wire types (docs/protocol.md).

* `types`       — Block, Vote, Certificate (archived by the store; encode/decode/verify).
* `statements`  — what a member signs (propose / notarise / finalise / nullify) and the bytes.
* `messages`    — the wire envelope, strict `decode_message`, pure `verify_message`.
* `evidence`    — offline-verifiable proof that one member signed two conflicting statements.
* `batcher`     — bounded, deduplicated pending client commands.
* `voter`       — `Core.step(event) -> actions`, the protocol state machine.
* `simulator`   — seeded deterministic simulation with invariant checks after every step.
* `byzantine`   — the catalogue of misbehaving members (wrappers around the honest core).
"""
