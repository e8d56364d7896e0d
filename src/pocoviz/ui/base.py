"""What every tab shares: the layout built once on first display, the session's document kept so
that results computed in threads are applied on its event loop, the tab's controller (its state,
jobs and URL state; see :mod:`pocoviz.controllers`) bound to the page's URL, and widgets bound to
parameters with a per-tab CSS class (the handles the browser tests use)."""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode

import panel as pn

from pocoviz.controllers import Controller

from .jobs import on_loop


def query_of(search: str | None) -> dict[str, str]:
    """The page's query string as ``{key: text}`` (raw text: the controller parses each value by
    its type; Panel's own parser would turn ``17`` into an int and ``[1]`` into a list)."""
    return dict(parse_qsl((search or "").lstrip("?"), keep_blank_values=True))


def quiet_spinner(**params) -> pn.indicators.LoadingSpinner:
    """A spinner without Panel's off-throttle: the throttle turns the spinner off from an asyncio
    task that edits the Bokeh model without the document lock ("_pending_writes should be
    non-None", a server traceback when a tab's work ends just after it began)."""
    return pn.indicators.LoadingSpinner(throttle=0, **params)


class OptionsSelect(pn.widgets.Select):
    """A Select that ignores a choice the browser made among options it no longer has.

    When the options change (another session's regions) while a user picks from the list the
    browser still shows, Panel's Select raised "X not in list" in a server callback (a traceback
    for every such pick in the 20-session load test). The pick is dropped, the widget keeps its
    value, and the browser is sent the current options and value again."""

    def _process_property_change(self, props: dict[str, Any]) -> dict[str, Any]:
        value = props.get("value")
        if value not in (None, "") and self.values and str(value) not in self.unicode_values and str(value) not in [str(x) for x in self.labels]:
            props = {k: v for k, v in props.items() if k != "value"}
            doc = pn.state.curdoc  # the session's (Panel sets it while it handles the browser's event)
            resend = lambda: self.param.trigger("value", "options")  # noqa: E731
            if doc is not None and doc.session_context is not None:
                doc.add_next_tick_callback(resend)  # on the session's loop, with its lock
            else:
                resend()
        return super()._process_property_change(props)


class TabView(pn.viewable.Viewer):
    """Base of the app's tabs. Subclasses set :attr:`css_prefix`, implement :meth:`_build_layout`,
    set :attr:`controller` (whose URL fields then follow the page URL when served), and may extend
    :meth:`_on_served` and :meth:`close`."""

    css_prefix: ClassVar[str] = "pocoviz"

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._doc = None
        self._layout: pn.viewable.Viewable | None = None
        self._location = None
        self._render_pending = False
        self._drawn: dict[str, Any] = {}
        self.controller: Controller | None = getattr(self, "controller", None)

    def _widget(self, name: str, kind: type, label: str, owner: Any = None, **kw: Any) -> pn.widgets.Widget:
        """``kind`` bound to parameter ``name`` (of ``owner``: the view, or its controller), 250 px
        wide, with CSS class ``<prefix>-<name>``."""
        kw.setdefault("width", 250)
        owner = self if owner is None else owner
        kind = OptionsSelect if kind is pn.widgets.Select else kind
        return kind.from_param(owner.param[name], label=label, css_classes=[f"{self.css_prefix}-{name}"], **kw)

    def _request_render(self) -> None:
        """Draw the controller's snapshot (:meth:`_render`) once on the loop, however many changes
        arrive before it runs."""
        if not self._render_pending:
            self._render_pending = True
            self._on_loop(self._render)

    def _render(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _changed(self, part: str, obj: Any) -> bool:
        """Whether ``part`` of the snapshot is a new object since it was last drawn (and note it)."""
        if self._drawn.get(part) is obj:
            return False
        self._drawn[part] = obj
        return True

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
        """Called once when the layout is first shown in a served session: the controller's URL
        fields follow the page's URL (after the page has loaded: the browser's own location would
        overwrite an earlier query), and the tab closes with the session."""
        pn.state.on_session_destroyed(lambda ctx: self.close())
        if self.controller is not None and self.controller.url.fields and pn.state.location is not None:
            pn.state.onload(self._start_url_sync)

    # ------------------------------------------------------------------ URL state
    def _start_url_sync(self) -> None:
        """Apply the page URL to the controller and follow it, on the session's event loop: with
        ``--num-threads`` Panel runs onload callbacks in a thread pool, where widget updates can be
        dropped and Bokeh models must not be edited."""
        self._on_loop(self._sync_url_on_loop)

    #: controller parameters that change too often to follow into the URL one by one (a view writes
    #: them itself, e.g. the Forecast cursor with its readout)
    url_write_skip: ClassVar[tuple[str, ...]] = ()

    def _sync_url_on_loop(self) -> None:
        loc = pn.state.location
        if loc is None or self.controller is None:
            return
        self._location = loc
        self.controller.apply_url(query_of(loc.search))
        self._write_url()
        params = [p for p in self.controller.url.params if p not in self.url_write_skip]
        self.controller.param.watch(lambda *events: self._on_loop(self._write_url), params)

    def _write_url(self) -> None:
        """Put the controller's settings into the page URL, keeping other tabs' keys."""
        loc = self._location
        if loc is None or self.controller is None:
            return
        merged = self.controller.url.merge_into(query_of(loc.search), self.controller)
        search = "?" + urlencode(merged) if merged else ""
        if search != (loc.search or ""):
            loc.search = search

    def close(self, timeout: float = 60.0) -> None:
        """Stop background work: the controller's jobs are cancelled and joined (session ended)."""
        if self.controller is not None:
            self.controller.close(timeout)
