"""Thin framework adapters over the collapseguard core engine.

Importable as ``collapseguard.integrations.lightning`` and
``collapseguard.integrations.transformers``; each needs its framework installed.
"""
