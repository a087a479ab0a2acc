"""The names hitrun creates Faust's own topics under are the names Faust uses for them."""

from __future__ import annotations

from hitrun.agents.customer import customers_table
from hitrun.streams.app import app, settings
from hitrun.streams.topics import topic_specs


def test_the_changelog_and_leader_topics_are_faust_s_own() -> None:
    specs = {spec.name: spec for spec in topic_specs(settings)}
    changelog = customers_table.changelog_topic.get_topic_name()
    assert settings.changelog_topic == changelog
    assert specs[changelog].partitions == settings.partitions == customers_table.partitions
    assert specs[changelog].config == {"cleanup.policy": "compact"}
    assert specs[changelog].co_partitioned
    leader = app._leader_assignor._leader_topic_name  # type: ignore[attr-defined]
    assert settings.leader_topic == leader
    assert specs[leader].partitions == 1 and not specs[leader].co_partitioned
