"""Sentence splitting of streamed text, and markdown made speakable."""

from __future__ import annotations

import pytest

from voiced.speech.sentences import SentenceSplitter, speakable, split_sentences

SPLIT_CASES = [
    (
        "plain",
        "Hello there. How are you? I am fine!",
        ["Hello there.", "How are you?", "I am fine!"],
    ),
    ("no final punctuation", "It is late. Good night", ["It is late.", "Good night"]),
    (
        "titles",
        "Dr. Smith met Mr. Jones. They talked.",
        ["Dr. Smith met Mr. Jones.", "They talked."],
    ),
    (
        "latin",
        "Use a tool, e.g. Python or i.e. Perl. Fine.",
        ["Use a tool, e.g. Python or i.e. Perl.", "Fine."],
    ),
    (
        "e.g. before capital",
        "Some editors, e.g. Vim, are modal. Others not.",
        ["Some editors, e.g. Vim, are modal.", "Others not."],
    ),
    (
        "etc. ending a sentence",
        "Apples, pears, etc. Then we left.",
        ["Apples, pears, etc.", "Then we left."],
    ),
    ("etc. mid sentence", "Apples, pears, etc. are fruit.", ["Apples, pears, etc. are fruit."]),
    (
        "decimals",
        "Pi is 3.14159 roughly. The load is 0.5.",
        ["Pi is 3.14159 roughly.", "The load is 0.5."],
    ),
    (
        "versions",
        "Upgrade to v1.2.3 now. Python 3.11.4 works.",
        ["Upgrade to v1.2.3 now.", "Python 3.11.4 works."],
    ),
    (
        "number at sentence end",
        "I counted 42. Then I stopped.",
        ["I counted 42.", "Then I stopped."],
    ),
    ("times", "Meet at 5 p.m. tomorrow. Bring cake.", ["Meet at 5 p.m. tomorrow.", "Bring cake."]),
    ("initials", "J. R. R. Tolkien wrote it. Read it.", ["J. R. R. Tolkien wrote it.", "Read it."]),
    ("dotted abbreviation", "The U.S. Army left. Done.", ["The U.S. Army left.", "Done."]),
    (
        "file names and urls",
        "Open config.yaml or see example.com/a.b now. Ok.",
        ["Open config.yaml or see example.com/a.b now.", "Ok."],
    ),
    ("ellipsis lower case", "Well... maybe not. Sure.", ["Well... maybe not.", "Sure."]),
    ("ellipsis upper case", "Wait… Now go.", ["Wait…", "Now go."]),
    ("quotes", 'He said "stop." Then he left.', ['He said "stop."', "Then he left."]),
    ("question in quotes", '"Why?" he asked. Nobody knew.', ['"Why?" he asked.', "Nobody knew."]),
    ("brackets", "It works (mostly.) Try it.", ["It works (mostly.)", "Try it."]),
    ("bold sentence", "**Warning.** Disk is full.", ["**Warning.**", "Disk is full."]),
    ("interrobang", "Really?! Yes.", ["Really?!", "Yes."]),
    ("newlines", "First line\nSecond line\n\nThird.", ["First line", "Second line", "Third."]),
    (
        "numbered list",
        "Steps:\n1. Open the file.\n2. Save it.\n10. Close it.",
        ["Steps:", "1. Open the file.", "2. Save it.", "10. Close it."],
    ),
    ("bullets", "Options:\n- fast mode\n- slow mode", ["Options:", "- fast mode", "- slow mode"]),
    ("header", "# Summary\nAll good. Bye.", ["# Summary", "All good.", "Bye."]),
    (
        "code block is one unit",
        "Run this:\n```bash\nls -la.\necho hi. There\n```\nThat lists files.",
        ["Run this:", "```bash\nls -la.\necho hi. There\n```", "That lists files."],
    ),
    ("unclosed code block", "See:\n```\nx = 1. Y", ["See:", "```\nx = 1. Y"]),
    ("inline code", "Call `os.path.join()` here. Done.", ["Call `os.path.join()` here.", "Done."]),
    (
        "full stop inside inline code",
        "Call `foo. Bar()` now. Done.",
        ["Call `foo. Bar()` now.", "Done."],
    ),
    ("stray backtick", "It's a ` mark. Next one.", ["It's a ` mark.", "Next one."]),
    (
        "list after a colon",
        "Steps: 1. Open the file. 2. Save it.",
        ["Steps: 1. Open the file.", "2. Save it."],
    ),
    ("time ending a sentence", "Meet at 5 p.m. Thanks.", ["Meet at 5 p.m.", "Thanks."]),
    ("empty", "", []),
    ("no at sentence end", "I said no. Then I left.", ["I said no.", "Then I left."]),
    ("fig. with number", "See Fig. 3 for the plot. Ok.", ["See Fig. 3 for the plot.", "Ok."]),
    ("only space", "  \n\n \t ", []),
    (
        "no. with number",
        "It is item No. 5 in the list. Yes.",
        ["It is item No. 5 in the list.", "Yes."],
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in SPLIT_CASES], ids=[c[0] for c in SPLIT_CASES]
)
def test_split_whole_text(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in SPLIT_CASES], ids=[c[0] for c in SPLIT_CASES]
)
def test_split_streamed_in_small_pieces(text: str, expected: list[str]) -> None:
    # An LLM streams a few characters at a time; the result must not depend on the cuts.
    for size in (1, 2, 3, 7):
        splitter = SentenceSplitter()
        got: list[str] = []
        for start in range(0, len(text), size):
            got += splitter.feed(text[start : start + size])
        got += splitter.flush()
        assert got == expected, f"piece size {size}"


def test_sentence_is_returned_as_soon_as_it_is_certain() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("The answer is 3.") == []  # could still be 3.5
    assert splitter.feed("5") == []
    assert splitter.feed(" volts.") == []  # could be "volts. etc"
    assert splitter.feed(" ") == []
    assert splitter.feed("N") == ["The answer is 3.5 volts."]
    assert splitter.pending() == "N"
    assert splitter.feed("ext line\n") == ["Next line"]
    assert splitter.flush() == []


def test_line_break_ends_a_sentence_at_once() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("Hello there\n") == ["Hello there"]


def test_flush_resets() -> None:
    splitter = SentenceSplitter()
    splitter.feed("Half a sent")
    assert splitter.flush() == ["Half a sent"]
    assert splitter.feed("New. Text") == ["New."]


def test_run_on_sentence_is_cut_at_a_soft_break() -> None:
    clause = "and then it went on without any full stop at all"
    text = ", ".join([clause] * 12) + "."
    sentences = split_sentences(text, max_chars=120)
    assert len(sentences) > 1
    assert all(len(s) <= 120 + len(clause) + 2 for s in sentences)
    assert " ".join(sentences) == text


def test_short_clauses_are_not_cut() -> None:
    assert split_sentences("Yes, sure; fine: ok.") == ["Yes, sure; fine: ok."]


def test_max_chars_validated() -> None:
    with pytest.raises(ValueError):
        SentenceSplitter(max_chars=5)


SPEAKABLE_CASES = [
    ("plain text unchanged", "Hello, world.", "Hello, world."),
    (
        "bold and italics",
        "This is **very** *important* and __bold__ _too_.",
        "This is very important and bold too.",
    ),
    ("strikethrough", "It is ~~broken~~ fixed.", "It is broken fixed."),
    ("header", "## Disk usage ##", "Disk usage"),
    ("bullet", "- Check the logs", "Check the logs"),
    ("star bullet", "* Check the logs", "Check the logs"),
    ("numbered item", "2. Restart the service.", "Restart the service."),
    ("task item", "- [x] Done thing", "Done thing"),
    ("blockquote", "> Quoted words.", "Quoted words."),
    ("inline code", "Run `ls -la` now.", "Run ls -la now."),
    ("identifier", "Set `max_tokens` to 5.", "Set max tokens to 5."),
    ("url", "See https://example.com/docs?id=3 for more.", "See link for more."),
    ("www url", "Go to www.example.org.", "Go to link."),
    ("markdown link", "Read [the manual](https://x.org/m) first.", "Read the manual first."),
    ("autolink", "Mail <https://x.org/a> now.", "Mail link now."),
    ("image", "![a cat](cat.png) Nice.", "a cat Nice."),
    ("code block dropped", "```python\nprint('hi')\n```", ""),
    ("table row", "| Name | Size |", "Name, Size"),
    ("table rule", "|---|:---:|", ""),
    ("horizontal rule", "---", ""),
    ("html", "Line<br>break", "Line break"),
    ("c sharp kept", "C# and F# are languages.", "C# and F# are languages."),
    ("decimals kept", "It costs 3.50 dollars.", "It costs 3.50 dollars."),
    ("multi line list", "Steps:\n- one\n- two", "Steps: one. two."),
    ("table", "| a | b |\n|---|---|\n| 1 | 2 |", "a, b. 1, 2."),
    ("only markup", "** __ ``", ""),
    ("multiplication", "5 * 3 = 15 and 2*4 is 8.", "5 times 3 = 15 and 2 times 4 is 8."),
    ("emphasised number", "It is *5* now.", "It is 5 now."),
]


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in SPEAKABLE_CASES], ids=[c[0] for c in SPEAKABLE_CASES]
)
def test_speakable(text: str, expected: str) -> None:
    assert speakable(text) == expected


def test_split_then_speak_a_markdown_reply() -> None:
    reply = (
        "## Result\n"
        "Your disk is **87.5%** full. The biggest folder is `~/Videos`.\n"
        "1. Empty the trash.\n"
        "2. See https://wiki.example.org/disk for tips.\n"
    )
    spoken = [speakable(s) for s in split_sentences(reply)]
    assert spoken == [
        "Result",
        "Your disk is 87.5% full.",
        "The biggest folder is ~/Videos.",
        "Empty the trash.",
        "See link for tips.",
    ]
