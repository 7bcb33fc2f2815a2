"""A sibling module of the flow file: `from greetings import greeting` works when the flow is
loaded from a checkout, because the flow's folder is importable."""

from __future__ import annotations

SALUTATIONS = ("Hello", "Bonjour", "Hola", "Ciao", "Hallo")


def greeting(name: str, index: int) -> str:
    """The ``index``-th greeting for ``name`` (deterministic: the salutations cycle)."""
    return f"{SALUTATIONS[index % len(SALUTATIONS)]}, {name}!"
