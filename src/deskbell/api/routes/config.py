"""What the active config says: `GET /v1/topics` (what is routed where) and `GET /v1/config`
(the whole config, secrets masked).

Every secret in the config is a `SecretStr` (webhook URLs, SMTP URLs, `whsec_` secrets), and
`DeskbellConfig.redacted()` dumps those as `**********`; a test asserts no secret value
appears in this answer.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from deskbell.api.deps import RuntimeDep
from deskbell.api.schemas import TopicOut, TopicsOut

router = APIRouter(tags=["config"])


class ConfigOut(BaseModel):
    source: str
    config: dict[str, Any]


@router.get("/v1/config", response_model=ConfigOut, summary="The active config, redacted")
async def get_config(runtime: RuntimeDep) -> ConfigOut:
    active = runtime.active
    return ConfigOut(source=active.source, config=active.config.redacted())


@router.get("/v1/topics", response_model=TopicsOut)
async def topics(runtime: RuntimeDep) -> TopicsOut:
    router_ = runtime.active.router
    config = runtime.active.config
    return TopicsOut(
        topics=[
            TopicOut(topic=t, channels=router_.channels_for_topic(t))
            for t in router_.known_topics()
        ],
        default=config.default,
    )
