"""Test helpers: an in-memory Hugging Face Hub server for the real `huggingface_hub` client."""

from .hub_server import Commit, HubServer, hub_env, run_hub_server

__all__ = ["Commit", "HubServer", "hub_env", "run_hub_server"]
