"""whenflow: pipelines whose nodes say when they run."""

from __future__ import annotations

__version__ = "0.1.0.dev0"
