"""A ``.keras`` file that says what it predicts: the class names and the input it expects.

Keras writes a ``metadata.json`` into every ``.keras`` file (its version, the date)
and never reads it back, so hpsearch adds an ``"hpsearch"`` entry there::

    unzip -p model.keras metadata.json
    python -c "from hpsearch.model.export import read_metadata; print(read_metadata('model.keras'))"

The model predicts probabilities in the order of ``class_names``: ``argmax``
index ``i`` is ``class_names[i]`` (for an image folder, the folder's name).
It takes raw images, ``uint8`` in 0..255 (the rescaling is inside the model; the
digits data are scaled to 0..255 as well, not scikit-learn's 0..16).
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

KEY = "hpsearch"
_METADATA = "metadata.json"  # Keras's own entry in the .keras zip


def model_metadata(
    class_names: Sequence[str], input_shape: Sequence[int], **about: Any
) -> dict[str, Any]:
    """What a user needs to feed the model and read its output."""
    return {
        "class_names": [str(name) for name in class_names],
        "input": {"shape": [int(d) for d in input_shape], "dtype": "uint8", "range": [0, 255]},
        "output": "probabilities, one per class, in the order of class_names",
        **about,
    }


def save_model(model, path: str | Path, metadata: dict[str, Any]) -> None:
    """``model.save(path)`` with ``metadata`` added to the file's ``metadata.json``."""
    model.save(path)
    add_metadata(path, metadata)


def add_metadata(path: str | Path, metadata: dict[str, Any]) -> None:
    """Put ``metadata`` under ``"hpsearch"`` in the ``metadata.json`` of the ``.keras`` file."""
    path = Path(path)
    with zipfile.ZipFile(path) as source:
        entries = [(info, source.read(info)) for info in source.infolist()]
    written = tempfile.NamedTemporaryFile(dir=path.parent, suffix=".keras", delete=False)
    written.close()
    try:
        with zipfile.ZipFile(written.name, "w", zipfile.ZIP_DEFLATED) as target:
            for info, data in entries:
                if info.filename == _METADATA:
                    keras_own = json.loads(data or b"{}")
                    data = json.dumps({**keras_own, KEY: metadata}, indent=2).encode()
                target.writestr(info, data)
            if _METADATA not in {info.filename for info, _ in entries}:
                target.writestr(_METADATA, json.dumps({KEY: metadata}, indent=2))
        os.replace(written.name, path)
    finally:
        if os.path.exists(written.name):
            os.unlink(written.name)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``"hpsearch"`` entry of a ``.keras`` file's metadata; empty if it has none."""
    with zipfile.ZipFile(path) as archive:
        if _METADATA not in archive.namelist():
            return {}
        return json.loads(archive.read(_METADATA) or b"{}").get(KEY, {})
