"""The `DualEncoder` interface: images and texts into one L2-normalised vector space."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from picscope.vectors import unit

if TYPE_CHECKING:
    from PIL import Image  # imported where an image is prepared: a text search never loads PIL

    from picscope.encoders.querybank import QueryBank


@runtime_checkable
class DualEncoder(Protocol):
    """A text/image encoder pair sharing one space. Vectors are float32, L2-normalised, shape (n, dim).

    `name` identifies the weights exactly (a library refuses to mix vectors of different names).
    `image_size` is the side the image tower wants; decoders may downscale JPEGs to it early.
    `prepare_image` runs in decode worker threads (resize, normalise); `embed_prepared` batches them.
    `vector_parts` ({name: (start, stop)}, see `BaseEncoder`; None for most) lets relevance feedback weight the parts
    of a concatenated vector apart; encoders without parts are treated as one space.
    `codec_path` (None for most) names a compact vector codec that libraries store this encoder's vectors with.
    `querybank` (None for most) is the encoder's query bank: text searches rank by score minus each photo's
    normaliser (`picscope.encoders.querybank`).
    `embed_prepared_grid` also returns the image network's 7×7 cells when the encoder runs EfficientNet-Lite0
    (`bundled`, `labels`), else None: the indexer keeps them for the verifier re-rank.
    """

    name: str
    dim: int
    image_size: int
    codec_path: Path | None
    vector_parts: dict[str, tuple[int, int]] | None

    @property
    def querybank(self) -> QueryBank | None: ...

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...

    def prepare_image(self, image: Image.Image) -> Any: ...

    def embed_prepared(self, prepared: Sequence[Any]) -> np.ndarray: ...

    def embed_prepared_grid(self, prepared: Sequence[Any]) -> tuple[np.ndarray, np.ndarray | None]: ...


class BaseEncoder:
    """Default plumbing: `embed_images` = prepare each image, then one batched `embed_prepared`."""

    name: str = "base"
    dim: int = 0
    image_size: int = 224
    # optional: named column ranges of a vector whose parts mean different things (relevance feedback may weight
    # them apart); None when the vector is one undivided space, as with CLIP
    vector_parts: dict[str, tuple[int, int]] | None = None
    # optional: a `picscope.store.compact.VectorCodec` file that new libraries store this encoder's vectors with
    codec_path: Path | None = None
    # optional: a `picscope.encoders.querybank.QueryBank` of this encoder's text vectors (hubness correction)
    querybank: QueryBank | None = None

    def prepare_image(self, image: Image.Image) -> Any:
        return image

    def embed_prepared(self, prepared: Sequence[Any]) -> np.ndarray:
        raise NotImplementedError

    def embed_prepared_grid(self, prepared: Sequence[Any]) -> tuple[np.ndarray, np.ndarray | None]:
        """`embed_prepared` plus EfficientNet-Lite0's (n, 49, 1280) head cells when the encoder computes them in the
        same pass (the verifier's input, kept by the indexer); None when it does not run that network."""
        return self.embed_prepared(prepared), None

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self.embed_prepared([self.prepare_image(im) for im in images])

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows of `x` as float32 unit vectors (`picscope.vectors.unit`, kept under this name for the encoders)."""
    return unit(np.asarray(x, dtype=np.float32))
