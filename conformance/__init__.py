"""Conformance suites that run against a running Ringwall."""
