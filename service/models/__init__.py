"""Model versions: the registry on disk, promotion and rollback, serving predictions."""
