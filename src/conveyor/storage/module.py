"""`Module`: flows in an installed Python module (``Module("my_package.flows")``).

Nothing is stored or fetched: the module must be importable where the flow runs (an image, the
worker's virtualenv), and the deployment's source is `conveyor.sources.module.ModuleSource`, an
empty tree. ``module`` is ``pkg.mod`` or ``pkg.mod:attr``; `get_flow` imports it (calling a
callable attribute) and picks the flow by name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from conveyor.errors import ConfigError
from conveyor.storage._session import Session
from conveyor.storage.base import Storage

if TYPE_CHECKING:
    from conveyor.flows import Flow
    from conveyor.sources.base import Source

__all__ = ["Module"]


class Module(Storage):
    """Flows importable as ``module`` (``pkg.mod`` or ``pkg.mod:attr``)."""

    def __init__(self, module: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        name = module.partition(":")[0] if isinstance(module, str) else ""
        if not name or not all(part.isidentifier() for part in name.split(".")):
            raise ConfigError(f"{module!r} is not a module path", hint="e.g. my_package.flows")
        self.module = module

    def _location(self, flow: Flow[..., Any]) -> str:
        return self.module

    def _load(self, flow_name: str, location: str, current: Session) -> Flow[..., Any]:
        from conveyor.storage._serialize import extract_flow_from_module

        return extract_flow_from_module(location, flow_name)

    def deployment_source(
        self, flow_name: str, *, attribute: str, current: Session
    ) -> tuple[Source, str]:
        from conveyor.sources.module import ModuleSource
        from conveyor.storage._serialize import module_entrypoint

        return ModuleSource(self.module.partition(":")[0]), module_entrypoint(
            self._check_contained(flow_name), flow_name
        )
