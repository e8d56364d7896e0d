"""The Panel app: one module per tab, each a view-model with a ``__panel__`` method."""

from .app import TABS, create_app, parse_app_args

__all__ = ["TABS", "create_app", "parse_app_args"]
