"""The REST routes, one module per topic."""
