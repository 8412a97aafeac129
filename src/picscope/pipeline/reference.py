"""A request's reference photo: a library id, an indexed path, another file, or an image in memory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from picscope.errors import ImageNotFoundError
from picscope.imageio import load_image
from picscope.pipeline.captions import VIEW_SIZE, load_view

if TYPE_CHECKING:
    from picscope.library import Library


@dataclass
class Reference:
    image: Image.Image  # shrunk for vision models
    vector: np.ndarray
    id: int | None  # set when the photo is in the library (then it is excluded from the results)
    source: str

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source}


def resolve_reference(library: Library, ref: int | str | Path | Image.Image) -> Reference:
    if isinstance(ref, Image.Image):
        img = ref.convert("RGB")
        vec, fid = library.resolve_image(img)
        img.thumbnail((VIEW_SIZE, VIEW_SIZE))
        return Reference(img, vec, fid, "image")
    if isinstance(ref, int | np.integer) or (isinstance(ref, str) and ref.isdigit() and not os.path.exists(ref)):
        fid = int(ref)
        try:
            img = load_view(library, fid)
        except KeyError:
            raise ImageNotFoundError(f"no indexed image with id {fid}") from None
        vec, _ = library.resolve_image(fid)
        return Reference(img, vec, fid, f"library id {fid}")
    path = os.path.abspath(os.path.expanduser(os.fspath(ref)))
    vec, fid = library.resolve_image(path)
    img = load_image(path, max_pixels=library.config.index.max_pixels, target_size=VIEW_SIZE)
    img.thumbnail((VIEW_SIZE, VIEW_SIZE))
    return Reference(img.convert("RGB"), vec, fid, path)
