"""models.regex_limits: what compiling a visitor's pattern may cost is bounded before `regex` compiles it."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
import regex

from models import probes
from models.errors import RnnscopeError
from models.regex_limits import MAX_PROGRAM, MAX_REPEAT, RegexLimitError, check

COUNT = f"exceeds the limit of {MAX_REPEAT:,} repeats"
SIZE = f"over the limit of {MAX_PROGRAM:,} steps"


@pytest.mark.parametrize("pattern, message", [
    ("a{2000000}b", "{2000000} " + COUNT),  # 0.4 s and ~130 MB to compile, unchecked
    ("(?:(?:a{1000}){1000}){1000}", SIZE),  # each count is allowed; multiplied out they are 10^9
    ("a{4294967294}", "{4294967294} " + COUNT),  # never finishes compiling
    ("(a{999}){999}", SIZE),
    ("(?:a{1000}){10}", SIZE),
    ("(?:a|b{1000}){1000}", SIZE),  # a repeat inside one branch of a repeated group
    ("(?:(?R)|a{1000}){1000}", SIZE),
    ("(?:a{1000}){1000,}", SIZE),
    ("a{0,4294967294}", "{0,4294967294} " + COUNT),  # the upper bound counts too
    ("a{1001}", "{1001} " + COUNT),
    ("a{1001,}", "{1001,} " + COUNT),
    ("a{,1001}", "{,1001} " + COUNT),
    ("a{99999999999999999999999999999}", COUNT),  # more digits than int() takes without a limit
    ("a(?i){1001}", COUNT),  # inline flags and comments are not something to repeat: the a before them is
    ("a(?#note){1001}", COUNT),
    (r"\N{1000,2000}", "{1000,2000} " + COUNT),  # not a character name, so \N is a literal N, repeated
    (r"\g<a{5000}>", "{5000} " + COUNT),  # not a group name: \g, <, a{5000}, >
    ("[[a]{5000}]", "{5000} " + COUNT),  # version 0: the class ends at the first ], the repeat is real
    ("[]a]{5000}", "{5000} " + COUNT),  # "]" first in a class is a member
    (r"[\]]{5000}", "{5000} " + COUNT),
    ("(?i)(?:[\\w--\\d]){100}", SIZE),  # case folding makes each such class ~40 KB
    ("(?V1fi)(?:[\\p{L}\\p{N}]){100}", SIZE),
    ("(?i)" + "[\\w\\d]" * 70, SIZE),  # no repeat, but 70 case-folded classes of ~40 KB each
    ("(" * 101 + "a" + ")" * 101, "nests groups more than 100 deep"),
    ("(?x)a{1 0 0 0 0}", "verbose mode (?x)"),  # its spaces reach inside counts
    ("(?V0V1)a", "VERSION0 and VERSION1 flags are mutually incompatible"),  # a ValueError from regex, not a 500
    ("(?#" + "x" * 5_000 + ")", "characters long; the limit is 5,000"),  # GET /ui/find-units does not cap it first
    ("a{1000}" + "[[a]{5000}]" + "(?x)", "{5000} " + COUNT),  # the first limit broken is the one named
])
def test_refused_before_compiling(pattern, message):
    with pytest.raises(RegexLimitError, match=regex.escape(message)):
        check(pattern)


@pytest.mark.parametrize("pattern", [
    "[A-Z][a-z]+", r"\w+", "h.t", r"\d{1,3}(?:,\d{3})*", r"(?i)\bthe\b", r'"[^"]*"', r"[\s\S]",
    "[a{9999}]",  # a class holding { 9 }, not a repeat
    r"\{9999}",  # an escaped {: a literal
    "(?:foo){e<=2}", "(?:foo){i<=1,d<=1,s<=2}", "(?:cat){e<=1:[a-z]}",  # fuzzy constraints repeat nothing
    "a{1000}", "a{0,1000}", "a{1000,}", "a{,}", r"(?:\w+\s){0,1000}", "(?:(?:a{10}){10}){10}", "(?:a{90}){90}",
    "[[:alpha:]{5000}]",  # the POSIX class, then { 5 0 0 0 } as members
    "(?V1)[[a]{5000}]", "[[a]{5000}](?V1)",  # version 1 (which is global wherever it is set): a nested class
    r"\p{Greek}{3}", r"\p{Script=Latin}+", r"\pL{2}", r"\N{LATIN SMALL LETTER A}{3}", r"\x41{3}",
    "(?P<word>[a-z]+) (?P=word)", "(?<w>x)(?&w){10}", r"(\w)\1", "(?(1)a|b)", "(?(?=a)ab|c)", "(?>a+)b", "(?|(a)|(b))",
    "(*PRUNE)a", "(?#a{100000})b",  # a comment is skipped whatever it holds
    "(", "([", "a)", "a{5}{6}", "*a",  # broken: the module says how (nothing here could be large)
])
def test_accepted(pattern):
    assert 0 <= check(pattern) <= MAX_PROGRAM


@pytest.mark.parametrize("pattern", ["a{1000}", "(?:a{90}){90}", "(?:(?:(a)|b){37}){37}", "(?:(?<=a)b){1000}",
                                     r"(?:\X){1000}", "(?fi)(?:[\\x00-\\U0010ffff]){60}", "(?V1fi)(?:[\\w--\\d]){61}",
                                     "(?V1fi)" + "[\\w--\\d]" * 50])
def test_what_is_accepted_compiles_fast(pattern):
    check(pattern)
    t0 = time.perf_counter()
    regex.compile(pattern, cache_pattern=False)
    assert time.perf_counter() - t0 < 0.25  # ~5 ms unloaded (the largest, 50 folded classes, ~25 ms)


def test_the_probe_refuses_bombs_with_a_message_and_keeps_ordinary_behaviour():
    with pytest.raises(RnnscopeError, match=r"\{2000000\} exceeds the limit of 1,000 repeats"):
        probes.labels("regex", "aab", "a{2000000}b")
    with pytest.raises(RnnscopeError, match="invalid regular expression: missing \\)"):
        probes.labels("regex", "abc", "(")
    with pytest.raises(RnnscopeError, match="invalid regular expression: VERSION0 and VERSION1"):
        probes.labels("regex", "abc", "(?V0V1)a")
    assert probes.labels("regex", "cat hat", "h.t").tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert np.array_equal(probes.labels("regex", "aaa", "a{2}"), [True, True, False])


def test_patterns_are_not_kept_by_the_regex_module():
    main = sys.modules[regex.compile.__module__]
    before = (len(main._cache), len(main._locale_sensitive))
    for k in range(50):
        probes.regex_mask("abc", f"b{k}x?")
    assert (len(main._cache), len(main._locale_sensitive)) == before
