"""Placeholder: the one validator lands next."""
