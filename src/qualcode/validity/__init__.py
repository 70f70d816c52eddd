"""Validity: the model's codes beside the human coders' (gold codings, agreement statistics, the validation tables)."""
