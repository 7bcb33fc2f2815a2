"""The sample flow the demo bundles, fetches back through the code cache and runs.

Entrypoint: ``flows.py:hello`` (relative to this folder).
"""

from __future__ import annotations

from typing import Any

from greetings import greeting

from conveyor import flow, task


@task
def shout(text: str) -> str:
    """Upper-case one greeting."""
    return text.upper()


@flow(log_prints=True)
def hello(name: str = "world", n: int = 3) -> dict[str, Any]:
    """Greet ``name`` ``n`` times, in a few languages."""
    lines = [greeting(name, i) for i in range(n)]
    for line in lines:
        print(line)
    return {"name": name, "count": n, "lines": lines, "loudest": shout(lines[-1]) if lines else ""}


if __name__ == "__main__":
    print(hello())
