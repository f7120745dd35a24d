"""Text to speakable sentences, as the text streams in.

:class:`SentenceSplitter` is fed the pieces of a reply as the LLM produces them and hands back
each sentence as soon as it is complete, so that speech can start while the rest of the reply
is still being written. :func:`speakable` turns one sentence of (markdown) text into what a
voice should say: no asterisks, hashes, backticks, bullets or table rules, and "link" for a URL.

A sentence ends at ``.``, ``!``, ``?`` or ``…`` (with any closing quotes, brackets or markdown
emphasis after them) followed by white space and then something that does not start with a
lower-case letter; at every line break; and at the end of the text. That rule alone keeps
decimals (``3.14``), versions (``1.2.3``), file names, URLs and "e.g. this" together. On top of
it, a full stop after a title (``Dr.``), a Latin abbreviation (``e.g.``), an initial (``J.``)
or a list number at the start of a line or after a colon (``1.``) does not end a sentence. A
fenced code block is one unit, and so is an inline code span. A run-on sentence longer than
``max_chars`` is cut at a comma, semicolon or colon so that it does not hold up the speech.
"""

from __future__ import annotations

import re

# A full stop after these never ends a sentence (compared lower-case, without the final dot).
_NEVER_FINAL = frozenset(
    {
        "mr",
        "mrs",
        "ms",
        "mx",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "mt",
        "rev",
        "hon",
        "gen",
        "col",
        "capt",
        "lt",
        "sgt",
        "cmdr",
        "gov",
        "sen",
        "rep",
        "pres",
        "e.g",
        "eg",
        "i.e",
        "ie",
        "cf",
        "viz",
        "vs",
        "approx",
    }
)
# These are abbreviations only before a number ("No. 5", "Fig. 3"); "I said no. Then" ends.
_BEFORE_NUMBER = frozenset(
    ["no", "nos", "fig", "figs", "vol", "vols", "p", "pp", "ch", "sec", "eq", "ca", "art"]
)
_TERMINATORS = ".!?…"
# What may follow a terminator and still belong to the sentence: closing quotes and brackets,
# and markdown emphasis markers (``**Done.**``).
_CLOSERS = "\"'”’»)]}*_`"
_SOFT_BREAKS = ",;:"
_FENCE = re.compile(r"^[ \t]*(```|~~~)")


class SentenceSplitter:
    """Incremental sentence splitter: ``feed`` text pieces, get complete sentences back.

    >>> splitter = SentenceSplitter()
    >>> splitter.feed("Dr. Smith has 3.5 cats. The")
    ['Dr. Smith has 3.5 cats.']
    >>> splitter.feed(" end")
    []
    >>> splitter.flush()
    ['The end']
    """

    def __init__(self, max_chars: int = 300) -> None:
        if max_chars < 20:
            raise ValueError("max_chars must be at least 20")
        self.max_chars = max_chars
        self._buffer = ""

    def feed(self, piece: str) -> list[str]:
        """Add a piece of text; return the sentences that it completed (maybe none)."""
        self._buffer += piece
        return self._drain(final=False)

    def flush(self) -> list[str]:
        """The text is complete: return whatever sentences remain and reset."""
        sentences = self._drain(final=True)
        self._buffer = ""
        return sentences

    def pending(self) -> str:
        """Text received but not yet returned as a sentence."""
        return self._buffer

    def _drain(self, final: bool) -> list[str]:
        sentences = []
        while True:
            stripped = self._buffer.lstrip()
            self._buffer = stripped
            if not stripped:
                return sentences
            end = _find_end(stripped, final, self.max_chars)
            if end is None:
                return sentences
            sentence = stripped[:end].strip()
            self._buffer = stripped[end:]
            if sentence:
                sentences.append(sentence)


def split_sentences(text: str, max_chars: int = 300) -> list[str]:
    """All the sentences of a complete text."""
    splitter = SentenceSplitter(max_chars)
    return splitter.feed(text) + splitter.flush()


def _find_end(text: str, final: bool, max_chars: int) -> int | None:
    """End index of the first complete sentence of ``text`` (no leading space), or None."""
    if _FENCE.match(text):
        return _fence_end(text, final)
    size = len(text)
    i = 0
    while i < size:
        char = text[i]
        if char == "\n":
            return i + 1
        if char == "`":
            skip = _inline_code_end(text, i, final, max_chars)
            if skip == -1:
                return None  # an open code span: its full stops are not sentence ends
            i = skip
            continue
        if char in _TERMINATORS:
            end = _terminator_end(text, i, final)
            if end == -1:
                return None  # cannot tell yet: wait for more text
            if end is not None:
                return end
        elif (
            char in _SOFT_BREAKS
            and i >= max_chars
            and i + 1 < size
            and text[i + 1] in " \t"
            and not _in_parentheses(text, i)
        ):
            return i + 1
        i += 1
    if final:
        return size
    return None


def _inline_code_end(text: str, start: int, final: bool, max_chars: int) -> int:
    """Index just past the inline code span opening at ``start``, or -1 to wait for its end.

    A run of backticks with no closing run on the same line is ordinary text once the line is
    complete (or long), so a stray backtick cannot hold up the speech.
    """
    run = start
    while run < len(text) and text[run] == "`":
        run += 1
    marker = text[start:run]
    line_end = text.find("\n", run)
    line = text[run:] if line_end == -1 else text[run:line_end]
    for match in re.finditer(r"`+", line):
        if match.group() == marker:
            return run + match.end()
    if line_end == -1 and not final and len(line) < max_chars:
        return -1
    return run


def _fence_end(text: str, final: bool) -> int | None:
    """A fenced code block is one unit: up to the end of its closing fence line."""
    first_newline = text.find("\n")
    if first_newline == -1:
        return len(text) if final else None
    marker = _FENCE.match(text).group(1)  # type: ignore[union-attr]
    position = first_newline + 1
    while True:
        newline = text.find("\n", position)
        line = text[position:] if newline == -1 else text[position:newline]
        if line.strip().startswith(marker) and (newline != -1 or final):
            return len(text) if newline == -1 else newline + 1
        if newline == -1:
            return len(text) if final else None
        position = newline + 1


def _terminator_end(text: str, index: int, final: bool) -> int | None:
    """After a terminator at ``index``: the sentence end, None if it is not one, -1 if unsure."""
    size = len(text)
    end = index
    while end < size and text[end] in _TERMINATORS:
        end += 1
    while end < size and text[end] in _CLOSERS:
        end += 1
    if end == size:
        return size if final else -1
    if not text[end].isspace():
        return None  # 3.14, v1.2, example.com, "what?!"-style run-ons
    after = end
    while after < size and text[after] in " \t\r":
        after += 1
    if after == size:
        return end if final else -1
    if text[after] == "\n":
        return end
    if text[after].islower():
        return None
    if text[index:end].rstrip(_CLOSERS) == "." and _is_abbreviation(text, index, text[after]):
        return None
    return end


def _is_abbreviation(text: str, dot: int, next_char: str) -> bool:
    """Whether the word before the full stop at ``dot`` keeps the sentence going."""
    start = dot
    while start > 0 and not text[start - 1].isspace() and text[start - 1] not in "([{\"'“‘":
        start -= 1
    word = text[start:dot]
    if not word:
        return False
    if word.lower() in _NEVER_FINAL:
        return True
    if word.lower() in _BEFORE_NUMBER and next_char.isdigit():
        return True
    if len(word) == 1 and word.isupper():
        return True  # an initial: J. R. R. Tolkien
    if word.lower() in ("a.m", "p.m"):
        return False  # "at 5 p.m. Then": a capital after the time starts a new sentence
    if re.fullmatch(r"(?:[A-Za-z]\.)+[A-Za-z]", word):
        return True  # U.S, e.g-like dotted abbreviations
    line_start = text.rfind("\n", 0, start) + 1
    before = text[line_start:start].strip()
    # "1. First item" at the start of a line, or after a colon ("Steps: 1. Open it."), is a
    # list number, not a sentence.
    return word.isdigit() and (not before or before.endswith(":"))


def _in_parentheses(text: str, index: int) -> bool:
    return text.count("(", 0, index) > text.count(")", 0, index)


# --- making text speakable ---------------------------------------------------------------

_CODE_BLOCK = re.compile(r"^[ \t]*(```|~~~).*?(?:^[ \t]*\1[^\n]*$|\Z)", re.MULTILINE | re.DOTALL)
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\((?:[^()]|\([^)]*\))*\)")
_AUTOLINK = re.compile(r"<((?:https?|ftp)://[^>\s]+|[\w.+-]+@[\w-]+\.[\w.-]+)>")
_URL = re.compile(
    r"(?:\b(?:https?|ftp)://|\bwww\.)[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]}]", re.IGNORECASE
)
_INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
_HEADER = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$", re.MULTILINE)
_SETEXT_RULE = re.compile(r"^[ \t]*(?:[-*_][ \t]*){3,}$|^[ \t]*=+[ \t]*$", re.MULTILINE)
_BLOCKQUOTE = re.compile(r"^[ \t]*(?:>[ \t]?)+", re.MULTILINE)
_BULLET = re.compile(r"^[ \t]*(?:[-*+•][ \t]+(?:\[[ xX]\][ \t]+)?|\d{1,3}[.)][ \t]+)", re.MULTILINE)
_TABLE_RULE = re.compile(r"^[ \t]*\|?[ \t]*:?-{2,}:?[ \t]*(?:\|[ \t]*:?-{2,}:?[ \t]*)*\|?[ \t]*$")
_EMPHASIS = (
    re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"),
    re.compile(r"(?<![\w*])(\*)(?=\S)(.+?)(?<=\S)\*(?![\w*])"),
    re.compile(r"(?<![\w_])(_)(?=\S)(.+?)(?<=\S)_(?![\w_])"),
    re.compile(r"(~~)(?=\S)(.+?)(?<=\S)~~"),
)
_MULTIPLY = re.compile(r"(?<=\d)[ \t]*\*[ \t]*(?=\d)")
_HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")
_STRAY_MARKUP = re.compile(r"\*+|`+|\|+|~~+|(?<!\w)_+|_+(?!\w)")
_INNER_UNDERSCORE = re.compile(r"(?<=[^\W_])_+(?=[^\W_])")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")


def speakable(text: str) -> str:
    """What a voice should say for ``text``: markdown removed, URLs read as "link".

    Fenced code blocks are left out entirely; inline code keeps its content. Table rows are
    read as their cells separated by commas; table rules, horizontal rules and other markup
    that has no sound become nothing. The result may be empty.
    """
    text = _CODE_BLOCK.sub("", text)
    text = _IMAGE.sub(lambda m: m.group(1), text)
    text = _LINK.sub(lambda m: m.group(1), text)
    text = _AUTOLINK.sub("link", text)
    text = _URL.sub("link", text)
    text = _INLINE_CODE.sub(lambda m: m.group(2).strip(), text)
    text = _MULTIPLY.sub(" times ", text)  # "5 * 3": the star is a sign here, not emphasis
    lines = [line for line in map(_speakable_line, text.splitlines()) if line]
    if len(lines) > 1:
        # Lines (headers, list items, table rows) read one after another need a pause.
        lines = [line if line[-1] in ".!?…:;," else line + "." for line in lines]
    text = " ".join(lines)
    text = _HTML_TAG.sub(" ", text)
    for pattern in _EMPHASIS:
        text = pattern.sub(lambda m: m.group(2), text)
    text = _STRAY_MARKUP.sub(" ", text)
    text = _INNER_UNDERSCORE.sub(" ", text)
    text = re.sub(r"\s+", " ", text).strip()
    return _SPACE_BEFORE_PUNCT.sub(r"\1", text)


def _speakable_line(line: str) -> str:
    if _TABLE_RULE.match(line) or _SETEXT_RULE.match(line):
        return ""
    stripped = line.strip()
    if stripped.startswith("|") or (stripped.endswith("|") and stripped.count("|") >= 2):
        cells = [cell.strip() for cell in stripped.strip("|").split("|")]
        return ", ".join(cell for cell in cells if cell)
    line = _HEADER.sub(r"\1", line)
    line = _BLOCKQUOTE.sub("", line)
    line = _BULLET.sub("", line)
    return line.strip()
