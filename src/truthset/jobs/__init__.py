"""truthset.jobs."""
