"""TEST DOUBLES for the feedback/session tests (not models; never used outside tests).

- `ColourTestEncoder` (spec `test-colour`): an image is its mean colour; a text is the sum of the colour words
  in it. Deterministic and instant, so session logic is tested without loading real towers.
- `ColourCaptionerTestDouble`: a VisionModel double whose caption names the image's dominant colour, plus
  a noise word on some images (to exercise the denoiser path).
- `ScriptedChatTestDouble`: a ChatModel double returning scripted answers (or raising), recording its calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from picscope.encoders import register
from picscope.encoders.base import BaseEncoder, l2_normalise
from picscope.models.base import ChatResult, Message, Verdict, VisionBase

if TYPE_CHECKING:
    from picscope.feedback import FeedbackState
    from picscope.library import Library

COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}


class ColourTestEncoder(BaseEncoder):
    name = "test-colour-v1"
    dim = 4
    image_size = 16

    def prepare_image(self, image: Image.Image) -> Any:
        return np.asarray(image.convert("RGB").resize((16, 16)), np.float32).reshape(-1, 3).mean(axis=0) / 255.0

    def embed_prepared(self, prepared: Sequence[Any]) -> np.ndarray:
        rows = [np.array([*p, 0.1], np.float32) for p in prepared]
        return l2_normalise(np.stack(rows)) if rows else np.zeros((0, 4), np.float32)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for t in texts:
            v = np.array([0.0, 0.0, 0.0, 0.1], np.float32)
            for w in t.lower().replace(",", " ").replace(".", " ").split():
                if w in COLOURS:
                    v[:3] += COLOURS[w]
            out.append(v)
        return l2_normalise(np.stack(out))


@register("test-colour")
def _build(arg: str) -> ColourTestEncoder:
    return ColourTestEncoder()


def write_colour_images(folder: Path, per_colour: int = 8) -> dict[str, list[Path]]:
    """Images of three colour families; within a family the shade varies (so rankings are not all ties)."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[Path]] = {c: [] for c in COLOURS}
    rng = np.random.default_rng(0)
    for c, rgb in COLOURS.items():
        for i in range(per_colour):
            base = np.array(rgb) * (150 + 10 * i) + rng.integers(0, 90, 3)
            arr = np.clip(np.tile(base, (24, 24, 1)), 0, 255).astype(np.uint8)
            p = folder / f"{c}{i:02d}.png"
            Image.fromarray(arr, "RGB").save(p)
            out[c].append(p)
    return out


def colour_library(root: Path) -> Library:
    """A library of `write_colour_images` photos under `root`, indexed by the colour test encoder."""
    from picscope.library import Library

    write_colour_images(root / "photos", per_colour=6)
    library = Library.open(root / "lib", encoder="test-colour")
    library.index(root / "photos")
    return library


def ids_of_colour(lib: Library, colour: str) -> list[int]:
    """Ids of the `colour` photos among the top 18 for the word itself."""
    hits = lib.search_vector(lib.embed_texts([colour])[0], 18)
    return [h.id for h in hits if Path(h.path).name.startswith(colour)]


def start_state(lib: Library, q: str) -> FeedbackState:
    from picscope.feedback import FeedbackState

    v = lib.embed_texts([q])[0]
    return FeedbackState(q, q, v, anchor_vector=v)


class ColourCaptionerTestDouble(VisionBase):
    spec = "test-double:colour-captioner"

    def __init__(self) -> None:
        self.calls = 0

    def caption(self, image: Image.Image, style: str = "short") -> str:
        self.calls += 1
        mean = np.asarray(image.convert("RGB"), np.float32).reshape(-1, 3).mean(axis=0)
        name = list(COLOURS)[int(np.argmax(mean))]
        noise = " with a cat" if int(mean.sum()) % 3 == 0 else ""
        return f"a {name} square{noise}"

    def verify(self, image: Image.Image, questions: Sequence[str], reference: Image.Image | None = None) -> list[float]:
        return [0.5 for _ in questions]

    def judge(
        self, instruction: str, candidates: Sequence[Image.Image], reference: Image.Image | None = None
    ) -> list[Verdict]:
        return [Verdict(0.5, "test double") for _ in candidates]


class ScriptedChatTestDouble:
    """Returns `answers` in turn (a str is the raw text; an Exception instance is raised)."""

    spec = "test-double:scripted-chat"

    def __init__(self, answers: list[str | Exception]) -> None:
        self.answers = list(answers)
        self.calls: list[list[Message]] = []

    def chat(self, messages: Sequence[Message], **kw: Any) -> ChatResult:
        self.calls.append(list(messages))
        a = self.answers.pop(0) if self.answers else RuntimeError("no scripted answer left")
        if isinstance(a, Exception):
            raise a
        return ChatResult(text=a, backend=self.spec)
