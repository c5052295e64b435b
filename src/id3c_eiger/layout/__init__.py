"""The file layouts, defined once for the writers and every reader: the DECTRIS master/data pair
the detector's FileWriter writes (``dectris``) and the single file of the ``HDF1:`` NDFileHDF5
plugin (``ndfile``). Both put the frames at ``DATA_DATASET``; ``read_metadata`` reads either."""

from .dectris import *  # noqa: F403  (names of the DECTRIS layout, as before the split)
from .ndfile import (  # noqa: F401  (read_metadata here reads either layout)
    ARRAY_ATTRIBUTES,
    DETECTOR_DATA,
    DETECTOR_ND_ATTRIBUTES,
    EIGER_ATTRIBUTES,
    ND_ATTRIBUTES,
    NDAttributeSpec,
    NDFile,
    camera_attributes,
    is_ndfile,
    read_metadata,
)
