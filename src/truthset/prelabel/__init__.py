"""truthset.prelabel."""
