"""Task prompts: how a problem becomes a generation request, per task kind."""

from .prompts import build_request, default_stop

__all__ = ["build_request", "default_stop"]
