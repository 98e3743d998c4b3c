"""Many users' features in one call (schedulers), in one store round trip."""

from __future__ import annotations

from fastapi import APIRouter, Response

from serving.api.deps import ServingDep
from serving.api.models import BatchIn, BatchOut
from serving.features_json import BatchWriter

router = APIRouter(prefix="/features", tags=["users"])


@router.post(
    "/batch",
    response_model=BatchOut,
    summary="Up to 1,000 users' features at once (null for unknown or deleted users)",
)
async def read_features_batch(body: BatchIn, serving: ServingDep) -> Response:
    manifests, now_ms = serving.manifests, serving.now_ms
    # Made before the read: a user deleted meanwhile leaves nothing in the cross-call tables
    # (`forget_stored` replaces the ones this writer fills).
    writer = BatchWriter(manifests, now_ms=now_ms)
    # Only the agents the answer can hold (registered, not shadows): Redis reads nothing else.
    live = [agent_id for agent_id, m in manifests.items() if m.shadows is None]
    users = await serving.guard.call(
        serving.store.read_users_bytes, body.user_ids, now_ms=now_ms, agents=live
    )
    # Spliced from the stored bytes (serving/features_json.py): what `BatchOut` documents,
    # without decoding or re-validating what the store's write path wrote (ADR 0025, 0027).
    answer = writer.batch(users)
    return Response(answer, media_type="application/json")
