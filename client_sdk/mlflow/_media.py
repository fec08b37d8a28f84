"""Files for ``log_dict``, ``log_figure``, ``log_image`` and ``log_table``, byte for byte as
MLflow writes them. numpy, Pillow, matplotlib, pandas and PyYAML are imported only by the call
that needs them, and only if the caller's program has them installed.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bridge.errors import MlflowException

COMPRESSED_IMAGE_SIZE = 256
_TABLE_FORBIDDEN = ('"', "'", ",", ":", "[", "]", "{", "}")


def write_figure(
    path: Path, figure: Any, artifact_file: str, save_kwargs: Mapping[str, Any] | None
) -> None:
    """Saves a matplotlib (or plotly) figure in the format its file extension names."""
    kwargs = dict(save_kwargs or {})
    if "matplotlib" in sys.modules:
        import matplotlib.figure

        if isinstance(figure, matplotlib.figure.Figure):
            figure.savefig(path, **kwargs)
            return
    if "plotly" in sys.modules:
        import plotly

        if isinstance(figure, plotly.graph_objects.Figure):
            extension = os.path.splitext(artifact_file)[1]
            if extension == ".html":
                kwargs.setdefault("include_plotlyjs", "cdn")
                kwargs.setdefault("auto_open", False)
                figure.write_html(str(path), **kwargs)
                return
            if extension in (".png", ".jpeg", ".webp", ".svg", ".pdf"):
                figure.write_image(str(path), **kwargs)
                return
            raise TypeError(f"Unsupported file extension for plotly figure: '{extension}'")
    raise TypeError(f"Unsupported figure object type: '{type(figure)}'")


def _normalize_to_uint8(x: Any) -> Any:
    import numpy as np

    is_int = np.issubdtype(x.dtype, np.integer)
    high = 255 if is_int else 1
    if x.min() < 0 or x.max() > high:
        if is_int:
            raise ValueError(
                "Integer pixel values out of acceptable range [0, 255]. "
                f"Found minimum value {x.min()} and maximum value {x.max()}. "
                "Ensure all pixel values are within the specified range."
            )
        warnings.warn(
            "Float pixel values out of acceptable range [0.0, 1.0]. "
            f"Found minimum value {x.min()} and maximum value {x.max()}. "
            "Rescaling values to [0.0, 1.0] with min/max scaler.",
            stacklevel=2,
        )
        x = (x - x.min()) / (x.max() - x.min())
    if not is_int:
        x = x * 255
    return x.astype(np.uint8)


def to_pil(image: Any) -> Any:
    """A PIL image from a numpy array (MLflow's rules for dtypes and channels) or a PIL image."""
    if type(image).__module__ == "numpy":
        import numpy as np

        if isinstance(image, np.ndarray):
            from PIL import Image

            kinds = {"b": "bool", "i": "signed integer", "u": "unsigned integer", "f": "floating"}
            if image.dtype.kind not in kinds:
                raise TypeError(
                    f"Invalid array data type: '{image.dtype}'. "
                    f"Must be one of {list(kinds.values())}"
                )
            if image.ndim not in (2, 3):
                raise ValueError(
                    f"`image` must be a 2D or 3D array but got image shape: {image.shape}"
                )
            if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
                raise ValueError(
                    f"Invalid channel length: {image.shape[2]}. Must be one of [1, 3, 4]"
                )
            if image.ndim == 3 and image.shape[2] == 1:
                image = image[:, :, 0]
            return Image.fromarray(_normalize_to_uint8(image))
    import PIL.Image

    if not isinstance(image, PIL.Image.Image):
        raise TypeError(
            f"Unsupported image object type: {type(image)}. "
            "`image` must be one of numpy.ndarray, PIL.Image.Image, and mlflow.Image."
        )
    return image


def compress_image(image: Any) -> Any:
    """The thumbnail MLflow stores beside an image logged by key."""
    width, height = image.size
    if width > height:
        new_width = COMPRESSED_IMAGE_SIZE
        new_height = int(height * (new_width / width))
    else:
        new_height = COMPRESSED_IMAGE_SIZE
        new_width = int(width * (new_height / height))
    return image.resize((new_width, new_height))


def table_frame(data: Any, artifact_file: str) -> Any:
    """The pandas DataFrame ``log_table`` writes (checks and conversion as MLflow's)."""
    import pandas as pd

    for char in _TABLE_FORBIDDEN:
        if char in artifact_file:
            raise ValueError(f"The artifact_file contains forbidden character: {char}")
    if not artifact_file.endswith((".json", ".parquet")):
        raise ValueError(
            f"Invalid artifact file path '{artifact_file}'. Please ensure the file you are "
            "trying to log as a table has a file name with either '.json' "
            "or '.parquet' extension."
        )
    if not isinstance(data, pd.DataFrame | dict):
        raise MlflowException.invalid_parameter_value(
            "data must be a pandas.DataFrame or a dictionary"
        )
    if isinstance(data, dict):
        try:
            data = pd.DataFrame(data)
        except ValueError:
            data = pd.DataFrame([data])
    return data


def write_table(path: Path, frame: Any, artifact_file: str) -> None:
    """Writes a table as MLflow does (JSON in "split" orientation, or parquet)."""
    try:
        if artifact_file.endswith(".json"):
            frame.to_json(path, orient="split", index=False, date_format="iso")
        else:
            frame.to_parquet(path, index=False)
    except Exception as exc:
        raise MlflowException(
            f"Failed to save {frame} as table as the data is not JSON serializable. Error: {exc}"
        ) from exc


def append_table(previous: Any, frame: Any) -> Any:
    """A table logged again to the same file of a run extends it, as in MLflow."""
    import pandas as pd

    return pd.concat([previous, frame], ignore_index=True)
