"""The committee daemon (`coalitiond run`): the trio shell that runs one committee member
around the sans-IO consensus core — store, transport, core and component wired together.

`member.py` builds a member from its parts and runs their tasks in one nursery: `voter.py`
(the consensus loop: rounds, persistence, execution), `verifier.py` (consensus-message
intake verification), `mempool.py` (client and gossip intake, relay), `resolver.py`
(fetching and serving blocks) and `journal.py` (what the log keeps with each block), joined
by `inbox.py` (the voter's one input channel); `timers.py` holds the core's timers. The
rest: `daemon.py` (process lifecycle), `drivers.py` and `almanac_ticker.py` (components'
non-deterministic helpers), `wire.py` (client and sync messages), `client.py` (a client of
members), `devnet.py` and `devnet_workloads.py` (a local committee).
"""
