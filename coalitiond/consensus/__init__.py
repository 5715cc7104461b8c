"""Simplex-style BFT consensus, sans-IO: decides one chain of blocks (docs/protocol.md).

No I/O, clock or randomness: the trio shell (coalitiond.node) and the simulator
(coalitiond.testing) drive it with events and execute the actions it returns.

* `events`      — what goes in and out of the core: events, actions, CoreConfig, DurableState.
* `voter`       — `Core.step(event) -> actions`, the state machine: views, votes, timers,
                  finalisation; calls `rules`, `relay` and `catchup`.
* `rules`       — the safety rules, one pure function each (may notarise, quorum, guard, ...).
* `relay`       — dissemination: who gets which certificate, vote or proposal.
* `catchup`     — sync answers and block fetch requests for members that fell behind.
* `limits`      — the core's bounds (docs/protocol.md §10).
* `types`       — Block, Vote, Certificate (archived by the store; encode/decode/verify).
* `statements`  — what a member signs (propose / notarise / finalise / nullify) and the bytes.
* `messages`    — the wire envelope, strict `decode_message`, pure `verify_message`.
* `evidence`    — offline-verifiable proof that one member signed two conflicting statements.
* `batcher`     — bounded, deduplicated pending client commands.
"""
