"""Who is the utterance for? Wake phrases, spoken yes/no, and the assistant's own echo.

Everything here works on transcribed text, so it has to live with whisper's habits: the same
words come back capitalised or not, with commas and full stops ("Computer," "Hey, computer."),
spelt a little differently ("Komputer") or split and joined differently ("hey computer" /
"Heycomputer" / "compute her"). Matching therefore compares letters, not words: the first
words of the transcript, joined without spaces, against each phrase, allowing
``wake.fuzziness`` edits per character (Levenshtein distance).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

# Words people (and whisper) put in front of a wake phrase: "Okay, computer", "Um computer".
FILLERS = frozenset({"hey", "hi", "ok", "okay", "oh", "um", "uh", "er", "hmm", "so", "well"})

_WORD = re.compile(r"\S+")
_NOT_LETTERS = re.compile(r"[^\w']+|_")
# What may separate the wake phrase from the request: "Computer, what ..." / "Computer... what".
_LEADING_JUNK = re.compile(r"^[\s,.;:!?…\-–—]+")


# Spellings whisper uses interchangeably.
_CANONICAL = {"ok": "okay"}


def normalize_word(word: str) -> str:
    """Lower case, letters, digits and apostrophes only (``"Computer,"`` -> ``"computer"``)."""
    norm = _NOT_LETTERS.sub("", word.casefold()).strip("'")
    return _CANONICAL.get(norm, norm)


def words(text: str) -> list[str]:
    """The normalised words of ``text`` (punctuation-only tokens dropped)."""
    return [w for w in (normalize_word(t) for t in text.split()) if w]


def levenshtein(a: str, b: str) -> int:
    """Edit distance between two strings (insertions, deletions, substitutions)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            )
        previous = current
    return previous[-1]


def allowed_edits(target: str, fuzziness: float) -> int:
    """Edits tolerated for ``target``: ``fuzziness`` per character, none for tiny words."""
    if len(target) < 4:
        return 0
    return max(1, int(len(target) * fuzziness)) if fuzziness > 0 else 0


@dataclass(frozen=True)
class WakeMatch:
    """A transcript that starts with a wake phrase."""

    phrase: str
    heard: str  # the words that matched, as transcribed
    rest: str  # the request after the phrase, punctuation in front removed ("" if none)
    distance: int

    @property
    def alone(self) -> bool:
        """Only the wake phrase was said (no request after it)."""
        return not words(self.rest)


@dataclass(frozen=True)
class _Token:
    norm: str
    start: int
    end: int


def _tokens(text: str) -> list[_Token]:
    tokens = []
    for match in _WORD.finditer(text):
        norm = normalize_word(match.group())
        if norm:
            tokens.append(_Token(norm, match.start(), match.end()))
    return tokens


class WakeMatcher:
    """Matches configured wake phrases at the start of transcripts.

    With no phrases at all, every utterance is addressed to the assistant:
    :attr:`always_addressed` is true and :meth:`match` returns None.
    """

    def __init__(self, phrases: Iterable[str], fuzziness: float = 0.25) -> None:
        self.phrases = [p for p in (" ".join(words(phrase)) for phrase in phrases) if p]
        self.fuzziness = fuzziness
        # Longest phrases first, so "hey computer" wins over "computer" on equal distance.
        self._targets = sorted(
            ((phrase, phrase.replace(" ", ""), len(phrase.split())) for phrase in self.phrases),
            key=lambda item: -len(item[1]),
        )

    @property
    def always_addressed(self) -> bool:
        return not self.phrases

    def match(self, text: str) -> WakeMatch | None:
        """The wake phrase at the start of ``text`` (fuzzy), or None."""
        tokens = _tokens(text)
        if not tokens or not self._targets:
            return None
        best: tuple[float, int, str, int, int] | None = None  # (rel, dist, phrase, first, last)
        starts = [0]
        if tokens[0].norm in FILLERS and len(tokens) > 1:
            starts.append(1)
        for phrase, target, count in self._targets:
            limit = allowed_edits(target, self.fuzziness)
            for first in starts:
                # Whisper splits and joins words: try one word fewer and one more.
                for size in range(max(1, count - 1), count + 2):
                    last = first + size
                    if last > len(tokens):
                        break
                    candidate = tokens[first:last]
                    if size == count:
                        # Word for word: each word within its own allowance, so that "My
                        # computer" is not "hey computer" (short words must be exact).
                        distances = [
                            levenshtein(token.norm, word)
                            for token, word in zip(candidate, phrase.split(), strict=True)
                        ]
                        if any(
                            d > allowed_edits(word, self.fuzziness)
                            for d, word in zip(distances, phrase.split(), strict=True)
                        ):
                            continue
                        distance = sum(distances)
                    else:
                        joined = "".join(t.norm for t in candidate)
                        if abs(len(joined) - len(target)) > limit:
                            continue
                        distance = levenshtein(joined, target)
                        # Joins and splits are a guess already: allow fewer spelling edits.
                        if distance > limit // 2:
                            continue
                    if distance > limit:
                        continue
                    key = (distance / len(target), distance, phrase, first, last)
                    if best is None or key[:2] < best[:2]:
                        best = key
        if best is None:
            return None
        _, distance, phrase, first, last = best
        heard = text[tokens[first].start : tokens[last - 1].end]
        rest = _LEADING_JUNK.sub("", text[tokens[last - 1].end :]).strip()
        if rest and rest[0].islower():
            rest = rest[0].upper() + rest[1:]
        again = self.match(rest) if rest else None
        if again is not None and again.alone:
            # "Computer, computer!", or whisper saying a short clip twice: the phrase alone.
            rest = ""
        return WakeMatch(phrase=phrase, heard=heard, rest=rest, distance=distance)


# --------------------------------------------------------------------------- yes / no

_YES = frozenset(
    {
        "yes",
        "yeah",
        "yep",
        "yup",
        "yah",
        "ya",
        "sure",
        "ok",
        "okay",
        "correct",
        "confirm",
        "confirmed",
        "affirmative",
        "absolutely",
        "definitely",
        "certainly",
        "proceed",
    }
)
_NO = frozenset(
    {
        "no",
        "nope",
        "nah",
        "cancel",
        "stop",
        "negative",
        "abort",
        "don't",
        "dont",
        "not",
        "never",
        "wait",
    }
)
_YES_PHRASES = (("go", "ahead"), ("do", "it"), ("of", "course"), ("that's", "right"))
_NO_PHRASES = (("do", "not"), ("never", "mind"), ("no", "way"))
# Only the start of an answer counts: "yes" deep inside a long sentence is no answer.
_ANSWER_WORDS = 6


def _fuzzy_in(word: str, vocabulary: frozenset[str]) -> bool:
    if word in vocabulary:
        return True
    if len(word) < 3:
        return False
    return any(len(v) >= 3 and levenshtein(word, v) <= 1 for v in vocabulary)


def parse_yes_no(text: str) -> bool | None:
    """True for a spoken yes, False for a no, None when the answer is unclear.

    The first yes- or no-word decides ("No, don't." / "Yes please" / "Yeah, go ahead"), so
    "not sure" is a no; whisper's spellings ("Yess.", "Nope!") are tolerated.
    """
    heard = words(text)[:_ANSWER_WORDS]
    for index, word in enumerate(heard):
        pair = tuple(heard[index : index + 2])
        if pair in _NO_PHRASES:
            return False
        if pair in _YES_PHRASES:
            return True
        # Exact no-words first: "no" is one edit from "so" and "go".
        if word in _NO:
            return False
        if word in _YES:
            return True
        if _fuzzy_in(word, _YES):
            return True
        if _fuzzy_in(word, _NO):
            return False
    return None


# --------------------------------------------------------------------------- own voice


def is_echo(heard: str, spoken: Sequence[str], *, threshold: float = 0.6) -> bool:
    """Whether ``heard`` is mostly a repetition of what the assistant said (``spoken``).

    Word-level: the share of the heard words that appear, in order, in one of the spoken
    texts. Short utterances (one or two words) only count as an echo of an equally short
    text, so a user's "yes" after "Say yes or no." is not mistaken for the assistant.
    """
    heard_words = words(heard)
    if not heard_words:
        return False
    for text in spoken:
        said = words(text)
        if not said:
            continue
        if len(heard_words) < 3 and len(said) > 3:
            continue
        matcher = SequenceMatcher(None, heard_words, said, autojunk=False)
        matched = sum(block.size for block in matcher.get_matching_blocks())
        if matched / len(heard_words) >= threshold:
            return True
    return False
