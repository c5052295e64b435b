"""The single file ADCore's NDFileHDF5 plugin (``HDF1:``) writes in its default XML layout.

One file per capture (no external links): the frames in ``/entry/instrument/detector/data``
(n, H, W), one frame per chunk, with ``/entry/data/data`` a hard link to it, so readers of either
layout find the frames at ``DATA_DATASET``. With ``StoreAttr`` Yes, each NDAttribute the camera
attaches (ADEiger's ``eigerAttributes.xml``) and NDFileHDF5's own four become a dataset of one value
per frame in ``/entry/instrument/NDAttributes``; ``ColorMode`` goes to the detector's NDAttributes.
Text attributes are fixed-length ASCII, as NDFileHDF5 writes them. The layout is taken from
``NDFileHDF5LayoutXML.cpp`` (``DEFAULT_LAYOUT``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from .dectris import DATA_GROUP, DETECTOR, SeriesMetadata, ascii_attr
from .dectris import read_metadata as _dectris

DETECTOR_DATA = f"{DETECTOR}/data"  # the frames; DATA_DATASET is a hard link to it
ND_ATTRIBUTES = "/entry/instrument/NDAttributes"  # the default place of NDAttributes
DETECTOR_ND_ATTRIBUTES = f"{DETECTOR}/NDAttributes"  # ColorMode, as the default layout says
PERFORMANCE = "/entry/instrument/performance"

_NX_CLASSES = {
    "/entry": "NXentry",
    "/entry/instrument": "NXinstrument",
    DETECTOR: "NXdetector",
    DETECTOR_ND_ATTRIBUTES: "NXcollection",
    ND_ATTRIBUTES: "NXcollection",
    DATA_GROUP: "NXdata",
}


@dataclass(frozen=True)
class NDAttributeSpec:
    """One NDAttribute of the camera: its name, HDF5 type and what it means in master terms."""

    name: str
    dtype: str  # numpy dtype string; "S" for text
    source: str  # the driver parameter (eigerAttributes.xml "source")
    field: str | None  # the DECTRIS metadata field holding the same value, if any


# ADEiger's iocEiger2/eigerAttributes.xml, in its order; SI units as the driver reports them.
EIGER_ATTRIBUTES = (
    NDAttributeSpec("DetectorDescription", "S", "DESCRIPTION", "description"),
    NDAttributeSpec("DetectorSerialNumber", "S", "SERIAL_NUMBER", "detector_number"),
    NDAttributeSpec("DetectorSoftwareVersion", "S", "SW_VERSION", "software_version"),
    NDAttributeSpec("DetectorDistance", "f8", "DET_DIST", "detector_distance"),
    NDAttributeSpec("CountrateCutoff", "i4", "COUNT_CUTOFF", "countrate_correction_count_cutoff"),
    NDAttributeSpec("SensorThickness", "f8", "SENSOR_THICKNESS", "sensor_thickness"),
    NDAttributeSpec("SensorMaterial", "S", "SENSOR_MATERIAL", "sensor_material"),
    NDAttributeSpec("BeamCenterX", "f8", "BEAM_CENTER_X", "beam_center_x"),
    NDAttributeSpec("BeamCenterY", "f8", "BEAM_CENTER_Y", "beam_center_y"),
    NDAttributeSpec("XPixelSize", "f8", "X_PIXEL_SIZE", "x_pixel_size"),
    NDAttributeSpec("YPixelSize", "f8", "Y_PIXEL_SIZE", "y_pixel_size"),
    NDAttributeSpec("Wavelength", "f8", "WAVELENGTH", "incident_wavelength"),
    NDAttributeSpec("CountTime", "f8", "ACQ_TIME", "count_time"),
    NDAttributeSpec("FrameTime", "f8", "ACQ_PERIOD", "frame_time"),
    NDAttributeSpec("PixelMaskApplied", "i4", "PIXEL_MASK_APPLIED", None),
    NDAttributeSpec("OmegaStart", "f8", "OMEGA", None),
    NDAttributeSpec("OmegaIncrement", "f8", "OMEGA_INCR", None),
)
# What NDFileHDF5 adds of every NDArray when it stores attributes.
ARRAY_ATTRIBUTES = (
    NDAttributeSpec("NDArrayUniqueId", "i4", "uniqueId", None),
    NDAttributeSpec("NDArrayTimeStamp", "f8", "timeStamp", None),
    NDAttributeSpec("NDArrayEpicsTSSec", "u4", "epicsTS.secPastEpoch", None),
    NDAttributeSpec("NDArrayEpicsTSnSec", "u4", "epicsTS.nsec", None),
)
_TEXT_SIZE = 256  # NDFileHDF5 stores NDAttribute strings fixed-length, at most this long


def camera_attributes(metadata: SeriesMetadata) -> dict[str, Any]:
    """The values ADEiger's camera attaches to each NDArray, from the series' settings (text as
    ASCII bytes; no goniometer, so the omega angles are 0)."""
    values: dict[str, Any] = {"PixelMaskApplied": 1, "OmegaStart": 0.0, "OmegaIncrement": 0.0}
    for spec in EIGER_ATTRIBUTES:
        if spec.field is not None:
            value = getattr(metadata, spec.field)
            values[spec.name] = value.encode("ascii") if isinstance(value, str) else value
    return values


def is_ndfile(f: h5py.File) -> bool:
    """Whether ``f`` is in NDFileHDF5's default layout (frames in the detector group, no DECTRIS
    ``detectorSpecific``)."""
    return DETECTOR_DATA in f and f"{DETECTOR}/detectorSpecific" not in f


def _ensure_group(f: h5py.File, path: str) -> h5py.Group:
    group = f.require_group(path)
    if path in _NX_CLASSES and "NX_class" not in group.attrs:
        ascii_attr(group, "NX_class", _NX_CLASSES[path])
    return group


def _attribute_dataset(group: h5py.Group, spec: NDAttributeSpec) -> h5py.Dataset:
    dtype = h5py.string_dtype("ascii", _TEXT_SIZE) if spec.dtype == "S" else np.dtype(spec.dtype)
    dataset = group.create_dataset(spec.name, shape=(0,), maxshape=(None,), chunks=(16,),
                                   dtype=dtype)
    ascii_attr(dataset, "NDAttrName", spec.name)
    ascii_attr(dataset, "NDAttrSourceType", "NDAttrSourceParam")
    ascii_attr(dataset, "NDAttrSource", spec.source)
    return dataset


class NDFile:
    """One NDFileHDF5 file open for writing: frames appended as direct chunks, NDAttributes one
    value per frame. Refuses (FileExistsError) to replace an existing file."""

    def __init__(self, path: str | os.PathLike[str], frame_shape: tuple[int, int],
                 dtype: np.dtype, filters: dict[str, Any], store_attributes: bool,
                 swmr: bool) -> None:
        self.file = h5py.File(path, "w-", libver="latest" if swmr else "earliest")
        try:
            f = self.file
            for group in (DETECTOR, DETECTOR_ND_ATTRIBUTES, ND_ATTRIBUTES, PERFORMANCE):
                _ensure_group(f, group)
            _ensure_group(f, "/entry/instrument")
            _ensure_group(f, "/entry")
            self.data = f.create_dataset(DETECTOR_DATA, shape=(0, *frame_shape),
                                         maxshape=(None, *frame_shape), chunks=(1, *frame_shape),
                                         dtype=dtype, **filters)
            self.data.attrs.create("signal", np.int32(1))
            _ensure_group(f, DATA_GROUP)["data"] = self.data  # the default layout's hardlink
            self.attributes: dict[str, h5py.Dataset] = {}
            if store_attributes:
                group = f[ND_ATTRIBUTES]
                for spec in (*EIGER_ATTRIBUTES, *ARRAY_ATTRIBUTES):
                    self.attributes[spec.name] = _attribute_dataset(group, spec)
                color = NDAttributeSpec("ColorMode", "i4", "colorMode", None)
                self.attributes[color.name] = _attribute_dataset(f[DETECTOR_ND_ATTRIBUTES], color)
            self._attribute_dtypes = {name: d.dtype for name, d in self.attributes.items()}
            if swmr:
                f.swmr_mode = True
        except BaseException:
            self.file.close()
            raise

    @property
    def n_frames(self) -> int:
        """Frames in the file."""
        return self.data.shape[0]

    def append(self, n: int, chunk: Callable[[int], bytes], mask: int,
               attributes: dict[str, Any]) -> int:
        """Append ``n`` precompressed frames (``chunk(k)`` gives the k-th, with filter ``mask``)
        and their NDAttributes (by name: ``n`` values each); flushed before returning. An OSError
        partway keeps the frames before it, each with its attributes; returns the frames
        appended."""
        start = self.n_frames
        frame_shape = self.data.shape[1:]
        self.data.resize((start + n, *frame_shape))
        written = 0
        try:
            for k in range(n):
                self.data.id.write_direct_chunk((start + k, 0, 0), chunk(k), mask)
                written += 1
        finally:
            if written < n:
                self.data.resize((start + written, *frame_shape))
            if self.attributes:
                self._append_attributes(start, written, attributes)
            self.file.flush()
        return written

    def _append_attributes(self, start: int, n: int, attributes: dict[str, Any]) -> None:
        """Each NDAttribute's ``n`` values at ``start``, through h5py's low-level calls: its
        ``dataset[...] = `` costs ~80 us a call, 2 ms a frame for the 22 attributes, and an
        IOC writing one frame per point waits for it."""
        memory = h5py.h5s.create_simple((n,)) if n else None
        for name, dataset in self.attributes.items():
            dataset.id.set_extent((start + n,))
            if n:
                space = dataset.id.get_space()
                space.select_hyperslab((start,), (n,))
                values = np.asarray(attributes[name][:n], dtype=self._attribute_dtypes[name])
                dataset.id.write(memory, space, values)

    def close(self) -> None:
        """Close the file."""
        self.file.close()


def read_metadata(f: h5py.File) -> dict[str, Any]:
    """The metadata of a file of either layout by DECTRIS field name; fields it lacks are left
    out. Of an NDFileHDF5 file: the first frame's NDAttributes, the bit depth of its data type,
    and ``nimages`` its frames (one trigger), since the file claims just the frames it holds."""
    if not is_ndfile(f):
        return _dectris(f)
    data = f[DETECTOR_DATA]
    values: dict[str, Any] = {
        "bit_depth_image": data.dtype.itemsize * 8,
        "y_pixels_in_detector": data.shape[1],
        "x_pixels_in_detector": data.shape[2],
        "nimages": data.shape[0],
        "ntrigger": 1,
    }
    for spec in EIGER_ATTRIBUTES:
        path = f"{ND_ATTRIBUTES}/{spec.name}"
        if spec.field is None or path not in f or f[path].shape[0] == 0:
            continue
        value = f[path][0]
        values[spec.field] = value.decode() if isinstance(value, bytes) else value
    return values

