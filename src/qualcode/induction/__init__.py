"""Induction: a codebook proposed from the data, for the researcher to curate."""
