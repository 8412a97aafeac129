"""Scale-out commands: sync-index (reconcile or move the vector store), embed-distributed, ingest-vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from picscope.cli.app import LibraryOpt, app
from picscope.cli.console import err, out
from picscope.library import Library


@app.command("sync-index")
def sync_index(
    library: LibraryOpt = None,
    store: Annotated[
        str | None, typer.Option(help="move the library to this store: exact, ann, milvus:FILE.db, milvus:http://…")
    ] = None,
    reencode: Annotated[
        bool, typer.Option(help="with --store: re-encode from the image files instead of copying (old store lost)")
    ] = False,
    reindex: Annotated[bool, typer.Option(help="re-encode files whose vector is missing (index the roots)")] = True,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Make the vector store agree with the catalog (after a crash), or move the library to another store.

    The SQLite catalog is the source of truth: orphan vectors are removed, files without a vector are
    re-encoded, and (Milvus) stored paths/dates are corrected. With --store the vectors are copied to the
    new backend and the library switches only once the copy is complete.
    """
    from picscope.store.sync import move_store, reconcile_store

    lib = Library.open(library, create=False)
    try:
        with lib.write_lock():
            if store is not None and store != lib.config.store:
                report = move_store(lib, store, reencode=reencode)
            else:
                report = reconcile_store(lib)
        reports = []
        if reindex and report.needs_reindex:
            for root, _ in lib.catalog.roots():
                if Path(root).is_dir():
                    reports.append(lib.index(root))
        vectors = len(lib.store)
    finally:
        lib.close()
    data = {**vars(report), "vectors": vectors, "reencoded": sum(r.encoded for r in reports)}
    if as_json:
        out.print_json(json.dumps(data))
        return
    moved = f"moved from {report.previous_store} to {report.store}; " if report.store != report.previous_store else ""
    out.print(
        f"store [bold]{report.store}[/]: {moved}{report.copied} vectors copied, {report.orphans_removed} orphan "
        f"vectors removed, {report.missing_marked} missing re-encoded ({data['reencoded']} encoded), "
        f"{report.meta_fixed} metadata rows fixed; {vectors} vectors now"
    )


@app.command("embed-distributed")
def embed_distributed(
    sources: Annotated[
        list[str], typer.Argument(help="folders, image paths/URIs, or @list.txt (one path or URI a line)")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="new folder for the Parquet shards and manifest")],
    encoder: Annotated[str | None, typer.Option(help="encoder spec (default: the library's)")] = None,
    library: LibraryOpt = None,
    actors: Annotated[int, typer.Option(min=1, help="encoder actors (one model each)")] = 2,
    cpus_per_actor: Annotated[float, typer.Option(help="CPUs reserved per actor")] = 1.0,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    address: Annotated[str | None, typer.Option(help="Ray cluster: auto, or ray://head:10001 (default: local)")] = None,
    ingest: Annotated[bool, typer.Option(help="ingest the vectors into --library afterwards")] = False,
) -> None:
    """Encode many images with Ray Data (actor pool running the encoder); optionally ingest them."""
    from picscope.distributed import embed_with_ray, ingest_vectors, list_inputs

    spec = encoder
    if spec is None or ingest:
        with Library.open(library, encoder=encoder) as lib:
            spec = lib.encoder_spec
    inputs = list_inputs(sources)
    summary = embed_with_ray(
        inputs, spec, out_dir, batch_size=batch_size, actors=actors, cpus_per_actor=cpus_per_actor, address=address
    )
    out.print(
        f"embedded {summary.encoded}/{summary.files} images with {summary.encoder_name} in {summary.seconds:.1f} s "
        f"({summary.failed} failed) → {summary.out_dir}"
    )
    if ingest:
        with Library.open(library) as lib:
            rep = ingest_vectors(lib, out_dir)
        out.print(f"ingested {rep.added} vectors into {lib.path} ({rep.failed} problem files)")


@app.command("ingest-vectors")
def ingest_vectors_cmd(
    folder: Annotated[Path, typer.Argument(help="output folder of `picscope embed-distributed`")],
    library: LibraryOpt = None,
    store: Annotated[str | None, typer.Option(help="vector store for a new library: exact, ann, milvus:URI")] = None,
) -> None:
    """Add vectors computed by embed-distributed to the library (catalog + store), idempotently."""
    from picscope.distributed import ingest_vectors
    from picscope.distributed.ingest import read_manifest

    manifest = read_manifest(folder)
    with Library.open(library, encoder=str(manifest["encoder"]), store=store) as lib:
        rep = ingest_vectors(lib, folder)
    out.print(f"ingested {rep.added} vectors into {lib.path} ({rep.failed} problem files)")
    for path, reason in rep.problems[:20]:
        err.print(f"  {path}: {reason}")
