"""The real-server fixtures (modelservers.py: a name no other test directory uses)."""

from modelservers import litellm, llama

__all__ = ["litellm", "llama"]
