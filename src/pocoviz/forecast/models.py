"""Imports every model module so that :data:`pocoviz.forecast.base.MODELS` lists all kinds."""

from . import mixers, poco, simple  # noqa: F401
