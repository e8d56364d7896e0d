"""Reader for MATLAB ``.mat`` recordings: the Triplett et al. zebrafish-tectum layout and a generic
2-D activity variable; v4/v5 files through :func:`scipy.io.loadmat`, v7.3 (HDF5) files through h5py.

Triplett layout (``zf_20151104-f1.mat``):

- ``activity_matrix`` (units, time) float64: fluorescence level (dF/F-like).
- ``cell_coordinates`` (units, 2): position in the imaging plane (pixels as given).
- ``detected_assemblies`` (cell array): 1-based unit indices of each assembly.

The frame rate is not in these files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..schema import RecordingError, check_declared_size, make_recording, validate
from ._common import time_axis

TRIPLETT_CITATION = (
    "Triplett, Avitan & Goodhill, figshare doi:10.6084/m9.figshare.6943265.v1; "
    "PLoS Comput Biol 2018 doi:10.1371/journal.pcbi.1006421"
)
#: Variable names tried, in order, for a generic file when ``variable=`` is not given.
GENERIC_NAMES = ("activity", "traces", "dff", "F", "data")
#: Bytes per element of each MATLAB class (cells/structs: a lower bound of 8 per element).
_ITEMSIZE = {
    "double": 8, "single": 4, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "int32": 4, "uint32": 4,
    "int64": 8, "uint64": 8, "logical": 1, "char": 4, "cell": 8, "struct": 8, "object": 8, "sparse": 8,
}  # fmt: skip
_NUMERIC_CLASSES = {
    "double",
    "single",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "logical",
}
MAT73_PREFIX = b"MATLAB 7.3 MAT-file"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _is_v73(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(520)
    return head.startswith(MAT73_PREFIX) or head.startswith(HDF5_MAGIC) or head[512:520] == HDF5_MAGIC


class _MatSource:
    """Declared shapes and lazy loading of the variables of one MAT file (v5 or v7.3).

    Shapes are MATLAB's (rows, columns, ...) in both cases.
    """

    def __init__(self, path: Path):
        self.path = path
        self.v73 = _is_v73(path)
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.classes: dict[str, str] = {}
        if self.v73:
            import h5py

            try:
                with h5py.File(path, "r") as fh:
                    for name, item in fh.items():
                        if name.startswith("#") or not isinstance(item, h5py.Dataset):
                            continue
                        self.shapes[name] = tuple(reversed(item.shape))  # h5py shows MATLAB arrays transposed
                        cls = item.attrs.get("MATLAB_class", b"")
                        cls = cls.decode() if isinstance(cls, bytes) else str(cls)
                        if not cls:
                            cls = "cell" if item.dtype.kind == "O" else ("double" if item.dtype.kind in "fiub" else "")
                        self.classes[name] = cls
            except (OSError, RuntimeError) as exc:
                raise RecordingError(f"MATLAB v7.3 (HDF5) file cannot be read: {exc}", path=path) from None
        else:
            from scipy.io import whosmat

            try:
                for name, shape, cls in whosmat(str(path)):
                    self.shapes[name] = tuple(int(s) for s in shape)
                    self.classes[name] = cls
            except Exception as exc:  # scipy raises many types for damaged files
                raise RecordingError(f"MATLAB file cannot be read: {type(exc).__name__}: {exc}", path=path) from None

    def listing(self) -> str:
        if not self.shapes:
            return "no variables"
        return ", ".join(f"{n} {self.classes.get(n, '?')} {'x'.join(map(str, s))}" for n, s in self.shapes.items())

    def load(self, names: list[str]) -> dict[str, Any]:
        """Load ``names`` after checking each declared size; numeric arrays keep their MATLAB shape."""
        for name in names:
            check_declared_size(self.shapes[name], _ITEMSIZE.get(self.classes[name], 8), path=self.path, field=name)
        if self.v73:
            return self._load_h5(names)
        from scipy.io import loadmat

        try:
            raw = loadmat(str(self.path), squeeze_me=True, variable_names=names)
        except Exception as exc:
            raise RecordingError(f"MATLAB file cannot be read: {type(exc).__name__}: {exc}", path=self.path) from None
        out: dict[str, Any] = {}
        for name in names:
            value = raw[name]
            if (
                isinstance(value, np.ndarray)
                and value.dtype.kind in "fiub"
                and value.size == int(np.prod(self.shapes[name]))
            ):
                value = value.reshape(self.shapes[name])  # undo squeeze_me for 1-row or 1-unit arrays
            out[name] = value
        return out

    def _load_h5(self, names: list[str]) -> dict[str, Any]:
        import h5py

        out: dict[str, Any] = {}
        with h5py.File(self.path, "r") as fh:
            for name in names:
                item = fh[name]
                if item.dtype.kind == "O":  # cell array: object references into #refs#
                    refs = np.asarray(item[()]).T.ravel()
                    cells = []
                    for ref in refs:
                        target = fh[ref]
                        check_declared_size(target.shape, target.dtype.itemsize, path=self.path, field=name)
                        cells.append(np.asarray(target[()]).T)
                    arr = np.empty(len(cells), dtype=object)
                    arr[:] = cells
                    out[name] = arr
                else:
                    out[name] = np.asarray(item[()]).T
        return out


def _assemblies(value: Any, n_unit: int, *, path: Path) -> list[np.ndarray]:
    """``detected_assemblies`` as a list of 0-based unit index arrays."""
    if isinstance(value, np.ndarray) and value.dtype == object:
        cells = list(value.ravel())
    else:
        cells = [value]
    out = []
    for k, cell in enumerate(cells):
        idx = np.asarray(cell).ravel()
        if idx.size and idx.dtype.kind not in "fiu":
            raise RecordingError(
                f"assembly {k + 1} holds {idx.dtype} values, not unit indices", path=path, field="detected_assemblies"
            )
        idx = idx.astype(np.float64)
        if idx.size and (np.any(idx != np.round(idx)) or idx.min() < 1 or idx.max() > n_unit):
            raise RecordingError(
                f"assembly {k + 1} has indices outside 1..{n_unit} (they are 1-based unit numbers)",
                path=path,
                field="detected_assemblies",
            )
        out.append(idx.astype(np.int64) - 1)
    return out


def read_matlab(
    path: str | os.PathLike,
    *,
    sampling_rate_hz: float | None = None,
    species: str = "zebrafish",
    session: str | None = None,
    variable: str | None = None,
) -> xr.Dataset:
    """Read a MATLAB recording (v4/v5 with scipy, v7.3 with h5py).

    Parameters
    ----------
    path
        The ``.mat`` file.
    sampling_rate_hz
        Frames per second. The files do not hold it; without it ``time`` is the frame index,
        ``attrs["sampling_rate_hz"]`` is 1.0 and ``attrs["time_is_frame_index"]`` is 1.
    species
        Species name (default ``"zebrafish"``).
    session
        Session name; defaults to the file name without suffix.
    variable
        The activity variable for a generic file. By default: ``activity_matrix`` (Triplett layout),
        else the first of ``activity, traces, dff, F, data`` present.

    Returns
    -------
    xarray.Dataset
        ``activity`` (T, U) float32.

        *Triplett layout*: ``activity_matrix`` is (units, time) and is transposed; units
        ``"dF/F"``; ``region`` ``"tectum"``; ``x``, ``y`` from ``cell_coordinates`` in the file's own
        units (pixels; coord attrs ``units="pixel"``); assemblies as a dimension ``assembly`` (the
        assembly numbers 1..K) with the boolean coord ``in_assembly`` (unit, assembly) (a unit can
        be in several or none) and the per-unit string coord ``assemblies`` (e.g. ``"1,4"``, ``""``
        for none).

        *Generic*: the variable must be 2-D numeric. Orientation rule: recordings have more frames
        than units, so the longer axis is time; a square array is taken as (time, unit). Units are
        ``"dF/F"`` for a variable named ``dff`` and ``"a.u."`` otherwise.

    Raises
    ------
    RecordingError
        No activity variable (the message lists the variables found), a variable that is not 2-D
        numeric, shapes that disagree, assembly indices out of range.

    Examples
    --------
    >>> ds = read_matlab("zebrafish_tectum_triplett2018/zf_20151104-f1.mat")  # doctest: +SKIP
    >>> ds.sizes["unit"], ds.sizes["assembly"]  # doctest: +SKIP
    (114, 5)
    """
    p = Path(path)
    src = _MatSource(p)
    t_attrs: dict[str, Any]
    if variable is not None and variable not in src.shapes:
        raise RecordingError(f"variable not found; the file holds {src.listing()}", path=p, field=variable)
    name = variable
    if name is None:
        name = (
            "activity_matrix"
            if "activity_matrix" in src.shapes
            else next((n for n in GENERIC_NAMES if n in src.shapes), None)
        )
    if name is None:
        raise RecordingError(
            f"no activity variable (looked for activity_matrix, {', '.join(GENERIC_NAMES)}; pass variable=); "
            f"the file holds {src.listing()}",
            path=p,
            field="activity",
        )
    shape, cls = src.shapes[name], src.classes.get(name, "")
    if len(shape) != 2 or cls not in _NUMERIC_CLASSES:
        raise RecordingError(
            f"must be a 2-D numeric matrix, got {cls or 'unknown class'} of shape {shape}", path=p, field=name
        )
    triplett = name == "activity_matrix"
    extra = [n for n in ("cell_coordinates", "detected_assemblies") if triplett and n in src.shapes]
    data = src.load([name, *extra])
    raw = np.asarray(data[name])
    attrs: dict[str, Any] = {"mat_variable": name, "mat_version": "7.3" if src.v73 else "5"}
    if triplett:
        activity = raw.T  # (units, time) -> (time, units)
        attrs["orientation"] = "activity_matrix is (unit, time); transposed"
    elif raw.shape[0] >= raw.shape[1]:
        activity = raw
        attrs["orientation"] = f"{name} taken as (time, unit): the longer axis is time"
    else:
        activity = raw.T
        attrs["orientation"] = f"{name} transposed from (unit, time): the longer axis is time"
    n_time, n_unit = activity.shape
    time, rate, t_attrs = time_axis(n_time, sampling_rate_hz, path=p)
    attrs.update(t_attrs)

    x = y = z = None
    if "cell_coordinates" in data:
        coords = np.asarray(data["cell_coordinates"], dtype=np.float64)
        if coords.ndim != 2 or coords.shape[0] != n_unit or coords.shape[1] not in (2, 3):
            raise RecordingError(
                f"must be ({n_unit} units, 2 or 3), got shape {coords.shape}", path=p, field="cell_coordinates"
            )
        x, y = coords[:, 0], coords[:, 1]
        z = coords[:, 2] if coords.shape[1] == 3 else None
        attrs["position_units"] = "pixel (cell_coordinates as given; the µm scale is not in the file)"

    ds = make_recording(
        activity,
        sampling_rate_hz=rate,
        time=time,
        species=species,
        session=session or p.stem,
        region=np.full(n_unit, "tectum" if triplett else "", dtype=object),
        x=x,
        y=y,
        z=z,
        units="dF/F" if (triplett or name.lower() == "dff") else "a.u.",
        source=str(p),
        citation=TRIPLETT_CITATION if triplett else "",
        attrs=attrs,
        path=p,
    )
    for c in ("x", "y", "z"):
        if c in ds.coords and x is not None:
            ds[c].attrs["units"] = "pixel"
    if "detected_assemblies" in data:
        groups = _assemblies(data["detected_assemblies"], n_unit, path=p)
        member = np.zeros((n_unit, len(groups)), dtype=bool)
        for k, idx in enumerate(groups):
            member[idx, k] = True
        names = np.array([",".join(str(k + 1) for k in np.flatnonzero(row)) for row in member], dtype=str)
        ds = ds.assign_coords(
            assembly=(
                "assembly",
                np.arange(1, len(groups) + 1),
                {"description": "assembly number in detected_assemblies"},
            ),
            in_assembly=(("unit", "assembly"), member, {"description": "unit belongs to the assembly"}),
            assemblies=("unit", names, {"description": "comma-separated assembly numbers of each unit"}),
        )
        ds = validate(ds, path=p)
    return ds
