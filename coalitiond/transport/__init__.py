"""The transport (DESIGN §2.4; byte layout in docs/wire.md).

Sans-IO cores: `noise` (the Noise engine), `framing`, `session` (one link's protocol),
`peer_record`, `catalog`. Trio shells: `link` (one socket), `manager` (listener, dialers,
admission, discovery), `router` (typed channels for the layers above).
"""
