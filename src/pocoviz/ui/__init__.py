"""The Panel app: one module per tab, each a view-model with a ``__panel__`` method."""

from .bokeh_validation import install as _install_bokeh_validation

_install_bokeh_validation()  # before any figure is made: see pocoviz.ui.bokeh_validation

from .app import TABS, create_app, parse_app_args  # noqa: E402

__all__ = ["TABS", "create_app", "parse_app_args"]
