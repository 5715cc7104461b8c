"""Simplex-style BFT consensus: the sans-IO core and its wire types."""
