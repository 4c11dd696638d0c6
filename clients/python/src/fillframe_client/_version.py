"""The one place the client's version is written (pyproject reads it, User-Agent sends it)."""

__version__ = "0.1.0"
