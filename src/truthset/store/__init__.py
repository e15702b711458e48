"""The only layer that knows SQL: tables, migrations, engines and the blob store."""
