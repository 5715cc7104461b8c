"""Intel TDX admission (DESIGN §2.7): dcap-qvl verification, policy, tickets, the transport
gate, configfs-tsm quotes and PCCS collateral. See docs/attestation.md."""
