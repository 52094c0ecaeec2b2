"""The pipeline language: YAML schema and loading, validation, trigger expressions."""
