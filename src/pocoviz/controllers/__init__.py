"""The tabs' controllers: each tab's state, background jobs, URL state and the snapshot of what it
shows, without panel, holoviews or bokeh (``pocoviz.ui`` renders them). The caches and the lists
of sources and models that every browser session shares live here too."""

from .base import Controller
from .cache import LRUCache
from .jobs import Cancelled, Job, JobRunner
from .urlstate import UrlField, UrlState, UrlValueError

__all__ = ["Cancelled", "Controller", "Job", "JobRunner", "LRUCache", "UrlField", "UrlState", "UrlValueError"]
