"""Recipe files: the typed schema, loading with ``base:`` and overrides, cross-field checks."""
