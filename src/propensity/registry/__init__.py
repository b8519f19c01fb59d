"""The model registry: immutable, content-addressed bundles; stages; the promotion gate; rollback."""
