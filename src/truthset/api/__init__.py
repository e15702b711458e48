"""The web API: :func:`truthset.api.app.create_app`."""
