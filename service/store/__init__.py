"""The store: engine and sessions, the schema, batches of samples, migrations."""
