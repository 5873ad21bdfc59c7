"""The `compete` command: one small function per step, each a thin layer over the Python API.

Run as `compete ...` or `python -m competition.cli ...` (what torchrun launches)."""

from competition.cli import flow, results  # noqa: F401  (registers the commands)
from competition.cli.base import app, unwrap_help

unwrap_help(app)

__all__ = ["app"]
