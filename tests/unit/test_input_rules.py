from __future__ import annotations

import pytest

from initflow.errors import Problem
from initflow.services.input_rules import check_environments, check_project_name, slugify


@pytest.mark.parametrize(
    ("name", "slug"),
    [("My Service", "my-service"), ("  Café API  ", "cafe-api"), ("a__b--c", "a-b-c")],
)
def test_names_are_trimmed_and_slugged(name: str, slug: str) -> None:
    problems: list[Problem] = []
    assert check_project_name(name, problems)[1] == slug
    assert problems == []


def test_slugs_are_at_most_63_characters() -> None:
    assert len(slugify("a" * 100)) == 63


def test_environments_default_to_the_three_classic_ones() -> None:
    assert check_environments(None, []) == ("development", "staging", "production")


def test_too_many_environments_is_one_problem() -> None:
    problems: list[Problem] = []
    check_environments([f"e{i}" for i in range(11)], problems)
    assert [p.code for p in problems] == ["TOO_MANY"]
