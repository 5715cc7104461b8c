"""The operator's surface of one member process: `daemon` (what `coalitiond run` wires: the
member, its HTTP server, systemd notify and signals), `http` (the ASGI app on hypercorn:
/metrics, /status, /healthz, /readyz), `read_api` (the integrators' /v1 routes) and
`systemd` (sd_notify and the watchdog)."""
