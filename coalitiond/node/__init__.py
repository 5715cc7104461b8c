"""The committee daemon: the trio shell that wires store, transport, consensus core and
component together (`coalitiond run`)."""
