"""The demo CRM's phone numbers at a benchmark's size (``CrmWriter(phones=N)``)."""

from __future__ import annotations

import re

from crossfade.embedded.crm import CrmWriter

OWN = re.compile(r"^\((212|415|646|303|617)\) \d{3}-\d{4}$")


def _own_numbers(writer: CrmWriter, n: int) -> list[str]:
    """The writer's own format only (30% are Faker's, which vary anyway)."""
    return [p for p in (writer._phone() for _ in range(n)) if OWN.match(p)]


def test_the_demo_keeps_its_500_fictional_numbers() -> None:
    nums = _own_numbers(CrmWriter("", seed=3), 5000)
    assert len(nums) > 3000
    assert all(" 555-01" in p for p in nums)
    assert len(set(nums)) <= 500


def test_a_pool_that_grows_keeps_unrelated_people_apart() -> None:
    """At 100k rows the demo's 500 numbers joined every contact into one dedup component
    (sync stopped: more than 5000 records share matching keys)."""
    nums = _own_numbers(CrmWriter("", seed=3, phones=1_000_000), 5000)
    assert len(nums) > 3000
    assert len(set(nums)) > 0.99 * len(nums)
    again = _own_numbers(CrmWriter("", seed=3, phones=1_000_000), 5000)
    assert again == nums  # seeded: the same numbers in the same order


def test_emails_at_a_benchmarks_size_are_distinct_and_the_demos_unchanged() -> None:
    """Faker's addresses repeat (at 160k people a third shared theirs with a stranger, dedup's
    same-email rule joined them, and a 1M-row mapped load stopped sync: more than 5000 records
    share matching keys). With ``phones`` given they are made distinct; the demo keeps Faker's."""
    big = CrmWriter("", seed=3, phones=1_000_000)
    emails = [big._email() for _ in range(20_000)]
    assert len(set(emails)) == len(emails)
    demo = CrmWriter("", seed=3)
    plain = [demo._email() for _ in range(20_000)]
    assert len(set(plain)) < len(plain)  # Faker's own repeat: the test would see a no-op
    assert [e.split("@")[1] for e in emails] == [e.split("@")[1] for e in plain]  # same draws
