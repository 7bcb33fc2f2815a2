"""The environment one run's flow uses: what its pull steps ask for plus ``EXTRA_PIP_PACKAGES``.

`RunEnvironment` is made per run by a local executor. ``install`` is the run's
`StepContext.install`: each ``pip_install_requirements`` step adds its requirements to what the
run asked for so far, and the environment holding all of it (plus the run's extra packages, with
the run's index settings) is leased from the cache (`conveyor.envs.EnvCache`) until the run
ends. `finish`, after the pull steps, builds the environment of the extra packages alone when no
step asked for one; it returns the environment the child runs in (None: the worker's own).

``EXTRA_PIP_PACKAGES`` comes from the top-level job variable and from the run's environment
(the job variables' ``env`` over the worker's own environment); both are used.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path

from conveyor.envs import EnvCache, Environment, EnvSpec, run_extras

__all__ = ["EXTRA_PIP_PACKAGES", "RunEnvironment"]

EXTRA_PIP_PACKAGES = "EXTRA_PIP_PACKAGES"


class RunEnvironment:
    """The environment of one run (see the module docstring)."""

    def __init__(
        self,
        cache: EnvCache,
        stack: ExitStack,
        *,
        env: Mapping[str, str],
        extra_packages: str | None = None,
        log: Callable[[str], None] = lambda _line: None,
    ) -> None:
        self.cache = cache
        self.stack = stack
        self.log = log
        extras = run_extras(env, extra_packages=extra_packages)
        self.packages = extras.packages
        self.index = extras.index
        self.requested = EnvSpec()
        self.current: Environment | None = None
        self.seconds = 0.0

    def install(self, spec: EnvSpec, log: Callable[[str], None]) -> Environment:
        """`StepContext.install`: the environment of everything asked for so far."""
        self.requested = self.requested.merged(spec)
        return self._lease(log)

    def finish(self) -> Environment | None:
        """The environment the flow runs in, after the pull steps (None: the worker's)."""
        if self.current is None and self.packages:
            self._lease(self.log)
        return self.current

    def _lease(self, log: Callable[[str], None]) -> Environment:
        full = EnvSpec(
            requirements=self.requested.requirements,
            constraints=self.requested.constraints,
            packages=self.packages,
            index=self.index,
            names=self.requested.names,
        )
        if full.empty:  # nothing to install: the worker's own interpreter will do
            log("no requirements to install: the flow runs in the worker's environment")
            return Environment(Path(sys.prefix), "", built=False)
        started = time.monotonic()
        self.current = self.stack.enter_context(self.cache.lease(full, log=log))
        self.seconds += time.monotonic() - started
        return self.current
