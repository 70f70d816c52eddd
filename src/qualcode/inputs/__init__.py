"""Inputs: reading documents and tables into records, chunking them, and reading the codebook."""
