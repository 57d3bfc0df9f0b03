"""OpenAI-compatible serving of hytron models: the HTTP app, the engine backend, the chat page and terminal chat."""

from hytron.serve.app import create_app
from hytron.serve.backend import Backend, ServeConfig

__all__ = ["Backend", "ServeConfig", "create_app"]
