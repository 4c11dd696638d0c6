"""Fill engines behind one contract: see `base.Engine`."""

from fillframe.engines.base import Engine, FillJob, FillOutput, create_engine

__all__ = ["Engine", "FillJob", "FillOutput", "create_engine"]
