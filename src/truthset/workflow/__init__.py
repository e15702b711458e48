"""truthset.workflow."""
