"""coalitiond: the daemon one operator runs for one member of a coalition committee."""

__version__ = "0.1.0"
