"""Ringwall: a defense-in-depth API security gateway."""

__version__ = "0.1.0"
