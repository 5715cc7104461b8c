"""The vocabulary every layer shares, and nothing else: deterministic CBOR (`encoding`), ids
and domain-separated hashes (`identity`), ed25519 signatures (`crypto`), key files (`keys`),
the error classes that say whose fault a failure is (`errors`), RFC 6962 Merkle trees
(`merkle`), a committee's and a coalition's identity (`committee`, `coalition`), and the
metrics and structured-log helpers (`metrics`, `logs`). Imports nothing else of coalitiond."""
