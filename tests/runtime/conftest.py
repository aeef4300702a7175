"""The runtime runs what the export layer writes: reuse its tiny model folders and exports."""

from tests.export.conftest import exported, model_dirs  # noqa: F401
