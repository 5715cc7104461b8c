"""Intel TDX admission (DESIGN §2.7): dcap-qvl verification, policy, tickets, the transport
gate, configfs-tsm quotes and PCCS collateral; and `quote`, the deterministic reading of a
quote's layout that state machines may use. See docs/attestation.md."""
