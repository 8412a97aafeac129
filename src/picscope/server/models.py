"""Typed request and response bodies of the REST API (they make the OpenAPI document)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

MAX_QUERY = 1000  # characters; the server's setting can only lower it
MAX_K = 500



def digits_only(value: Any) -> Any:
    """Query and path numbers are plain digits: '9', not '9\t', ' 9', '+9' or '9.0' (lax parsing would take them)."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("must be a whole number written with digits only")
    return value


Digits = BeforeValidator(digits_only)
Turn = Annotated[str, Field(min_length=1, max_length=MAX_QUERY, pattern=r"\S")]
LibraryId = Annotated[int, Field(ge=1, le=2**62)]


class ErrorBody(BaseModel):
    detail: str = Field(description="what went wrong and what to do about it")
    code: str = Field(description="a stable machine-readable code, e.g. not_found, busy, too_large")


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str


class LibraryStatusOut(BaseModel):
    path: str
    encoder: str | None
    encoder_name: str | None
    store: str
    dim: int | None
    files: int
    errors: int
    stale: int
    vectors: int
    roots: list[str]
    sessions: int
    uploads: int
    thumbnail_cache: str | None = Field(None, description="the on-disk thumbnail cache (None: not writable)")


class Reference(BaseModel):
    """A reference photo: a library image (`id`) or an uploaded one (`upload`). Exactly one of them."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: int | None = Field(None, ge=1, le=2**62, description="library id of an indexed image")
    upload: str | None = Field(None, pattern=r"^[0-9a-f]{32}$", description="id returned by POST /api/uploads")

    @model_validator(mode="after")
    def _one(self) -> Reference:
        if (self.id is None) == (self.upload is None):
            raise ValueError("give exactly one of id or upload")
        return self


class QueryTermIn(BaseModel):
    """A query-arithmetic term: text, a library image (`id`) or an uploaded photo (`upload`), with a weight."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str | None = Field(None, min_length=1, max_length=MAX_QUERY, pattern=r"\S")
    id: int | None = Field(None, ge=1, le=2**62, description="library id of an indexed image")
    upload: str | None = Field(None, pattern=r"^[0-9a-f]{32}$", description="id returned by POST /api/uploads")
    weight: float = Field(1.0, gt=0, le=100, description="how strongly the term pulls (added) or pushes (subtracted)")

    @model_validator(mode="after")
    def _one(self) -> QueryTermIn:
        if sum(v is not None for v in (self.text, self.id, self.upload)) != 1:
            raise ValueError("give exactly one of text, id or upload")
        return self


# A term is an object, or a string: "roof", "2:night" (weight 2) or "id:12" (never a file path on the server).
TermIn = QueryTermIn | Annotated[str, Field(min_length=1, max_length=MAX_QUERY, pattern=r"\S")]


class SearchRequest(BaseModel):
    """Any kind of search: text; text + reference photo ("like this, but …"); text + dialogue turns."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str = Field(min_length=1, max_length=MAX_QUERY, pattern=r"\S",
                      description="the query, or the change to the reference")
    k: int = Field(24, ge=1, le=MAX_K)
    offset: int = Field(0, ge=0, le=MAX_K, description="skip this many results (pages)")
    reference: Reference | None = None
    turns: list[Turn] = Field(default_factory=list, max_length=20,
                                        description="dialogue answers, e.g. 'is it outdoors? yes'")
    pipeline: Literal["encoder", "imagescope"] | None = Field(None, description="default: the server's")
    stages: list[Literal[1, 2, 3]] | None = Field(None, max_length=3, description="imagescope stages to run")
    exclude_ids: list[LibraryId] = Field(default_factory=list, max_length=1000)
    add: list[TermIn] = Field(default_factory=list, max_length=20,
                              description="query arithmetic: terms added to the query (encoder pipeline)")
    subtract: list[TermIn] = Field(default_factory=list, max_length=20,
                                   description="query arithmetic: terms subtracted from the query")
    min_relevance: float | None = Field(None, ge=0, le=1, description="hide results whose calibrated relevance "
                                        "is below this (encoder pipeline; needs a calibrated encoder)")
    dedupe: bool = Field(False, description="fold copies and near-identical images into one result")


class ResultItem(BaseModel):
    id: int
    score: float = Field(description="raw cosine similarity; its scale depends on the encoder")
    relevance: float | None = Field(None, description="calibrated P(relevant), when the encoder has a calibration")
    match: float | None = Field(None, description="the verifier's P(match), when the re-rank scored this result "
                                "(the order then comes from the cosine and the verifier together)")
    similar_count: int = Field(0, description="copies and near-identical images folded into this result")
    similar_ids: list[int] = Field(default_factory=list)
    rank: int
    path: str
    name: str
    thumbnail_url: str
    image_url: str


class SearchResponse(BaseModel):
    results: list[ResultItem]
    query: str
    pipeline: str
    stages: list[int] = Field(default_factory=list, description="stages that ran")
    model_calls: int = 0
    seconds: float
    explanation: dict[str, Any] = Field(default_factory=dict, description="the pipeline's explanation (JSON)")


class ImageInfo(BaseModel):
    id: int
    path: str
    name: str
    width: int | None
    height: int | None
    size: int
    caption: str | None = Field(None, description="a stored caption, when one was made")
    image_url: str
    thumbnail_url: str


class UploadInfo(BaseModel):
    id: str
    format: str
    width: int
    height: int
    bytes: int
    thumbnail_url: str
    expires_in_s: float


class CreateSession(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    query: str = Field(min_length=1, max_length=MAX_QUERY, pattern=r"\S")
    strategy: Literal["none", "rocchio", "rocchio-classic", "caption", "rewrite", "combined"] = "combined"
    page_size: int = Field(12, ge=1, le=100)
    reference: Reference | None = None


class MarkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    ids: list[LibraryId] = Field(min_length=1, max_length=100)
    relevant: bool = True
    round: int | None = Field(None, ge=0, le=10_000, description="the round the page shows (stale pages get 409)")


class RoundRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    round: int | None = Field(None, ge=0, le=10_000, description="the round the page shows (stale pages get 409)")
    allow_repeats: bool = False


class ShownItem(BaseModel):
    number: int
    id: int
    path: str
    name: str
    score: float
    round: int
    mark: bool | None
    thumbnail_url: str
    image_url: str


class RoundHistory(BaseModel):
    round: int
    query: str
    why: str
    fallback: str | None
    relevant_so_far: int
    not_relevant_so_far: int
    model_calls_so_far: int
    seconds: float


class SessionState(BaseModel):
    id: str
    query: str
    strategy: str
    round: int
    current_query: str
    negative_propositions: list[str]
    history: list[RoundHistory]
    strategy_error: str | None
    page_size: int
    version: int
    shown: int
    page: list[ShownItem]


class RemovedMark(BaseModel):
    id: int
    relevant: bool
    round: int


class UndoResponse(SessionState):
    removed: list[RemovedMark]


class SessionSummary(BaseModel):
    id: str
    query: str
    strategy: str
    updated: float
    round: int | None


class SessionList(BaseModel):
    sessions: list[SessionSummary]
