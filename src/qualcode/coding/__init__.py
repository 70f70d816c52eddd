"""Coding: asking the model about each chunk, caching and journaling its answers, checking them, and what it costs."""
