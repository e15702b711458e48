"""truthset.workspace."""
