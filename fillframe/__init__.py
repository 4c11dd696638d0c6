"""Fillframe: a self-hosted image fill service speaking the Apiframe v2 dialect for flux-fill-pro."""

__version__ = "0.1.0"
