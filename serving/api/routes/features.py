"""Many users' features in one call (schedulers), in one store round trip."""

from __future__ import annotations

from fastapi import APIRouter, Response

from serving.api.deps import ManifestsDep, NowMsDep, StoreDep, StoreGuardDep
from serving.api.models import BatchIn, BatchOut
from serving.api.routes.users import features_out

router = APIRouter(prefix="/features", tags=["users"])


@router.post(
    "/batch",
    response_model=BatchOut,
    summary="Up to 1,000 users' features at once (null for unknown or deleted users)",
)
async def read_features_batch(
    body: BatchIn,
    store: StoreDep,
    guard: StoreGuardDep,
    manifests: ManifestsDep,
    now_ms: NowMsDep,
) -> Response:
    users = await guard.call(store.read_users, body.user_ids, now_ms=now_ms)
    out = BatchOut(
        users={
            user_id: None if user is None else features_out(user, manifests, now_ms=now_ms)
            for user_id, user in users.items()
        }
    )
    # Built and checked once: FastAPI would validate and serialise the model a second time.
    return Response(out.model_dump_json(), media_type="application/json")
