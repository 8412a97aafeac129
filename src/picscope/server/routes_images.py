"""Images and thumbnails by library id (never by path), image details, and reference-photo uploads."""

from __future__ import annotations

import enum
import os
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Header, Path, Query, Request, Response, UploadFile

from picscope.server.images import Blob, version_tag
from picscope.server.models import Digits, ErrorBody, ImageInfo, UploadInfo
from picscope.server.state import AppState, get_state

router = APIRouter(prefix="/api", tags=["images"])
StateDep = Annotated[AppState, Depends(get_state)]
ImageId = Annotated[int, Digits, Path(ge=1, le=2**62, description="library id")]
UploadId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="upload id")]
IMAGE_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 403, 404, 409, 410, 413, 415, 429, 503)
}
IMAGE_OK: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/jpeg": {}, "image/png": {}, "image/gif": {}, "image/webp": {}, "image/bmp": {}},
          "description": "the image bytes"},
    304: {"description": "not modified (If-None-Match matched the ETag)"},
}


class ThumbSize(enum.IntEnum):
    """Thumbnail sizes (long side, pixels): a fixed few, so the disk cache cannot be made to grow without end."""

    small = 128
    medium = 256
    large = 512
    huge = 1024


SizeQuery = Annotated[ThumbSize | None, Digits, Query(description="long side in pixels (default 256)")]
IMMUTABLE = "private, max-age=31536000, immutable"
REVALIDATE = "private, no-cache"


def blob_response(blob: Blob, if_none_match: str | None, versioned: bool) -> Response:
    headers = {"ETag": blob.etag, "Cache-Control": IMMUTABLE if versioned else REVALIDATE,
               "X-Content-Type-Options": "nosniff"}
    if if_none_match and blob.etag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers=headers)
    return Response(blob.data, media_type=blob.media_type, headers=headers)


def _versioned(state: AppState, file_id: int, v: str | None) -> bool:
    """The URL names the file's current content version, so the browser may keep it forever."""
    if v is None:
        return False
    rec = state.library.get(file_id)
    return rec is not None and version_tag(rec) == v


@router.get("/images/{image_id}", responses={**IMAGE_OK, **IMAGE_ERRORS}, response_class=Response,
            summary="The photo")
async def image(state: StateDep, image_id: ImageId, v: Annotated[str | None, Query(max_length=64)] = None,
                if_none_match: Annotated[str | None, Header()] = None) -> Response:
    """The photo itself (its own bytes when a browser can show the format, else a JPEG rendering)."""
    blob = await state.thumbs.run(state.images.original, image_id, state.settings.view_size)
    return blob_response(blob, if_none_match, _versioned(state, image_id, v))


@router.get("/images/{image_id}/thumbnail", responses={**IMAGE_OK, **IMAGE_ERRORS}, response_class=Response,
            summary="A thumbnail")
async def thumbnail(state: StateDep, image_id: ImageId, size: SizeQuery = None,
                    v: Annotated[str | None, Query(max_length=64)] = None,
                    if_none_match: Annotated[str | None, Header()] = None) -> Response:
    """A JPEG thumbnail (long side `size`, default 256), cached on disk in the library's `thumbs/` folder."""
    blob = await state.thumbs.run(state.images.thumbnail, image_id, int(size or state.settings.thumb_size))
    return blob_response(blob, if_none_match, _versioned(state, image_id, v))


@router.get("/images/{image_id}/info", response_model=ImageInfo, responses=IMAGE_ERRORS, summary="Image details")
async def image_info(state: StateDep, image_id: ImageId) -> ImageInfo:
    rec = state.images.record(image_id)
    from picscope.pipeline.captions import stored_caption  # the pipeline package loads on first use

    tag = version_tag(rec)
    caption = stored_caption(state.library.layout.captions, rec.id)
    return ImageInfo(id=rec.id, path=rec.path, name=os.path.basename(rec.path), width=rec.width, height=rec.height,
                     size=rec.size, caption=caption, image_url=state.image_url(rec.id, tag),
                     thumbnail_url=state.thumb_url(rec.id, tag))


def _upload_info(state: AppState, up: Any) -> UploadInfo:
    return UploadInfo(id=up.id, format=up.format, width=up.width, height=up.height, bytes=up.bytes,
                      thumbnail_url=f"/api/uploads/{up.id}/thumbnail", expires_in_s=state.settings.upload_ttl_s)


@router.post("/uploads", response_model=UploadInfo, status_code=201, responses=IMAGE_ERRORS,
             summary="Upload a reference photo", tags=["uploads"])
async def upload(state: StateDep, request: Request, file: Annotated[UploadFile, File()]) -> UploadInfo:
    """Upload a photo to use as a reference ("like this, but …", "more like this"). Its content is checked
    (sniffed format, byte and pixel limits); it is kept outside the library and expires."""
    data = await file.read(state.settings.max_upload_bytes + 1)
    up = await state.work.run(state.uploads.add, data)
    return _upload_info(state, up)


@router.get("/uploads/{upload_id}", response_model=UploadInfo, responses=IMAGE_ERRORS, tags=["uploads"],
            summary="An upload's details")
async def upload_info(state: StateDep, upload_id: UploadId) -> UploadInfo:
    return _upload_info(state, state.uploads.get(upload_id))


@router.get("/uploads/{upload_id}/thumbnail", responses={**IMAGE_OK, **IMAGE_ERRORS}, response_class=Response,
            tags=["uploads"], summary="An upload's thumbnail")
async def upload_thumbnail(state: StateDep, upload_id: UploadId, size: SizeQuery = None
                           ) -> Response:
    data = await state.thumbs.run(state.uploads.thumbnail, upload_id, int(size or state.settings.thumb_size))
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.delete("/uploads/{upload_id}", status_code=204, responses=IMAGE_ERRORS, tags=["uploads"],
               response_class=Response, summary="Delete an upload")
async def delete_upload(state: StateDep, upload_id: UploadId) -> Response:
    state.uploads.delete(upload_id)
    return Response(status_code=204)


