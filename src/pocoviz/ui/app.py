"""The app shell: one offline Bootstrap template, one tab per view, each built on first open."""

from __future__ import annotations

import argparse
import html
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import panel as pn
from bokeh.models import CustomJS

import pocoviz
from pocoviz.backend import BackendError, get_device
from pocoviz.controllers.sources import data_dir_from_env
from pocoviz.serving import ignore_writes_to_closed_websockets

from .base import quiet_spinner
from .jobs import on_loop
from .theme import APP_CSS
from .warmup import start_warmup, wait_warmup


def _recordings(data_dir: str | None):
    from .recordings import RecordingsView

    return RecordingsView(data_dir=data_dir)


def _forecast(data_dir: str | None):
    from .forecast import ForecastView

    return ForecastView(data_dir=data_dir)


def _embeddings(data_dir: str | None):
    from .embeddings import EmbeddingsView

    return EmbeddingsView(data_dir=data_dir)


def _ensembles(data_dir: str | None):
    from .ensembles import EnsemblesView

    return EnsemblesView(data_dir=data_dir)


def _seqmem(data_dir: str | None):
    from .seqmem import SeqMemView

    return SeqMemView(data_dir=data_dir)


def _limits(data_dir: str | None):
    from .limits import LimitsView

    return LimitsView(data_dir=data_dir)


#: (tab title, factory(data_dir) -> viewable), in tab order; a view module is imported when its tab first opens
TABS: list[tuple[str, Callable[[str | None], pn.viewable.Viewable]]] = [
    ("Recordings", _recordings),
    ("Forecast", _forecast),
    ("Embeddings", _embeddings),
    ("Ensembles", _ensembles),
    ("Sequence memory", _seqmem),
    ("Transformer limits", _limits),
]


def parse_app_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Options given after ``panel serve app/app.py --args ...``."""
    parser = argparse.ArgumentParser(prog="app.py", add_help=False)
    parser.add_argument("--data-dir", default=None)
    args, _ = parser.parse_known_args(list(argv or []))
    return args


def resolve_data_dir(data_dir: str | os.PathLike | None) -> str | None:
    """The data directory: the argument, else ``POCOVIZ_DATA_DIR``; ``None`` when neither is set."""
    chosen = Path(data_dir) if data_dir else data_dir_from_env()
    return str(chosen.resolve()) if chosen else None


def serve_resources_locally() -> None:
    """Make the served page load BokehJS, Panel's JS and every CSS file from this server.

    Bokeh reads ``BOKEH_RESOURCES`` when a page is rendered; a shell with ``cdn`` or ``inline``
    there would make the page fetch BokehJS (``cdn``: the page never renders offline) or about ten
    of Panel's CSS files (``inline``: the template comes up unstyled) from cdn.bokeh.org and
    cdn.holoviz.org. A value set here outranks the environment. Process-wide; called by
    :func:`create_app` when served and by ``pocoviz serve``, not in a notebook.
    """
    from bokeh.settings import settings

    settings.resources.set_value("server")


def stylesheets_from_this_server(doc: Any) -> None:
    """Have Panel point this session's component stylesheets at this server, not at its CDN.

    Panel records where its stylesheets live (``dist_url``) when it renders a session's page. With
    ``pocoviz serve --num-procs N`` the page and the websocket may reach different processes; the
    process that accepted the websocket then creates the session anew (Bokeh does) without a page,
    and Panel falls back to ``cdn.holoviz.org`` for every stylesheet: offline, the app came up
    unstyled. Set here for every served session (the page rendering keeps its own value)."""
    from panel.io.resources import get_dist_path

    doc._template_variables.setdefault("dist_url", get_dist_path(cdn=False))


#: Bokeh's MultiChoice (Panel's MultiChoice is Bokeh's) builds a Choices.js 10.2 select with no
#: ``allowHTML`` option and offers no property to pass one, so Choices prints a deprecation warning
#: for every picker rendered ("allowHTML will default to false in a future release"). Bokeh ships
#: Choices 10.2, where the default stays true, so the message announces nothing that applies here;
#: this makes MultiChoice views render without it (only that message, only while one renders).
#: Runs in the browser once the document is ready, before any tab's widgets exist (tabs are built
#: after the browser connects). Remove when Bokeh passes allowHTML itself.
CHOICES_ALLOW_HTML_JS = """
const mod = Bokeh.require("models/widgets/multi_choice")
const proto = mod.MultiChoiceView.prototype
if (!proto._pocoviz_quiet_render) {
  const render = proto.render
  proto._pocoviz_quiet_render = true
  proto.render = function () {
    const warn = console.warn
    console.warn = function (...args) {
      if (typeof args[0] === "string" && args[0].startsWith("Deprecation warning: allowHTML will default to false"))
        return
      return warn.apply(console, args)
    }
    try { return render.call(this) } finally { console.warn = warn }
  }
}
"""


def _sidebar(data_dir: str | None) -> pn.pane.HTML:
    try:
        device = str(get_device())
    except BackendError as exc:
        device = f"unavailable ({exc})"
    folder = html.escape(data_dir) if data_dir else "none (start with <code>--data-dir DIR</code>)"
    return pn.pane.HTML(
        f"<p><b>pocoviz</b> {pocoviz.__version__}</p>"
        f"<p>compute device: <code>{html.escape(device)}</code></p>"
        f"<p>data directory: {folder}</p>"
        "<p style='font-size:0.85em;color:#555'>Recordings are opened read-only; only files under the data "
        "directory are listed. The demo corpus is synthetic (see its metadata).</p>",
        sizing_mode="stretch_width",
        css_classes=["pocoviz-sidebar"],
    )


def create_app(data_dir: str | os.PathLike | None = None) -> pn.template.BootstrapTemplate:
    """Build the app. ``data_dir`` (or ``POCOVIZ_DATA_DIR``) is the only folder recordings come from."""
    pn.extension(raw_css=[APP_CSS], notifications=False)
    folder = resolve_data_dir(data_dir)
    holders = [pn.Column(sizing_mode="stretch_width") for _ in TABS]
    tabs = pn.Tabs(*[(title, holder) for (title, _), holder in zip(TABS, holders)], dynamic=True, sizing_mode="stretch_width")

    loading: set[int] = set()  # holders showing the loading placeholder
    # The header's busy indicator follows this session's own background work (its tabs' controllers).
    # Panel's template indicator follows the process-wide ``pn.state.busy`` instead: every visitor's
    # header spun while anyone's callback ran, and the indicators of ended sessions stayed in Panel's
    # global list, to be edited from its worker threads after their documents were gone.
    busy = quiet_spinner(value=False, width=20, height=20, margin=(0, 10), css_classes=["pocoviz-header-busy"])
    controllers: list = []

    def follow_busy(*_events) -> None:
        on_loop(doc, lambda: setattr(busy, "value", any(c.busy for c in controllers)))

    def build(index: int) -> None:
        holder = holders[index]
        if len(holder) == 0 or index in loading:
            loading.discard(index)
            try:
                view = TABS[index][1](folder)
            except Exception as exc:  # a view that cannot start must not take the app down
                import traceback

                traceback.print_exc()
                view = pn.pane.Alert(f"This view could not start: {html.escape(str(exc))}", alert_type="danger")
            controller = getattr(view, "controller", None)
            if controller is not None:
                controllers.append(controller)
                controller.param.watch(follow_busy, "busy")
            holder[:] = [view]

    def placeholder(index: int) -> None:
        if len(holders[index]) == 0:
            loading.add(index)
            holders[index].append(
                pn.Row(
                    pn.indicators.LoadingSpinner(value=True, size=28, name="", margin=(12, 10)),
                    pn.pane.Markdown("Loading the demo corpus …" if index == 0 else f"Loading {TABS[index][0]} …", margin=(10, 5)),
                    css_classes=["pocoviz-loading"],
                )
            )

    doc = pn.state.curdoc
    served = doc is not None and doc.session_context is not None
    if not served:
        doc = None
    if served:
        serve_resources_locally()  # before the page is rendered: it is, once this session exists
        stylesheets_from_this_server(doc)
        ignore_writes_to_closed_websockets()  # a browser that leaves mid-stream is not a traceback
        pn.state.curdoc.js_on_event("document_ready", CustomJS(code=CHOICES_ALLOW_HTML_JS))
        # send the page at once and build the open view once the browser is connected (a link may
        # open any tab: ?tab=2); tabs opened before that show a placeholder until then
        start_warmup()
        connected = {"yes": False}

        def on_active(event) -> None:
            if connected["yes"]:
                build(event.new)
            else:
                placeholder(event.new)

        tabs.param.watch(on_active, "active")
        if pn.state.location is not None:
            pn.state.location.sync(tabs, {"active": "tab"})  # the open tab is part of a shareable link
        placeholder(tabs.active)

        def build_first() -> None:
            wait_warmup()
            connected["yes"] = True
            build(tabs.active)

        pn.state.onload(build_first)
    else:
        build(0)
        tabs.param.watch(lambda event: build(event.new), "active")
    template = pn.template.BootstrapTemplate(
        title="pocoviz",
        sidebar=[_sidebar(folder)],
        sidebar_width=250,
        header_background="#1f3b57",
        collapsed_sidebar=True,
        busy_indicator=None,
    )
    template.header.append(busy)
    template.main.append(tabs)
    return template
