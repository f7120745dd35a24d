"""Text that whisper writes for sounds that are not speech, and how to recognise it.

Shared by every path that turns audio into text (``voiced listen``, ``voiced run``,
``voiced transcribe`` and the ``transcribe_audio`` tool, all through
:class:`voiced.speech.stt.SpeechToText`):

* :func:`clean_text` removes non-speech tags: ``[BLANK_AUDIO]``, ``[Music]``,
  ``(horn honking)``, ``*beep*``, ``{applause}``, ``♪ ... ♪``; what is left without a single
  word is nothing.
* :func:`is_repetition_loop` recognises a segment that is one word or a short phrase said
  over and over ("Beep beep beep beep beep beep beep beep"), which whisper writes for horns,
  alarms and beeps, while a phrase a person repeats inside a sentence ("no, no, no, not that
  one") is kept.
"""

from __future__ import annotations

import re

_NON_SPEECH_TAG = re.compile(
    r"\[[^\]]*\]"  # [BLANK_AUDIO], [Music], [ Silence ]
    r"|\([^)]*\)"  # (horn honking), (music)
    r"|\{[^}]*\}"  # {applause}
    r"|【[^】]*】"  # full-width brackets
    r"|\*[^*]*\*"  # *beep*, *laughs*
    r"|♪+[^♪]*♪*|♫+"  # ♪ la la la ♪
)
_WORD = re.compile(r"[\w']+")
# Punctuation left stranded by a removed tag: "Hello [Music] ." -> "Hello."
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,!?;:])")

# A phrase of up to this many words repeated this many times in a row is a loop...
_SHORT_UNIT_WORDS, _SHORT_UNIT_REPEATS = 2, 4
_LONG_UNIT_WORDS, _LONG_UNIT_REPEATS = 6, 3
# ...when the repeats make up at least this share of the segment's words.
_LOOP_SHARE = 0.75


def clean_text(text: str) -> str:
    """Drop non-speech tags; text with no word left is empty."""
    cleaned = re.sub(r"\s+", " ", _NON_SPEECH_TAG.sub(" ", text)).strip()
    if not _WORD.search(cleaned):
        return ""
    cleaned = _SPACE_BEFORE_PUNCT.sub(r"\1", cleaned)
    return re.sub(r"^[-–—,.;:\s]+", "", cleaned).strip()


def words(text: str) -> list[str]:
    """The words of ``text``, lower case, without punctuation."""
    return [w.lower() for w in _WORD.findall(text)]


def longest_repeat(tokens: list[str], unit: int) -> int:
    """How many times in a row some phrase of ``unit`` words comes back to back (at least 1)."""
    best = 1
    for start in range(len(tokens) - unit):
        phrase = tokens[start : start + unit]
        repeats = 1
        while tokens[start + repeats * unit : start + (repeats + 1) * unit] == phrase:
            repeats += 1
        best = max(best, repeats)
    return best


def is_repetition_loop(text: str) -> bool:
    """True when ``text`` is mostly one word or short phrase said again and again.

    A phrase of one or two words must come at least four times in a row, one of three to
    six words three times, and the repeats must make up three quarters of the words: "Beep
    beep beep beep beep beep" and "Thank you. Thank you. Thank you. Thank you." are loops,
    "no, no, no, not that one" and "No, no, no, no, not that one." are not.
    """
    tokens = words(text)
    for unit in range(1, _LONG_UNIT_WORDS + 1):
        needed = _SHORT_UNIT_REPEATS if unit <= _SHORT_UNIT_WORDS else _LONG_UNIT_REPEATS
        if unit * needed > len(tokens):
            break
        repeats = longest_repeat(tokens, unit)
        if repeats >= needed and unit * repeats >= _LOOP_SHARE * len(tokens):
            return True
    return False
