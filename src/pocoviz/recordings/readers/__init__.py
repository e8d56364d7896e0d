"""One reader per format; each returns a recording that passes :func:`pocoviz.recordings.schema.validate`.

==================  =========================================  ======================================
module              function                                   format
==================  =========================================  ======================================
``flavell``         :func:`~.flavell.read_flavell_hdf5`        Flavell-lab C. elegans HDF5 + labels CSV
``matlab``          :func:`~.matlab.read_matlab`               MATLAB v5 / v7.3 (Triplett layout, generic)
``nwb``             :func:`~.nwb.read_nwb`                     NWB ``RoiResponseSeries``
``suite2p``         :func:`~.suite2p.read_suite2p`             suite2p ``plane0`` folders
``npy``             :func:`~.npy.read_numpy`                   NumPy ``.npy`` / ``.npz``
``xarray_io``       :func:`~.xarray_io.read_netcdf`,           netCDF, Zarr (files xarray writes)
                    :func:`~.xarray_io.read_zarr`
``zarr_array``      :func:`~.zarr_array.read_zarr_array`       a bare Zarr (time, unit) array + sidecar
==================  =========================================  ======================================

Use :func:`pocoviz.recordings.io.open_recording`, which picks the reader from the file's content.
Readers never write, and never run pickles: suite2p's ``stat.npy`` (``load_positions=True``) is read by an
unpickler that builds only numpy arrays, scalars and containers.
Submodules are imported lazily by ``io`` so that optional heavy imports (pynwb) cost nothing until used.
"""
