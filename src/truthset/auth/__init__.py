"""Authentication (passwords, tokens, sessions, throttling, OpenID Connect) and authorisation
(:mod:`truthset.auth.policy`)."""
