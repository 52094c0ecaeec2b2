"""The REST API of `whenflow server` (FastAPI; DESIGN.md §9, §11)."""
