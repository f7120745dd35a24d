"""Wake phrase matching, spoken yes/no and echo detection on whisper-style transcripts."""

from __future__ import annotations

import pytest

from voiced.service.wake_phrase import WakeMatcher, is_echo, levenshtein, parse_yes_no

PHRASES = ["computer", "hey computer"]


@pytest.mark.parametrize(
    ("text", "phrase", "rest"),
    [
        ("Computer, what time is it?", "computer", "What time is it?"),
        ("computer what time is it", "computer", "What time is it"),
        ("Hey, computer. What's the weather?", "hey computer", "What's the weather?"),
        ("Hey computer, open the notes.", "hey computer", "Open the notes."),
        ("Komputer, how much memory is free?", "computer", "How much memory is free?"),
        ("Computa! Stop.", "computer", "Stop."),
        ("Heycomputer, list my files.", "hey computer", "List my files."),
        ("Okay, computer. Lights off.", "computer", "Lights off."),
        ("Um, computer... what's up?", "computer", "What's up?"),
        ("COMPUTER — disk space", "computer", "Disk space"),
        ("Computer, computer science homework.", "computer", "Computer science homework."),
    ],
)
def test_wake_phrase_found_and_stripped(text: str, phrase: str, rest: str) -> None:
    match = WakeMatcher(PHRASES).match(text)
    assert match is not None, text
    assert match.phrase == phrase
    assert match.rest == rest
    assert not match.alone


@pytest.mark.parametrize(
    "text",
    [
        "Computer.",
        "Hey, computer!",
        "computer",
        "Komputer?",
        "Hey computer…",
        "Computer Computer Computer",  # whisper saying a short clip over again
        "Computer, computer!",
    ],
)
def test_wake_phrase_alone(text: str) -> None:
    match = WakeMatcher(PHRASES).match(text)
    assert match is not None and match.alone and match.rest == ""


@pytest.mark.parametrize(
    "text",
    [
        "What is a computer?",  # not at the start
        "My computer is slow.",
        "Compost the leaves.",
        "Commuting takes an hour, computer.",
        "Hello there.",
        "",
        "...",
    ],
)
def test_no_wake_phrase(text: str) -> None:
    assert WakeMatcher(PHRASES).match(text) is None


def test_fuzziness_zero_is_exact() -> None:
    assert WakeMatcher(PHRASES, fuzziness=0.0).match("Komputer, hi") is None
    assert WakeMatcher(PHRASES, fuzziness=0.0).match("Computer, hi") is not None


def test_custom_multiword_phrase_and_empty_list() -> None:
    matcher = WakeMatcher(["okay jarvis"])
    match = matcher.match("OK, Jarvis, what's new?")
    assert match is not None and match.rest == "What's new?"
    assert WakeMatcher([]).always_addressed
    assert WakeMatcher([]).match("Computer, hi") is None
    assert not matcher.always_addressed


def test_levenshtein() -> None:
    assert levenshtein("computer", "komputer") == 1
    assert levenshtein("", "abc") == 3
    assert levenshtein("kitten", "sitting") == 3


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("Yes.", True),
        ("Yes, please.", True),
        ("Yeah, go ahead.", True),
        ("Yep!", True),
        ("Yess", True),
        ("Sure.", True),
        ("Okay, do it.", True),
        ("Of course.", True),
        ("No.", False),
        ("No, don't.", False),
        ("Nope!", False),
        ("Nah.", False),
        ("Cancel that.", False),
        ("Don't do it.", False),
        ("Do not delete it.", False),
        ("Not sure.", False),
        ("Never mind.", False),
        ("Hmm.", None),
        ("What did you say?", None),
        ("", None),
    ],
)
def test_yes_no(text: str, answer: bool | None) -> None:
    assert parse_yes_no(text) is answer


def test_echo_of_what_was_said() -> None:
    said = ["The capital of France is Paris.", "It has about two million people."]
    assert is_echo("the capital of france is paris", said)
    assert is_echo("Capital of France is Paris and", said)  # clipped, one word wrong
    assert is_echo("It has about two million people", said)
    assert not is_echo("What about Germany?", said)
    assert not is_echo("Tell me more about Paris, please, and its museums", said)
    # A short answer is not an echo of a long question that contains the word.
    assert not is_echo("Yes.", ["Delete notes.txt? Say yes or no."])
    # ...but a short text can echo a short text.
    assert is_echo("Yes?", ["Yes?"])
    assert not is_echo("", said)
