"""Analysis: what the coded passages say together (passages as vectors, themes)."""
