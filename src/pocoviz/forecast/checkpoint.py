"""Saving and loading forecasters: safetensors weights plus a JSON card, never a pickle.

A checkpoint is a pair of files with a common stem::

    poco_demo.safetensors   the model's state_dict (CPU, contiguous tensors)
    poco_demo.json          the card: kind, constructor config, sessions, tensor shapes,
                            the weights' sha256, versions, training record and metrics

:func:`save_model` writes both atomically (weights first, then the card). :func:`load_model`
validates the card (:func:`read_card`), checks that the weights' sha256 matches the card,
rebuilds the architecture with :func:`~pocoviz.forecast.base.build_model` and refuses any
disagreement between the card, the weights file and the rebuilt model (a missing or unexpected
tensor, a shape or dtype mismatch) before loading the weights strictly. Every problem raises
:class:`CheckpointError` naming the file and the card field at fault.

Bare names (``load_model("poco_demo")``) are looked up in the shipped models folder
(:func:`pocoviz.assets.models_dir`) and then in the folders listed in ``POCOVIZ_MODELS``
(``os.pathsep``-separated); the first folder holding a name wins.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch

from ..assets import models_dir
from .base import MODELS, SESSION_KEYS, Forecaster, SessionInfo, build_model

FORMAT = "pocoviz-forecaster"
FORMAT_VERSION = 1
CARD_SUFFIX = ".json"
WEIGHTS_SUFFIX = ".safetensors"
#: Largest card :func:`read_card` reads; a card is a few kB, so anything near this is not one.
MAX_CARD_BYTES = 64 * 2**20
#: Environment variable with extra model folders, ``os.pathsep``-separated.
MODELS_ENV = "POCOVIZ_MODELS"

REQUIRED_KEYS = ("format", "format_version", "kind", "config", "sessions", "tensors", "weights_sha256")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


class CheckpointError(ValueError):
    """A checkpoint (card or weights) is missing, malformed, or does not match its model.

    Attributes
    ----------
    path : str or None
        The file concerned (the full path; the message shows it short).
    field : str or None
        The card field at fault (``"sessions[1].n_units"``, ``"tensors.unit_emb.weight"``,
        ``"weights_sha256"``, ...), or ``"weights"`` for the weights file itself.
    problem : str
        The message without the file and field.
    """

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, field: str | None = None):
        self.path = None if path is None else str(path)
        self.field = field
        self.problem = message
        where = []
        if path is not None:
            where.append(_display(path))
        if field:
            where.append(f"field '{field}'")
        super().__init__(": ".join([*where, message]))


def _display(path: str | os.PathLike) -> str:
    """A short form of ``path``: relative to the working directory when inside it, else the file name."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return p.name or str(p)


# --------------------------------------------------------------------------------------------
# paths
# --------------------------------------------------------------------------------------------


def _stem_of(path: str | os.PathLike) -> Path:
    """``path`` without a ``.json`` / ``.safetensors`` suffix (other dots belong to the name)."""
    p = Path(path)
    if p.name.endswith(CARD_SUFFIX):
        return p.with_name(p.name[: -len(CARD_SUFFIX)])
    if p.name.endswith(WEIGHTS_SUFFIX):
        return p.with_name(p.name[: -len(WEIGHTS_SUFFIX)])
    return p


def _card_path(stem: Path) -> Path:
    return stem.with_name(stem.name + CARD_SUFFIX)


def _weights_path(stem: Path) -> Path:
    return stem.with_name(stem.name + WEIGHTS_SUFFIX)


def default_search() -> list[Path]:
    """The shipped models folder, then the folders in ``POCOVIZ_MODELS``."""
    extra = [Path(p) for p in os.environ.get(MODELS_ENV, "").split(os.pathsep) if p.strip()]
    return [models_dir(), *extra]


def _search_folders(search: Iterable[str | os.PathLike] | None) -> list[Path]:
    if search is None:
        return default_search()
    if isinstance(search, (str, os.PathLike)):
        return [Path(search)]
    return [Path(p) for p in search]


def _is_bare_name(name_or_path: str | os.PathLike) -> bool:
    """A plain string with no folder part and no checkpoint suffix is a name, not a path."""
    if not isinstance(name_or_path, str):
        return False
    seps = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return not any(s in name_or_path for s in seps) and not name_or_path.endswith((CARD_SUFFIX, WEIGHTS_SUFFIX))


def available_models(search: Iterable[str | os.PathLike] | None = None) -> list[str]:
    """Names of the checkpoints (a ``<name>.json`` card with a ``<name>.safetensors`` beside it)
    in the ``search`` folders (default: :func:`default_search`), sorted and de-duplicated."""
    names: set[str] = set()
    for folder in _search_folders(search):
        if not folder.is_dir():
            continue
        for card in folder.glob("*" + CARD_SUFFIX):
            stem = _stem_of(card)
            if stem.name and not stem.name.startswith(".") and card.is_file() and _weights_path(stem).is_file():
                names.add(stem.name)
    return sorted(names)


def resolve(name_or_path: str | os.PathLike, search: Iterable[str | os.PathLike] | None = None) -> Path:
    """The stem (path without suffix) of a checkpoint given by path or bare name.

    A path (a :class:`~pathlib.Path`, or a string with a folder part or a ``.json`` /
    ``.safetensors`` suffix) is taken as it is. A bare name is looked up in the ``search``
    folders: the first folder with both files wins, else the first with the card alone (so that
    loading reports the missing weights). An unknown name raises :class:`CheckpointError`
    listing :func:`available_models`.
    """
    if not _is_bare_name(name_or_path):
        return _stem_of(name_or_path)
    name = str(name_or_path)
    if name in ("", ".", ".."):
        raise CheckpointError(f"{name!r} is not a model name")
    folders = _search_folders(search)
    card_only = None
    for folder in folders:
        stem = folder / name
        if _card_path(stem).is_file():
            if _weights_path(stem).is_file():
                return stem
            card_only = card_only or stem
    if card_only is not None:
        return card_only
    known = available_models(folders)
    where = ", ".join(str(f) for f in folders) or "no folders"
    raise CheckpointError(
        f"no model named {name!r} in {where}; available: {', '.join(known) if known else 'none'} "
        f"(give a path, or add folders to {MODELS_ENV})"
    )


# --------------------------------------------------------------------------------------------
# saving
# --------------------------------------------------------------------------------------------


def _jsonable(value: Any, where: str, _seen: set[int] | None = None) -> Any:
    """``value`` as plain JSON types: numpy / torch scalars become Python numbers, tuples lists,
    arrays nested lists, paths strings. Anything else raises :class:`TypeError` naming ``where``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        # NaN/inf are not JSON: strict parsers (a browser's) refuse the tokens Python writes
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.generic):
        return _jsonable(value.item(), where, _seen)
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist(), where, _seen)
    if isinstance(value, torch.Tensor):
        v = value.detach().cpu()
        return _jsonable(v.item() if v.ndim == 0 else v.tolist(), where, _seen)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    seen = set() if _seen is None else _seen
    if id(value) in seen:
        raise TypeError(f"{where}: a reference cycle cannot be stored in a JSON card")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        seen.add(id(value))
        out = {}
        for k, v in value.items():
            if isinstance(k, np.generic):
                k = k.item()
            if isinstance(k, bool) or not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is not a string; a JSON card needs string keys")
            out[str(k)] = _jsonable(v, f"{where}.{k}", seen)
        seen.discard(id(value))
        return out
    if isinstance(value, (list, tuple)):
        seen.add(id(value))
        out_list = [_jsonable(v, f"{where}[{i}]", seen) for i, v in enumerate(value)]
        seen.discard(id(value))
        return out_list
    raise TypeError(f"{where}: cannot store a {type(value).__name__} in a JSON card ({value!r:.80})")


def _library_version() -> str:
    try:
        import pocoviz

        v = getattr(pocoviz, "__version__", None)
        if v:
            return str(v)
    except ImportError:  # pragma: no cover - we are inside pocoviz
        pass
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("pocoviz")
    except (ImportError, PackageNotFoundError):
        return "unknown"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, fsync'd, then
    :func:`os.replace`; the temporary file is removed on any failure."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        try:
            dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return
        try:
            with contextlib.suppress(OSError):
                os.fsync(dfd)
        finally:
            os.close(dfd)


def save_model(
    model: Forecaster,
    path: str | os.PathLike,
    *,
    training: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Save ``model`` as ``<stem>.safetensors`` + ``<stem>.json``; returns the card's path.

    ``path`` is the stem or either file's path. ``training`` (corpus, seeds, steps, config, ...),
    ``metrics`` and ``extra`` are stored in the card as given; they must be JSON-serialisable
    (numpy and torch scalars, tuples, arrays and paths are converted). Nothing is written when the
    model or these records cannot be stored. Both files are written atomically, weights first.
    """
    if not isinstance(model, Forecaster):
        raise TypeError(f"save_model needs a Forecaster, got {type(model).__name__}")
    from . import models  # noqa: F401  (registers every kind)

    if MODELS.get(model.kind) is not type(model):
        raise ValueError(
            f"{type(model).__name__} (kind {model.kind!r}) is not the registered class for its kind, "
            "so a checkpoint of it could not be rebuilt; register it with pocoviz.forecast.base.register"
        )
    stem = _stem_of(path)
    card_path, weights_path = _card_path(stem), _weights_path(stem)

    tensors: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"state_dict entry {name!r} is a {type(t).__name__}, not a tensor; only tensors can be saved")
        # a fresh contiguous CPU copy: safetensors refuses tensors that share storage
        tensors[name] = t.detach().to(device="cpu").clone(memory_format=torch.contiguous_format)

    card: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": model.kind,
        "config": _jsonable(model.config(), "config"),
        "sessions": [s.to_json() for s in model.sessions],
        "datasets": list(model.datasets),
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "tensors": {name: {"shape": list(t.shape), "dtype": _dtype_name(t.dtype)} for name, t in tensors.items()},
        "library_version": _library_version(),
        "torch_version": torch.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "training": _jsonable(training, "training") if training is not None else None,
        "metrics": _jsonable(metrics, "metrics") if metrics is not None else None,
        "extra": _jsonable(extra, "extra") if extra is not None else None,
    }
    for key in ("training", "metrics", "extra"):
        if card[key] is not None and not isinstance(card[key], dict):
            raise TypeError(f"{key} must be a mapping, got {type(card[key]).__name__}")

    # one metadata key: safetensors writes a map in arbitrary order, and the bytes must be reproducible
    weights = safetensors.torch.save(tensors, metadata={"format": f"{FORMAT}:{model.kind}"})
    card["weights_sha256"] = hashlib.sha256(weights).hexdigest()
    # top-level keys sorted; tensors stay in state_dict order, records as given
    text = json.dumps(dict(sorted(card.items())), indent=1) + "\n"
    # what we write must be what load_model accepts
    _validate_card(json.loads(text), card_path)

    stem.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(weights_path, weights)
    _atomic_write(card_path, text.encode("utf-8"))
    return card_path


# --------------------------------------------------------------------------------------------
# reading the card
# --------------------------------------------------------------------------------------------


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _known_kinds() -> list[str]:
    from . import models  # noqa: F401  (registers every kind)

    return sorted(MODELS)


def _validate_card(card: Any, path: Path) -> dict[str, Any]:
    def err(message: str, field: str | None = None) -> CheckpointError:
        return CheckpointError(message, path=path, field=field)

    if not isinstance(card, dict):
        raise err(f"a model card must be a JSON object, got a JSON {type(card).__name__}")
    if card.get("format") != FORMAT:
        if "format" not in card:
            raise err(f"missing; this is not a pocoviz model card (expected format {FORMAT!r})", "format")
        raise err(f"expected {FORMAT!r}, got {card['format']!r}; this is not a pocoviz model card", "format")
    missing = [k for k in REQUIRED_KEYS if k not in card]
    if missing:
        raise err(f"the card lacks the key(s) {', '.join(missing)}", missing[0])

    version = card["format_version"]
    if not _is_int(version):
        raise err(f"must be an integer, got {version!r}", "format_version")
    if version > FORMAT_VERSION:
        raise err(
            f"the card has format_version {version}, newer than the {FORMAT_VERSION} this pocoviz "
            f"({_library_version()}) reads; upgrade pocoviz to load it",
            "format_version",
        )
    if version < 1:
        raise err(f"unsupported format_version {version}; this pocoviz reads format_version {FORMAT_VERSION}", "format_version")

    kind = card["kind"]
    known = _known_kinds()
    if not isinstance(kind, str) or kind not in known:
        raise err(f"unknown model kind {kind!r}; known kinds: {', '.join(known)}", "kind")

    if not isinstance(card["config"], dict):
        raise err(f"must be an object of constructor arguments, got {type(card['config']).__name__}", "config")

    sessions = card["sessions"]
    if not isinstance(sessions, list) or not sessions:
        raise err(
            "must be a non-empty list of sessions" + ("" if isinstance(sessions, list) else f", got {type(sessions).__name__}"), "sessions"
        )
    names: set[str] = set()
    for i, s in enumerate(sessions):
        f = f"sessions[{i}]"
        if not isinstance(s, dict):
            raise err(f"must be an object with name, n_units, dataset; got {type(s).__name__}", f)
        for key in ("name", "n_units", "dataset"):
            if key not in s:
                raise err("missing", f"{f}.{key}")
        unexpected = sorted(set(s) - set(SESSION_KEYS))
        if unexpected:
            raise err(f"unexpected key(s) {', '.join(unexpected)} (a session has name, n_units, dataset and optionally labels, species)", f)
        if not isinstance(s["name"], str) or not s["name"]:
            raise err(f"must be a non-empty string, got {s['name']!r}", f"{f}.name")
        if s["name"] in names:
            raise err(f"duplicate session name {s['name']!r}", f"{f}.name")
        names.add(s["name"])
        if not _is_int(s["n_units"]) or s["n_units"] < 1:
            raise err(f"must be a positive integer, got {s['n_units']!r}", f"{f}.n_units")
        if not isinstance(s["dataset"], str) or not s["dataset"]:
            raise err(f"must be a non-empty string, got {s['dataset']!r}", f"{f}.dataset")
        if "labels" in s:
            labels = s["labels"]
            if not isinstance(labels, list) or len(labels) != s["n_units"] or not all(isinstance(x, str) for x in labels):
                raise err(f"must be a list of {s['n_units']} strings (one per unit), got {labels!r:.80}", f"{f}.labels")
        if "species" in s and (not isinstance(s["species"], str) or not s["species"].strip()):
            raise err(f"must be a non-empty string, got {s['species']!r:.80}", f"{f}.species")

    if "datasets" in card:
        ds = card["datasets"]
        if not isinstance(ds, list) or not all(isinstance(d, str) for d in ds):
            raise err(f"must be a list of strings, got {ds!r:.80}", "datasets")

    tensors = card["tensors"]
    if not isinstance(tensors, dict):
        raise err(f"must be an object {{name: {{shape, dtype}}}}, got {type(tensors).__name__}", "tensors")
    for name, spec in tensors.items():
        f = f"tensors.{name}"
        if not isinstance(spec, dict) or set(spec) != {"shape", "dtype"}:
            raise err(f"must be an object with exactly shape and dtype, got {spec!r:.80}", f)
        shape = spec["shape"]
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise err(f"shape must be a list of non-negative integers, got {shape!r:.80}", f)
        if not isinstance(spec["dtype"], str) or not spec["dtype"]:
            raise err(f"dtype must be a string, got {spec['dtype']!r}", f)

    sha = card["weights_sha256"]
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise err(f"must be 64 hexadecimal digits, got {sha!r:.80}", "weights_sha256")

    if "n_parameters" in card and (not _is_int(card["n_parameters"]) or card["n_parameters"] < 0):
        raise err(f"must be a non-negative integer, got {card['n_parameters']!r}", "n_parameters")
    for key in ("training", "metrics", "extra"):
        if card.get(key) is not None and not isinstance(card[key], dict):
            raise err(f"must be an object or null, got {type(card[key]).__name__}", key)
    for key in ("library_version", "torch_version", "created"):
        if key in card and not isinstance(card[key], str):
            raise err(f"must be a string, got {card[key]!r:.80}", key)
    return card


def _read_limited(path: Path, limit: int, *, field: str | None = None, what: str = "file") -> bytes:
    """Read a regular file of at most ``limit`` bytes (checked before reading and while reading)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CheckpointError(f"no such {what}", path=path, field=field) from None
    except OSError as e:
        raise CheckpointError(f"cannot read the {what}: {e.strerror or e}", path=path, field=field) from None
    if not path.is_file():
        raise CheckpointError(f"the {what} is not a regular file", path=path, field=field)
    if st.st_size > limit:
        raise CheckpointError(
            f"the {what} is {st.st_size / 2**20:.1f} MiB, more than the {limit / 2**20:.0f} MiB limit", path=path, field=field
        )
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as e:
        raise CheckpointError(f"cannot read the {what}: {e.strerror or e}", path=path, field=field) from None
    if len(data) > limit:
        raise CheckpointError(f"the {what} is larger than the {limit / 2**20:.0f} MiB limit", path=path, field=field)
    return data


def read_card(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a model card (``<stem>.json``; the stem or the weights' path work too).

    Raises :class:`CheckpointError` naming the file and the field for a file that is missing,
    larger than 64 MiB, not JSON, not an object, of another format or a newer format version,
    or whose kind, config, sessions, tensors or weights_sha256 are malformed.
    """
    card_path = _card_path(_stem_of(path))
    data = _read_limited(card_path, MAX_CARD_BYTES, what="model card")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"not a model card: not UTF-8 text (byte {e.start})", path=card_path) from None
    try:
        card = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"not a model card: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}", path=card_path) from None
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"not a model card: {e}", path=card_path) from None
    return _validate_card(card, card_path)


def model_card(name_or_path: str | os.PathLike, *, search: Iterable[str | os.PathLike] | None = None) -> dict[str, Any]:
    """The validated card of a checkpoint given by path or bare name (see :func:`resolve`)."""
    return read_card(_card_path(resolve(name_or_path, search)))


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


def _shape(t: torch.Tensor) -> list[int]:
    return list(t.shape)


def _compare_card_and_file(card: dict[str, Any], tensors: Mapping[str, torch.Tensor], card_path: Path, weights_name: str) -> None:
    """The card's tensor list and the weights file must agree on names, shapes and dtypes
    (checked in the card's order, so the first layer at fault is named)."""
    listed = card["tensors"]
    for name, spec in listed.items():
        if name not in tensors:
            raise CheckpointError(
                f"the card lists tensor {name!r} (shape {spec['shape']}) but {weights_name} does not hold it",
                path=card_path,
                field=f"tensors.{name}",
            )
        t = tensors[name]
        if spec["shape"] != _shape(t):
            raise CheckpointError(
                f"tensor {name!r}: the card says shape {spec['shape']} but {weights_name} holds {_shape(t)}",
                path=card_path,
                field=f"tensors.{name}",
            )
        if spec["dtype"] != _dtype_name(t.dtype):
            raise CheckpointError(
                f"tensor {name!r}: the card says dtype {spec['dtype']} but {weights_name} holds {_dtype_name(t.dtype)}",
                path=card_path,
                field=f"tensors.{name}",
            )
    for name, t in tensors.items():
        if name not in listed:
            raise CheckpointError(
                f"{weights_name} holds tensor {name!r} (shape {_shape(t)}) that the card does not list",
                path=card_path,
                field=f"tensors.{name}",
            )


def _compare_model_and_file(
    expected: Mapping[str, torch.Tensor], tensors: Mapping[str, torch.Tensor], kind: str, card_path: Path, weights_name: str
) -> None:
    for name, e in expected.items():
        if name not in tensors:
            raise CheckpointError(
                f"the {kind} model built from the card needs tensor {name!r} (shape {_shape(e)}) but {weights_name} lacks it",
                path=card_path,
                field=f"tensors.{name}",
            )
        t = tensors[name]
        if _shape(e) != _shape(t):
            raise CheckpointError(
                f"tensor {name!r}: the {kind} model built from the card has shape {_shape(e)} but {weights_name} holds {_shape(t)} "
                "(do config and sessions belong to these weights?)",
                path=card_path,
                field=f"tensors.{name}",
            )
        if e.dtype != t.dtype:
            raise CheckpointError(
                f"tensor {name!r}: the {kind} model built from the card has dtype {_dtype_name(e.dtype)} but {weights_name} holds {_dtype_name(t.dtype)}",
                path=card_path,
                field=f"tensors.{name}",
            )
    for name, t in tensors.items():
        if name not in expected:
            raise CheckpointError(
                f"{weights_name} holds tensor {name!r} (shape {_shape(t)}) that the {kind} model built from the card does not have",
                path=card_path,
                field=f"tensors.{name}",
            )


def _build(card: dict[str, Any], sessions: list[SessionInfo], card_path: Path) -> Forecaster:
    try:
        return build_model(card["kind"], sessions, **card["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"cannot build a {card['kind']} model from this config: {e}", path=card_path, field="config") from None


def load_model(
    name_or_path: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    search: Sequence[str | os.PathLike] | None = None,
) -> Forecaster:
    """Load a checkpoint saved by :func:`save_model`, by path (stem, ``.json`` or
    ``.safetensors``) or by bare name (looked up as :func:`resolve` does).

    The weights' sha256 must equal the card's, and the card's tensor list, the weights file and
    the model rebuilt from the card's kind, config and sessions must agree on every tensor name,
    shape and dtype; otherwise :class:`CheckpointError` is raised and nothing is returned. The
    model comes back in eval mode, on ``device`` if given, with the card as ``model.card``.
    Neither file is modified.
    """
    stem = resolve(name_or_path, search)
    card_path, weights_path = _card_path(stem), _weights_path(stem)
    card = read_card(card_path)
    wname = weights_path.name

    if not weights_path.is_file():
        raise CheckpointError(f"the weights file {wname} is missing next to the card", path=weights_path, field="weights")
    try:
        data = weights_path.read_bytes()  # hashed and parsed from the same bytes: no swap in between
    except OSError as e:
        raise CheckpointError(f"cannot read the weights: {e.strerror or e}", path=weights_path, field="weights") from None
    sha = hashlib.sha256(data).hexdigest()
    if sha != card["weights_sha256"].lower():
        raise CheckpointError(
            f"the weights do not match the card: {wname} has sha256 {sha[:16]}…, the card says {card['weights_sha256'][:16]}… "
            "(the weights were modified or replaced)",
            path=card_path,
            field="weights_sha256",
        )
    try:
        tensors = safetensors.torch.load(data)
    except (safetensors.SafetensorError, ValueError, TypeError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"not a readable safetensors file: {e}", path=weights_path, field="weights") from None
    del data
    _compare_card_and_file(card, tensors, card_path, wname)

    sessions = [SessionInfo(**s) for s in card["sessions"]]
    kind = card["kind"]
    # Check the architecture on the meta device first: a card's config could ask for any size,
    # and only what matches the (real, bounded) weights file is then allocated.
    try:
        with torch.device("meta"):
            skeleton = build_model(kind, sessions, **card["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"cannot build a {kind} model from this config: {e}", path=card_path, field="config") from None
    except (RuntimeError, NotImplementedError):  # a model that cannot be built on the meta device: check the real build only
        skeleton = None
    if skeleton is not None:
        _compare_model_and_file(skeleton.state_dict(), tensors, kind, card_path, wname)
        del skeleton

    model = _build(card, sessions, card_path)
    _compare_model_and_file(model.state_dict(), tensors, kind, card_path, wname)
    if "datasets" in card and card["datasets"] != model.datasets:
        raise CheckpointError(
            f"the card lists datasets {card['datasets']} but its sessions give {model.datasets}", path=card_path, field="datasets"
        )
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"the weights do not fit the model: {e}", path=card_path, field="tensors") from None
    model.eval()
    if device is not None:
        model.to(device)
    model.card = card
    return model
