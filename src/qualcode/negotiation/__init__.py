"""Negotiation: disagreements settled and the codebook refined from them, proposed for the researcher to adopt."""
