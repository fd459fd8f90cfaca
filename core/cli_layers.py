"""Subcommands registered by :func:`core.cli.build_parser` (being built)."""

from __future__ import annotations


def register(sub, bench_sub) -> None:  # noqa: ARG001
    """Add this module's subcommands to sub / bench_sub."""
