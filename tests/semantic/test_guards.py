"""The lexical guards on their own: pure functions, examples written for these tests."""

from __future__ import annotations

import pytest

from stratacache.semantic._guards import (
    hard_conflicts,
    is_slip,
    lexically_equivalent,
    signature,
)


def same(a: str, b: str) -> bool:
    return lexically_equivalent(signature(a), signature(b))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("How do I export my contacts?", "how can i export my contacts"),
        ("How do I export my contacts?", "Hello! How do I export my contacts? Many thanks"),
        ("How do I export my contacts?", "Quick question: how do I export my contacts?"),
        ("What's the refund window?", "What is the refund window"),
        ("I can't sign in, what should I do?", "I cannot sign in, what should I do?"),
        ("Which browsers do you support?", "Which browser do you support?"),
        ("How do I export my contacts to CSV?", "To CSV, how do I export my contacts?"),
        ("How do I configure the firewall?", "How do I configure the firewal?"),
        ("Do you ship two-day?", "Do you ship 2-day?"),
        ("DO YOU SHIP ABROAD?", "do you ship abroad"),
    ],
)
def test_same_request_in_the_same_words(a: str, b: str) -> None:
    assert same(a, b)
    assert same(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Can I return it within 30 days?", "Can I return it within 60 days?"),
        ("Does the plan include roaming?", "Does the plan exclude roaming?"),
        ("Is the app available offline?", "Is the app not available offline?"),
        ("Can I call you tomorrow?", "Can you call me tomorrow?"),
        ("What is my account number?", "What is your account number?"),
        ("Is Rust faster than Go?", "Is Go faster than Rust?"),
        ("Does the dog chase the cat?", "Does the cat chase the dog?"),
        ("How do I redirect HTTP to HTTPS?", "How do I redirect HTTPS to HTTP?"),
        ("How do I sort a list in C++?", "How do I sort a list in C#?"),
        ("Can I withdraw £200 abroad?", "Can I withdraw $200 abroad?"),
        ("Is -10°C too cold for the battery?", "Is 10°C too cold for the battery?"),
        ("What does get_user return?", "What does get_users return?"),
        ("How much weight can I lose?", "How much height can I lose?"),
        ("What was the interest rate?", "What is the interest rate?"),
        ("How many tickets can I buy?", "How much tickets can I buy?"),
        ("Can I pay by card or cash?", "Can I pay by card and cash?"),
        ("Can I only pay online?", "Can I pay online?"),
        ("Do I have to pay a deposit?", "Do I pay a deposit?"),
        ("Is the museum open today?", "Is the museum open tomorrow?"),
        ("Is a square a rectangle?", "Is a rectangle a square?"),
    ],
)
def test_one_word_that_changes_the_answer_is_never_equivalent(a: str, b: str) -> None:
    assert not same(a, b)
    assert not same(b, a)


def test_slips_are_spelling_not_other_words() -> None:
    assert is_slip("password", "pasword")
    assert is_slip("invoice", "invioce")
    for a, b in [("weight", "height"), ("desert", "dessert"), ("debt", "debit"), ("form", "from")]:
        assert not is_slip(a, b)


def test_hard_conflicts_name_the_difference() -> None:
    def conflicts(a: str, b: str) -> list[str]:
        return hard_conflicts(signature(a), signature(b))

    assert "numbers" in conflicts("Track order 48213", "Track order 48231")
    assert "negation" in conflicts("Is it safe to share?", "Is it not safe to share?")
    assert "antonym" in conflicts("How do I upload a file?", "How do I download a file?")
    assert "names" in conflicts(
        "Opening hours of the Leeds store?", "Opening hours of the York store?"
    )
    assert "roles" in conflicts("Can I call you?", "Can you call me?")
    assert conflicts("How do I find my nearest store?", "How do I find my nearest shop?") == []
