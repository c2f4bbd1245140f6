"""The routing file: schema (models) and load (YAML, ${ENV}, cross-checks)."""
