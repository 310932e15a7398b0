"""`/v1/datasets...`: stored research datasets and a dataset's manifest."""
# No `from __future__ import annotations`: FastAPI must resolve the routes' Annotated dependencies (locals of build).

from fastapi import APIRouter, Request
from pydantic import BaseModel, ValidationError

from qmachina_assets.core.research import datasets as dsets
from qmachina_serving.api.common import REFUSED, ApiContext, DatasetId, not_found, refused


class DatasetSummary(BaseModel):
    dataset_id: str
    date: str
    symbol: str
    pipeline_name: str
    content_hash: str
    n_bins: int
    valid_bins: int
    created_at: str


def build(ctx: ApiContext) -> APIRouter:
    r = APIRouter()
    Lake = ctx.lake_dep()
    Caller = ctx.caller()
    Owned = ctx.owned("dataset", DatasetId, "dataset_id")

    @r.get("/datasets", response_model=list[DatasetSummary], tags=["datasets"])
    def list_datasets(lake_dir: Lake, request: Request, who: Caller) -> list[DatasetSummary]:
        out = []
        ids = list(dsets.iter_dataset_ids(lake_dir))
        mine = ctx.visible(request, who, "dataset", ids)
        for ds in (x for x in ids if x in mine):
            try:
                m = dsets.read_dataset_manifest(dsets.dataset_dir(lake_dir, ds))
            except (OSError, ValueError, ValidationError):
                continue  # an unreadable manifest: `GET /v1/datasets/{id}` says why
            if m is None:
                continue
            out.append(DatasetSummary(dataset_id=m.dataset_id, date=m.date, symbol=m.symbol,
                                      pipeline_name=m.pipeline_name, content_hash=m.content_hash, n_bins=m.n_bins,
                                      valid_bins=m.valid_bins, created_at=m.created_at))
        return out

    @r.get("/datasets/{dataset_id}", response_model=dsets.DatasetManifest, responses=REFUSED, tags=["datasets"])
    def show_dataset(dataset_id: Owned, lake_dir: Lake) -> dsets.DatasetManifest:
        try:
            m = dsets.read_dataset_manifest(dsets.dataset_dir(lake_dir, dataset_id))
        except (OSError, ValueError, ValidationError) as exc:
            raise refused(ValueError(f"dataset {dataset_id}: manifest does not validate: {exc}")) from exc
        if m is None:
            raise not_found(f"no dataset {dataset_id!r}")
        return m

    return r
