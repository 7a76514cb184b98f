"""Helpers for tests and the demo: tiny models built from config, fake providers."""
