"""Shim package (see ../README.md)."""
