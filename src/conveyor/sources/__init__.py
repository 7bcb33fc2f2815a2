"""Where code lives: the `Source` contract and its backends (see `conveyor.sources.base`)."""

from conveyor.sources.base import PushableSource, Source, source_from_spec, source_from_url

__all__ = ["PushableSource", "Source", "source_from_spec", "source_from_url"]
