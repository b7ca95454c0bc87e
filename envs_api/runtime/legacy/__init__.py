"""Old gym environments that Gymnasium dropped, written for Gymnasium and served under
their old ids: the algorithmic family (algorithmic.py) and the retired toy-text
envs (toy_text.py). ``register()`` runs when the app starts."""

from __future__ import annotations

from envs_api.runtime.legacy import algorithmic, toy_text


def register() -> None:
    """Register every legacy env with Gymnasium; ids already registered are kept."""
    algorithmic.register()
    toy_text.register()
