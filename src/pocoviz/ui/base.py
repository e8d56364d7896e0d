"""What every tab shares: the layout built once on first display, the session's document kept so
that results computed in threads are applied on its event loop, and widgets bound to parameters
with a per-tab CSS class (the handles the browser tests use)."""

from __future__ import annotations

from typing import Any, ClassVar

import panel as pn

from .jobs import on_loop


class TabView(pn.viewable.Viewer):
    """Base of the app's tabs. Subclasses set :attr:`css_prefix`, implement :meth:`_build_layout`,
    and may extend :meth:`_on_served` (periodic callbacks, URL sync) and :meth:`close`."""

    css_prefix: ClassVar[str] = "pocoviz"

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._doc = None
        self._layout: pn.viewable.Viewable | None = None

    def _widget(self, name: str, kind: type, label: str, **kw: Any) -> pn.widgets.Widget:
        """``kind`` bound to parameter ``name``, 250 px wide, with CSS class ``<prefix>-<name>``."""
        kw.setdefault("width", 250)
        return kind.from_param(self.param[name], label=label, css_classes=[f"{self.css_prefix}-{name}"], **kw)

    def _on_loop(self, fn) -> None:
        """Run ``fn`` on the session's event loop, which holds the document lock that edits of Bokeh
        models need (callbacks and worker threads run outside it); directly when not served."""
        on_loop(self._doc, fn)

    def __panel__(self) -> pn.viewable.Viewable:
        if self._layout is None:
            self._layout = self._build_layout()
            doc = pn.state.curdoc
            if doc is not None and doc.session_context is not None:
                self._doc = doc
                self._on_served(doc)
        return self._layout

    def _build_layout(self) -> pn.viewable.Viewable:  # pragma: no cover - abstract
        raise NotImplementedError

    def _on_served(self, doc: Any) -> None:
        """Called once when the layout is first shown in a served session."""
        pn.state.on_session_destroyed(lambda ctx: self.close())

    def close(self, timeout: float = 60.0) -> None:
        """Stop background work (subclasses); called when the session ends."""
