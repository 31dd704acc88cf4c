"""Splits a file map into records the way automount 5.1.8's file reader does.

A record is what the daemon reads as one unit (an entry, an include, a comment, or text it
drops) with the physical lines it covers. The quirks are the daemon's, measured against the
real automount in the lab: an indented line after an entry spoils the entry, an indented
line after a comment joins the comment, ``\\`` + CR LF is no continuation, a key left
alone with trailing blanks runs on into the next line's key, and a final line without a
line end that holds only blanks or an include is lost.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

KEY_MAX_BYTES = 255
ENTRY_MAX_BYTES = 16_384
_SPACE = " \t\n\v\f\r"
_BLANK = " \t"


class Kind(enum.Enum):
    ENTRY = "entry"
    INCLUDE = "include"
    COMMENT = "comment"
    DROPPED = "dropped"


class Why(enum.Enum):
    """Why the daemon drops or misreads a record; the words are the caller's to choose."""

    NO_VALUE = "no value"
    RUN_ON_KEY = "key runs on into the next line"
    UNMATCHED_QUOTE = "unmatched quote"
    KEY_TOO_LONG = "key too long"
    VALUE_TOO_LONG = "entry too long"
    INDENTED_LINE = "indented line after the entry"
    BAD_WILDCARD = "characters after the wildcard"
    ESCAPED_START = "escape at the start"
    ESCAPED_BLANK = "escaped blank at the start of the value"
    LOST_AT_END = "lost at the end of the file"
    SWALLOWED = "indented line swallowed by a comment"
    COMMENT_CONTINUED = "comment continued with a backslash"


@dataclass(frozen=True)
class Record:
    kind: Kind
    first_line: int
    last_line: int
    key: str
    value: str
    why: tuple[tuple[Why, int], ...] = ()


class _State(enum.Enum):
    BEGIN = enum.auto()
    KEY = enum.auto()
    STAR = enum.auto()
    GAP = enum.auto()
    VALUE = enum.auto()
    BAD = enum.auto()


class _Esc(enum.Enum):
    NONE = enum.auto()
    CHAR = enum.auto()  # this character is the backslash
    VAL = enum.auto()  # this character is the escaped one
    QUOTED = enum.auto()


class _Got(enum.IntEnum):
    NOTHING = 0
    STAR = 1
    REAL = 2
    PLUS = 3


@dataclass
class _Pending:
    first_line: int = 0
    key: list[str] = field(default_factory=list)
    key_bytes: int = 0
    value: list[str] = field(default_factory=list)
    value_bytes: int = 0
    got: _Got = _Got.NOTHING
    getting: _Got = _Got.NOTHING
    comment: bool = False
    indented_from: int = 0  # the first line of blanks-led lines after the entry, if any
    why: list[tuple[Why, int]] = field(default_factory=list)


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.state = _State.BEGIN
        self.esc = _Esc.NONE
        self.rec = _Pending()
        self.records: list[Record] = []

    def run(self) -> list[Record]:
        handlers = {
            _State.BEGIN: self._begin,
            _State.KEY: self._key,
            _State.STAR: self._star,
            _State.GAP: self._gap,
            _State.VALUE: self._value,
            _State.BAD: self._bad,
        }
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if self._continuation(ch):
                continue
            self._track_escape(ch)
            handlers[self.state](ch)
            if ch == "\n":
                self.line += 1
            self.pos += 1
        self._end_of_file()
        return self.records

    # -- escapes and continuations -------------------------------------------------------

    def _continuation(self, ch: str) -> bool:
        if self.esc is not _Esc.NONE or ch != "\\" or self._peek(1) != "\n":
            return False
        if self.state is _State.BAD and self.rec.comment:
            self.rec.why.append((Why.COMMENT_CONTINUED, self.line + 1))
        self.pos += 2
        self.line += 1
        return True

    def _track_escape(self, ch: str) -> None:
        if self.esc is _Esc.NONE:
            if ch == "\\":
                self.esc = _Esc.CHAR
            elif ch == '"':
                self.esc = _Esc.QUOTED
        elif self.esc is _Esc.CHAR:
            self.esc = _Esc.VAL
        elif self.esc is _Esc.VAL or ch == '"':
            self.esc = _Esc.NONE

    def _peek(self, ahead: int) -> str:
        at = self.pos + ahead
        return self.text[at] if at < len(self.text) else ""

    # -- states ------------------------------------------------------------------------

    def _begin(self, ch: str) -> None:
        if self.esc is _Esc.NONE and ch in _SPACE:
            return
        self._start()
        if self.esc is _Esc.CHAR:
            return
        if self.esc is _Esc.VAL:
            self._spoil(Why.ESCAPED_START, got=_Got.NOTHING)
        elif self.esc is _Esc.QUOTED:
            self._add_key(ch)
            self.state = _State.KEY
        elif ch == "#":
            self.rec.comment = True
            self.state = _State.BAD
        elif ch == "*":
            self._add_key(ch)
            self.state = _State.STAR
        else:
            if ch == "+":
                self.rec.got = _Got.PLUS
            self._add_key(ch)
            self.state = _State.KEY

    def _key(self, ch: str) -> None:
        if ch == "\n":
            self.state = _State.BEGIN
            if self.rec.got is _Got.PLUS:
                self._emit(Kind.INCLUDE)
            elif self.esc is _Esc.QUOTED:
                self._drop(Why.UNMATCHED_QUOTE)
            else:
                self._drop(Why.NO_VALUE)
        elif ch in _SPACE and self.esc is _Esc.NONE:
            self.rec.getting = _Got.REAL
            self.state = _State.GAP
            if self.rec.got is _Got.PLUS:
                self._emit(Kind.INCLUDE)
        elif self.esc is _Esc.CHAR:
            return
        elif self.rec.key_bytes >= KEY_MAX_BYTES:
            self._spoil(Why.KEY_TOO_LONG, got=_Got.NOTHING)
        else:
            if self.esc is _Esc.VAL:
                self._add_key("\\")
            self._add_key(ch)

    def _star(self, ch: str) -> None:
        if ch == "\n":
            self.rec.why.append((Why.RUN_ON_KEY, self.line))
            self.state = _State.BEGIN
        elif ch in _SPACE and self.esc is _Esc.NONE:
            self.rec.getting = _Got.STAR
            self.state = _State.GAP
        elif self.esc is not _Esc.CHAR:
            self._spoil(Why.BAD_WILDCARD, got=_Got.NOTHING)

    def _gap(self, ch: str) -> None:
        if ch == "\n":
            self.rec.why.append((Why.RUN_ON_KEY, self.line))
            self.state = _State.BEGIN
        elif ch not in _SPACE or self.esc is not _Esc.NONE:
            if self.esc is _Esc.CHAR:
                return
            if self.esc is not _Esc.NONE and ord(ch) <= 32:
                self.rec.getting = _Got.NOTHING
                self._spoil(Why.ESCAPED_BLANK, got=self.rec.got)
                return
            if self.esc is _Esc.VAL:
                self._add_value("\\")
            self._add_value(ch)
            self.rec.got = self.rec.getting
            self.state = _State.VALUE

    def _value(self, ch: str) -> None:
        if ch == "\n":
            if self.esc is _Esc.QUOTED:
                self.state = _State.BEGIN
                self._drop(Why.UNMATCHED_QUOTE)
            elif self._peek(1) in _BLANK and self._peek(1):
                self.rec.indented_from = self.line + 1
                self.state = _State.BAD
            else:
                self.state = _State.BEGIN
                self._emit(Kind.ENTRY)
        elif self.rec.value_bytes < ENTRY_MAX_BYTES:
            self._add_value(ch)
            if not self._peek(1):
                self._emit(Kind.ENTRY)
        else:
            self._spoil(Why.VALUE_TOO_LONG, got=self.rec.got)

    def _bad(self, ch: str) -> None:
        if ch == "\n":
            nxt = self._peek(1)
            if nxt and nxt in _BLANK:
                if self.rec.comment:
                    self.rec.why.append((Why.SWALLOWED, self.line + 1))
                return
            self.state = _State.BEGIN
            if self.rec.comment:
                self._emit(Kind.COMMENT)
            else:  # only blanks on the indented lines leave the entry intact
                self._emit(Kind.ENTRY if self.rec.got is not _Got.NOTHING else Kind.DROPPED)
        elif ch not in _BLANK and not self.rec.comment:
            rec = self.rec
            if rec.got is not _Got.NOTHING and rec.indented_from and self.line >= rec.indented_from:
                rec.why.append((Why.INDENTED_LINE, self.line))
            rec.got = _Got.NOTHING

    # -- records -----------------------------------------------------------------------

    def _start(self) -> None:
        if not self.rec.first_line:
            self.rec.first_line = self.line

    def _add_key(self, ch: str) -> None:
        self.rec.key.append(ch)
        self.rec.key_bytes += _byte_len(ch)

    def _add_value(self, ch: str) -> None:
        self.rec.value.append(ch)
        self.rec.value_bytes += _byte_len(ch)

    def _spoil(self, why: Why, *, got: _Got) -> None:
        self.rec.why.append((why, self.line))
        self.rec.got = got
        self.state = _State.BAD

    def _drop(self, why: Why) -> None:
        self.rec.why.append((why, self.line))
        self._emit(Kind.DROPPED)

    def _emit(self, kind: Kind) -> None:
        rec = self.rec
        self.records.append(
            Record(
                kind=kind,
                first_line=rec.first_line or self.line,
                last_line=self.line,
                key="".join(rec.key),
                value="".join(rec.value),
                why=tuple(rec.why),
            )
        )
        self.rec = _Pending()
        self.esc = _Esc.NONE
        self.state = _State.BEGIN  # the daemon reads the next record afresh

    def _end_of_file(self) -> None:
        rec = self.rec
        if self.state is _State.BEGIN:
            if not rec.first_line:
                return
            rec.why = [(why, line) for why, line in rec.why if why is not Why.RUN_ON_KEY]
        if rec.comment:
            self._emit(Kind.COMMENT)
            return
        if rec.got is _Got.PLUS or self.state is _State.VALUE:
            rec.why.append((Why.LOST_AT_END, self.line))
        elif self.state is _State.BAD:
            if rec.got is not _Got.NOTHING:
                rec.why.append((Why.LOST_AT_END, self.line))
        elif rec.key:
            rec.why.append((Why.NO_VALUE, self.line))
        self._emit(Kind.DROPPED)


def _byte_len(ch: str) -> int:
    try:
        return len(ch.encode("utf-8", "surrogateescape"))  # one byte read as not UTF-8
    except UnicodeEncodeError:
        return len(ch.encode("utf-8", "surrogatepass"))


def read_records(text: str) -> list[Record]:
    """The records of ``text`` in file order (``\\r`` is a blank, as for the daemon)."""
    return _Reader(text).run()
