"""Loading: every checkpoint format and published release into a ``LotusModel``, and the precision policy."""
