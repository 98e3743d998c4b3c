"""Shadow versions: the registry checks what a shadow names; serving never puts one in a tip."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import features.agents
import tests.shadow_agents
from connectors.store.base import StoredAgent, StoredUser
from features.registry import AgentModuleError, build_registry
from serving.tips import eligible_agents, fresh_snippets
from tests.unit.test_agent_contract import _package


def test_a_shadow_package_beside_the_agents() -> None:
    registry = build_registry([features.agents, tests.shadow_agents])
    m = registry["momentum-14d"].MANIFEST
    assert (m.stage, m.shadows) == ("shadow", "momentum")
    assert registry["momentum"].MANIFEST.stage == "live"
    assert m.as_dict()["stage"] == "shadow"
    assert registry["momentum-14d"].baseline_days == 14  # type: ignore[attr-defined]


SHADOW_OF = """
    import dataclasses
    from features.agents import momentum

    MANIFEST = dataclasses.replace(momentum.MANIFEST, id="{id}", shadows="{target}")

    class Agent(momentum.Agent):
        __slots__ = ()
"""


@pytest.mark.parametrize(
    ("modules", "words"),
    [
        ({"s": SHADOW_OF.format(id="s", target="nobody")}, "'nobody', which is not a registered"),
        (
            {
                "s": SHADOW_OF.format(id="s", target="momentum"),
                "t": SHADOW_OF.format(id="t", target="s"),
            },
            "names 's', itself a shadow",
        ),
        ({"s": SHADOW_OF.format(id="momentum", target="momentum")}, "already used by"),
    ],
    ids=["unknown", "shadow-of-shadow", "same-id"],
)
def test_a_bad_shadow_fails_naming_its_module(
    tmp_path: Path, modules: dict[str, str], words: str, request: pytest.FixtureRequest
) -> None:
    name = f"bad_shadows_{request.node.callspec.id.replace('-', '_')}"
    package = _package(tmp_path, name, {k: textwrap.dedent(v) for k, v in modules.items()})
    with pytest.raises(AgentModuleError) as caught:
        build_registry([features.agents, package])
    assert f"agent module {name}." in str(caught.value) and words in str(caught.value)


def _stored(agent_id: str) -> StoredAgent:
    return StoredAgent(
        agent_id=agent_id,
        version="1.0.0",
        params={},
        extras={},
        event_time_ms=1,
        ingest_time_ms=1,
        computed_at_ms=1,
        snippet=f"{agent_id} says hi.",
        snippet_expires_at_ms=None,
    )


def test_serving_leaves_shadows_out_of_tips_unless_asked() -> None:
    registry = build_registry([features.agents, tests.shadow_agents])
    manifests = {a: cls.MANIFEST for a, cls in registry.items()}
    user = StoredUser(
        user_id="u1",
        agents={a: _stored(a) for a in ("momentum", "momentum-14d", "momentum-same")},
        feedback={},
        consents={},
        newest_event_ms=1,
        newest_ingest_ms=1,
    )
    assert [a.agent_id for a in eligible_agents(user, manifests)] == ["momentum"]
    asked = eligible_agents(user, manifests, include_shadow=True)
    assert [a.agent_id for a in asked] == ["momentum", "momentum-14d", "momentum-same"]
    # Even handed shadows, the snippets that make prompts and tips leave them out.
    assert [s.agent_id for s in fresh_snippets(asked, manifests, now_ms=2)] == ["momentum"]
