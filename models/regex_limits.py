"""Bounds on what compiling a visitor's regular expression may cost, checked before `regex` compiles it.

The regex probe's matching runs under a timeout, but compiling does not: the `regex` module writes
every counted repeat out in full, so `a{2000000}b` or `(?:(?:a{1000}){1000}){1000}` takes seconds and
hundreds of MB before a single character is matched (and `a{4294967294}` never finishes). `check`
reads the pattern the way the module's parser does, just far enough to see its structure (escapes,
character classes with their V1 nesting and set operators, groups and inline flags, quantifiers, and
fuzzy constraints like `{e<=2}`, which repeat nothing), and refuses it when

* a counted repeat is over MAX_REPEAT ({1001}, {0,4294967294}, {2000,}),
* its program, with every repeat multiplied out (nested repeats multiply), is over MAX_PROGRAM units
  (a unit is about what one literal character costs: ~260 bytes of compiled program, ~0.3 µs), or
* groups or classes nest deeper than MAX_DEPTH (the module's parser recurses, and a deep enough
  pattern is a RecursionError rather than a message), or it is longer than MAX_LENGTH characters.

The bound is deliberately pessimistic: a repeat counts its upper bound ({0,50} counts 50, though the
module writes out only the minimum), and under case-insensitive matching a class with a property,
a wide range or a set operation counts as ~160 units (full case folding turns `[\\w--\\d]` into ~40 KB).
Measured on this module (regex 2026.11), the largest pattern allowed compiles in under ~15 ms to a
few MB. Verbose mode (?x) is refused outright: its whitespace and comments reach inside counts
(`a{1 0 0 0 # ...}` is a{1000...}) and reading it exactly is more than a probe needs.

When this reader meets something it does not follow (an unclosed group, a stray `)`), the pattern is
almost always one the module rejects too, with a better message: it is let through only when no
reading of it could be large (its length times the product of every number in it is under the
limit), so `(` still gets "missing )" from the module; otherwise it is refused here.
"""

from __future__ import annotations

import re
import unicodedata

from .errors import RnnscopeError

MAX_REPEAT = 1_000  # the largest count a {n}, {n,}, {,m} or {n,m} may have
MAX_PROGRAM = 10_000  # units of compiled program, repeats multiplied out (see above)
MAX_DEPTH = 100  # groups and classes inside each other
MAX_LENGTH = 5_000  # characters (the panel and the API take 500; GET /ui/find-units is not capped before this)

REPEAT_COST = 3  # a repeat node around its body
GROUP_COST = {"capture": 3, "look": 3, "atomic": 2, "cond": 3, "plain": 1}
HEAVY_CLASS = 160  # a case-insensitive class with a property, a wide range or a set operation
HEAVY_ATOM = 5  # \X, \R, and a non-ASCII literal under case-insensitive matching (full case folding)
EMPTY_CAPTURE = 10  # a capture group with nothing in it, (): ~12 µs a copy to compile, 40 times a literal's

_NAMED_CHAR_PART = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 -")
_PROPERTY_PART = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 &_-.")
_PROPERTY_VALUE = _PROPERTY_PART | frozenset("/")
_DIGITS = frozenset("0123456789")
_HEX = frozenset("0123456789abcdefABCDEF")
_FLAG_LETTERS = frozenset("abefiLmprsuwx")
_SET_OPS = ("||", "~~", "&&", "--")
_CLASS_ESCAPES = frozenset("dDsSwWhHpPvV")  # escapes that stand for a class, not one character
_HEX_LEN = {"x": 2, "u": 4, "U": 8}
_COUNTED = re.compile(r"\{([0-9]*)(?:(,)([0-9]*))?\}")  # {n}, {n,}, {,m}, {n,m}, {,}: the module's repeat counts


class RegexLimitError(RnnscopeError):
    """The pattern would cost too much to compile (or could not be checked): the message says which."""


class _Unsure(Exception):
    def __init__(self, pos: int, what: str):
        self.pos, self.what = pos, what


class _Frame:
    __slots__ = ("done", "branch", "last", "cost", "start", "kind", "filled")

    def __init__(self, cost: int, start: int, kind: str = "plain"):
        self.done = 0  # the finished branches of this group
        self.branch = 0  # the branch being read
        self.last: int | None = None  # what a quantifier here would repeat; None: nothing (the module says so)
        self.cost = cost
        self.start = start
        self.kind = kind
        self.filled = False  # holds something other than groups (empty capture groups compile slowly)

    @classmethod
    def group(cls, kind: str, start: int) -> "_Frame":
        """A group of `kind` opened at `start`, at that kind's cost."""
        return cls(GROUP_COST[kind], start, kind)

    def add(self, w: int, filled: bool = True) -> None:
        self.branch += w
        self.last = w
        self.filled |= filled


def _enter(stack: list[_Frame], kind: str, start: int, after: int) -> int:
    """Open a group of `kind` at `start` on `stack`; the reading goes on at `after`."""
    stack.append(_Frame.group(kind, start))
    return after


def check(pattern: str) -> int:
    """The pattern's compiled size bound, in units; RegexLimitError when it must not be compiled."""
    if len(pattern) > MAX_LENGTH:
        raise RegexLimitError(f"the regular expression is {len(pattern):,} characters long; the limit is "
                              f"{MAX_LENGTH:,}")
    mode = (False, False)  # (version 1, case-insensitive somewhere): both change how it reads
    seen: set[str] = set()  # like the module's global flags, what one reading turns on stays on for the next
    for _ in range(4):
        result = _Scan(pattern, *mode).run()
        seen |= result.flags
        if "V0" in seen and "V1" in seen:
            raise RegexLimitError("invalid regular expression: VERSION0 and VERSION1 flags are mutually incompatible")
        new = ("V1" in seen, "i" in seen)
        if new == mode:
            break
        mode = new
    else:
        raise RegexLimitError("the regular expression could not be checked before compiling (its inline flags "
                              "change how it reads): simplify it")
    if result.refusal:
        raise RegexLimitError(result.refusal)
    if result.unsure is not None:
        if _raw_bound(pattern) <= MAX_PROGRAM:
            return 0  # nothing in it could be large: let the module say what is wrong with it
        raise RegexLimitError(f"the regular expression could not be checked before compiling "
                              f"({result.unsure.what} at position {result.unsure.pos}): simplify it")
    return result.size


def _raw_bound(pattern: str) -> int:
    """A bound that holds however the pattern reads: its length x the heaviest unit x every number in it."""
    bound = len(pattern) * HEAVY_CLASS
    for run in re.findall(r"[0-9]+", pattern):
        if len(run) > 6:
            return MAX_PROGRAM + 1
        bound *= max(1, int(run))
        if bound > MAX_PROGRAM:
            return bound
    return bound


class _Scan:
    def __init__(self, p: str, v1: bool, icase: bool):
        self.p, self.n, self.v1, self.icase = p, len(p), v1, icase
        self.flags: set[str] = set()
        self.refusal = ""  # the first limit broken (the scan goes on, to see every inline flag)
        self.unsure: _Unsure | None = None
        self.size = 0

    # ---- the limits
    def _over(self, size: int) -> int:
        if size > MAX_PROGRAM:
            if not self.refusal:
                self.refusal = (f"the regular expression is too big: with its repeats multiplied out (nested "
                                f"repeats multiply) it comes to over the limit of {MAX_PROGRAM:,} steps; "
                                "use smaller counts, fewer nested repeats or a shorter pattern")
            return MAX_PROGRAM + 1  # keep the numbers small; it is refused anyway
        return size

    def _count(self, digits: str, text: str) -> int:
        if len(digits) > 7 or int(digits) > MAX_REPEAT:
            if not self.refusal:
                shown = text if len(text) <= 40 else text[:37] + "..."
                self.refusal = (f"the regular expression repeats too much: {shown} exceeds the limit of "
                                f"{MAX_REPEAT:,} repeats")
            return MAX_REPEAT
        return int(digits)

    def run(self) -> _Scan:
        try:
            self.size = self._read()
        except _Unsure as e:
            self.unsure = e
        return self

    # ---- the pattern, group by group (a stack, not recursion: nesting is bounded by MAX_DEPTH anyway)
    def _read(self) -> int:
        p, n = self.p, self.n
        stack = [_Frame(0, 0)]
        i = 0
        while i < n:
            c = p[i]
            f = stack[-1]
            if c == "\\":
                w, i = self._escape(i)
                f.add(w)
            elif c == "[":
                w, i = self._class(i, len(stack))
                f.add(w)
            elif c == "(":
                i = self._open(i, stack)
                if len(stack) > MAX_DEPTH and not self.refusal:
                    self.refusal = (f"the regular expression nests groups more than {MAX_DEPTH} deep: "
                                    "simplify it")
            elif c == ")":
                if len(stack) == 1:
                    raise _Unsure(i, "a ) with no ( before it")
                done = stack.pop()
                cost = EMPTY_CAPTURE if done.kind == "capture" and not done.filled else done.cost
                stack[-1].add(self._over(done.done + done.branch + cost), done.filled)
                i += 1
            elif c == "|":
                f.done = self._over(f.done + f.branch + 1)
                f.branch, f.last = 0, None
                i += 1
            elif c in "?*+":
                lo, hi = {"?": (0, 1), "*": (0, None), "+": (1, None)}[c]
                i = self._repeat(f, lo, hi, i + 1)
            elif c == "{":
                m = _COUNTED.match(p, i)
                if m and (m.group(1) or m.group(2)):
                    text = m.group(0)
                    lo = self._count(m.group(1), text) if m.group(1) else 0
                    if m.group(2):
                        hi = self._count(m.group(3), text) if m.group(3) else None
                    else:
                        hi = lo
                    i = self._repeat(f, lo, hi, m.end())
                else:  # a literal "{", or a fuzzy constraint such as {e<=2}, which repeats nothing
                    f.add(1)
                    i += 1
            else:
                f.add(HEAVY_ATOM if self.icase and ord(c) > 127 else 1)
                i += 1
            if f.branch > MAX_PROGRAM:
                f.branch = self._over(f.branch)
        if len(stack) > 1:
            raise _Unsure(stack[-1].start, "a ( that is never closed")
        top = stack[0]
        return self._over(top.done + top.branch)

    def _repeat(self, f: _Frame, lo: int, hi: int | None, i: int) -> int:
        if i < self.n and self.p[i] in "?+":  # lazy or possessive
            i += 1
        if f.last is None:  # nothing to repeat, or a repeat of a repeat: the module refuses it
            return i
        times = max(1, hi if hi is not None else lo + 1)
        body = f.last
        f.branch = self._over(f.branch - body + self._over(body * times + REPEAT_COST))
        f.last = None
        return i

    def _name_end(self, i: int, stop: str = ")>") -> tuple[int, str]:
        """Where a group name starting at i ends (the index of ")" or ">") and which one ends it."""
        p = self.p
        for j in range(i, self.n):
            if p[j] in stop:
                return j, p[j]
        raise _Unsure(i, "a group name that never ends")

    def _past_name(self, i: int, j: int, closer: str, what: str) -> int:
        """Just past the name starting at j when `closer` ends it; unsure of the group at i (`what`) otherwise."""
        end, by = self._name_end(j)
        if by != closer:
            raise _Unsure(i, what)
        return end + 1

    def _open(self, i: int, stack: list[_Frame]) -> int:
        p, n = self.p, self.n
        j = i + 1
        nxt = p[j] if j < n else ""
        if nxt == "?":
            k = j + 1
            ch = p[k] if k < n else ""
            if ch == "<":
                if p[k + 1 : k + 2] in ("=", "!"):
                    return _enter(stack, "look", i, k + 2)
                return _enter(stack, "capture", i, self._past_name(i, k + 1, ">", "a group name without >"))
            if ch in ("=", "!"):
                return _enter(stack, "look", i, k + 1)
            if ch == "P":
                c2 = p[k + 1 : k + 2]
                end, by = self._name_end(k + 2)
                if c2 == "<" and by == ">":
                    return _enter(stack, "capture", i, end + 1)
                if c2 in ("=", ">", "&") and by == ")":
                    stack[-1].add(1)
                    return end + 1
                raise _Unsure(i, "an unknown (?P group")
            if ch == "#":  # a comment: the module skips it, and a quantifier after it repeats what came before
                m = k + 1
                while m < n and p[m] != ")":
                    m += 2 if p[m] == "\\" else 1
                if m >= n:
                    raise _Unsure(i, "a (?# comment that is never closed")
                return m + 1
            if ch == "(":
                if p[k + 1 : k + 2] == "?":
                    look = p[k + 2 : k + 3] in ("=", "!") or p[k + 2 : k + 4] in ("<=", "<!")
                    if not look:
                        raise _Unsure(i, "a conditional that is not a lookaround")
                    stack.append(_Frame.group("cond", i))
                    return _enter(stack, "look", k, k + (3 if p[k + 2] in "=!" else 4))
                return _enter(stack, "cond", i, self._past_name(i, k + 1, ")", "a conditional's group name without )"))
            if ch in (">", "|"):
                return _enter(stack, "atomic", i, k + 1)
            if ch == "R" or ch in _DIGITS or ch == "&" or (ch in "+-" and p[k + 1 : k + 2] in _DIGITS):
                end = self._past_name(i, k + 1, ")", "a group call without )")
                stack[-1].add(1)
                return end
            return self._flags(i, k, stack)
        if nxt == "*" and p[j + 1 : j + 2].isalpha():  # a backtracking verb, (*PRUNE)
            end = self._past_name(i, j + 1, ")", "a verb without )")
            stack[-1].add(1)
            return end
        return _enter(stack, "capture", i, j)

    def _flag_set(self, k: int) -> tuple[set[str], int]:
        p, found = self.p, set()
        while k < self.n:
            if p[k] == "V" and p[k + 1 : k + 2] in ("0", "1"):
                found.add(p[k : k + 2])
                k += 2
            elif p[k] in _FLAG_LETTERS:
                found.add(p[k])
                k += 1
            else:
                break
        return found, k

    def _flags(self, i: int, k: int, stack: list[_Frame]) -> int:
        p = self.p
        on, k = self._flag_set(k)
        if p[k : k + 1] == "-":
            off, k = self._flag_set(k + 1)
            if not off:
                raise _Unsure(i, "inline flags with nothing after -")
        self.flags |= on
        if "x" in on and not self.refusal:
            self.refusal = ("the regular expression turns on verbose mode (?x), which the probe does not take: "
                            "write it without (?x), spaces and # comments")
        if p[k : k + 1] == ":":
            return _enter(stack, "plain", i, k + 1)
        if p[k : k + 1] == ")":
            return k + 1  # inline flags: nothing to repeat here, a quantifier after them repeats what came before
        raise _Unsure(i, "an unknown (? group")

    # ---- escapes and classes
    def _run_end(self, k: int, chars, stop: int | None = None) -> int:
        """Where the run of `chars` starting at k ends (at `stop` at the latest)."""
        p, stop = self.p, self.n if stop is None else min(self.n, stop)
        while k < stop and p[k] in chars:
            k += 1
        return k

    def _escape(self, i: int) -> tuple[int, int]:
        """An escape outside a class: its weight and where it ends."""
        p, n = self.p, self.n
        if i + 1 >= n:
            raise _Unsure(i, "a \\ at the end")
        c = p[i + 1]
        j = i + 2
        if c in _HEX_LEN:
            return 1, self._run_end(j, _HEX, j + _HEX_LEN[c])
        if c in _DIGITS:
            return 1, self._run_end(j, _DIGITS, i + 4)
        if c == "N" and p[j : j + 1] == "{":
            end = self._run_end(j + 1, _NAMED_CHAR_PART)
            if end < n and p[end] == "}":
                return (HEAVY_ATOM if self.icase else 1), end + 1
            return 1, j
        if c in "pP":
            end = self._property_end(j)
            return (HEAVY_ATOM if self.icase else 1), (end if end is not None else j)
        if c == "g" and p[j : j + 1] == "<":
            end, by = self._name_end(j + 1) if ">" in p[j:] or ")" in p[j:] else (j, "")
            name = p[j + 1 : end]
            if by == ">" and name and (name.isdigit() or name.isidentifier()):
                return 1, end + 1
            return 1, j
        if c in "XR":
            return HEAVY_ATOM, j
        return 1, j

    def _property_end(self, j: int) -> int | None:
        """Where \\p's property ends, when what follows \\p at j is one (the module reads it as a literal p otherwise)."""
        p = self.p
        if p[j : j + 1] == "{":
            k = self._property_name_end(j + 1)
            return k + 1 if p[k : k + 1] == "}" else None
        if p[j : j + 1] and p[j] in "CLMNPSZ":
            return j + 1
        return None

    def _property_name_end(self, k: int) -> int:
        """Where a property's name, as in \\p{^name=value} or [:^name:], starting at k, ends (^ and =value included)."""
        p, n = self.p, self.n
        if p[k : k + 1] == "^":
            k += 1
        k = self._run_end(k, _PROPERTY_PART)
        if k < n and p[k] in ":=":
            m = self._run_end(k + 1, _PROPERTY_VALUE)
            if p[k + 1 : m].strip():
                k = m
        return k

    def _posix_end(self, j: int) -> int | None:
        """Where a POSIX class [:name:] starting at j ends, if it is one."""
        k = self._property_name_end(j + 2)
        return k + 2 if self.p[k : k + 2] == ":]" else None

    def _class(self, i: int, depth: int) -> tuple[int, int]:
        """A character class [...] at i (nested classes and set operators in version 1): its weight and end."""
        p, n = self.p, self.n
        j = i + 1
        if p[j : j + 1] == "^":
            j += 1
        members, heavy, levels = 0, False, 1
        first = True  # at a class's first member, where "]" is a literal
        prev: int | None = None  # the last member's code point, when it was one known character
        char_before = False  # the last member was one character, so a "-" after it makes a range
        ranging = False  # a "-" after a character: the next member ends a range
        while True:
            if j >= n:
                raise _Unsure(i, "a [ that is never closed")
            c = p[j]
            if not first and c == "]":
                levels -= 1
                j += 1
                if levels == 0:
                    break
                char_before = ranging = False
                continue
            if self.v1 and not first and p[j : j + 2] in _SET_OPS:
                heavy = True
                j += 2
                first, char_before, ranging = True, False, False
                continue
            first = False
            members += 1
            value: int | None
            if c == "\\":
                if j + 1 >= n:
                    raise _Unsure(j, "a \\ at the end")
                if p[j + 1] in _CLASS_ESCAPES:
                    heavy, char_before, ranging = True, False, False
                    j += 2
                    continue
                value, j = self._class_char_escape(j)
            elif c == "[" and p[j + 1 : j + 2] == ":" and self._posix_end(j) is not None:
                heavy, char_before, ranging = True, False, False
                j = self._posix_end(j)
                continue
            elif c == "[" and self.v1:
                heavy = True
                levels += 1
                if levels + depth > MAX_DEPTH and not self.refusal:
                    self.refusal = f"the regular expression nests classes more than {MAX_DEPTH} deep: simplify it"
                j += 1
                if p[j : j + 1] == "^":
                    j += 1
                first, char_before, ranging = True, False, False
                continue
            elif c == "-" and char_before and not ranging:
                ranging, char_before = True, False
                j += 1
                continue
            else:
                value = ord(c)
                j += 1
            if ranging:  # the end of a range: a wide one is what case folding makes heavy
                if prev is None or value is None or value - prev > 4096:
                    heavy = True
                ranging, char_before = False, False
            else:
                char_before = True
            prev = value
        weight = (HEAVY_CLASS + members) if (heavy and self.icase) else (1 + members // 4)
        return weight, j

    def _class_char_escape(self, j: int) -> tuple[int | None, int]:
        """A one-character escape in a class at j: its code point (None: not worked out) and its end."""
        p = self.p
        e = p[j + 1]
        k = j + 2
        if e in _HEX_LEN:
            end = self._run_end(k, _HEX, k + _HEX_LEN[e])
            return (int(p[k:end], 16) if end == k + _HEX_LEN[e] else None), end
        if e in _DIGITS:
            end = self._run_end(k, "01234567", j + 4)
            return int(p[j + 1 : end], 8) if p[j + 1] in "01234567" else None, end
        if e == "N" and p[k : k + 1] == "{":
            end = p.find("}", k)
            if end > 0:
                try:
                    return ord(unicodedata.lookup(p[k + 1 : end])), k
                except KeyError:
                    return None, k
            return None, k
        return ord(e), k
