"""truthset.release."""
