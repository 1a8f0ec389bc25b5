"""Lexical guards: the part of a semantic match that an embedding cannot be trusted with.

Why this exists: on question pairs a sentence embedding scores one-word edits that change the
answer ("order 48213" / "48231", "include" / "exclude", "Camden" / "Brixton", "iPhone" /
"Android") as high as true paraphrases, so no cosine threshold alone is both useful and safe
(docs/semantic.md has the measured table). What the embedding is good at is confirming that
two texts which say the same thing in the same words *are* the same; what it is bad at is
noticing the one word that differs. So the default decision is lexical first:

* :func:`signature` reduces a question to what can change its answer: content words (question
  words, negations, modals of obligation and tense markers included), numbers with their units,
  and, when the sentence has a direction ("from X to Y", "than"), the order of those words.
  Politeness, fillers ("hi, quick one:"), case, punctuation, contractions, plural endings and
  the pronouns a customer uses to address a service are dropped.
* Two questions are *lexically equivalent* when their signatures are equal, allowing only
  spelling slips (one edit in a long word that is not a known minimal pair).
* :func:`hard_conflicts` lists the differences no evidence may override (numbers, negation,
  known antonyms, proper names); the verifier and learned per-entry thresholds may only relax
  the content-word rule, never these.

Everything here is a pure function of the two texts: cheap (tens of µs), deterministic, and
identical in every process, which keeps a shared cache's decisions consistent.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "Signature",
    "hard_conflicts",
    "lexically_equivalent",
    "signature",
]


def _words(text: str) -> list[str]:
    return text.split()


# Words whose presence or absence never changes what a question asks: articles, auxiliaries
# of the present, the first and second person (a customer's "my order" and "your opening
# hours" address the same service; their roles are kept apart, see _PERSONS), politeness
# and speech fillers.
_STOP = frozenset(
    _words(
        """
    a an the is are am be been being do does doing done can could will would shall it
    its this that these those there of for at by with about as and but so then also just
    really actually basically like please pls plz kindly thanks thank thx cheers ta hi
    hello hey hiya morning afternoon evening team there um uh er erm hmm ok okay yeah
    yes well oh any some get got have has having
    """
    )
)
# Not in _STOP on purpose (each changes answers): question words; not/no/never/without;
# should/must/may/might/need (obligation); did/was/were/had (tense); to/from/in/on/off/
# up/down/out/over/under/before/after/into (direction, state); only/or/here; he/she/they
# (another person). "I" and "you" are kept apart from the words, as roles: see _PERSONS.
_PERSONS = {
    **dict.fromkeys(_words("i me my mine myself we us our ours ourselves"), "1"),
    **dict.fromkeys(_words("you your yours yourself yourselves"), "2"),
}

# Leading or trailing chatter that carries no request ("Hi, quick one:", "Many thanks").
_FILLER_PATTERNS = [
    r"\b(?:quick|short|simple|silly|stupid|random)\s+(?:question|one|query)\b",
    r"\bsorry(?:\s+to\s+(?:bother|trouble)\s+you)?\b",
    r"\b(?:many|big)\s+thanks\b",
    r"\bthank(?:s|\s+you)?(?:\s+(?:so|very)\s+much)?(?:\s+in\s+advance)?\b",
    r"\b(?:just\s+)?(?:wondering|curious)\b",
    r"\bi\s+(?:was|am)\s+wondering(?:\s+(?:if|whether))?\b",
    r"\b(?:can|could|would)\s+you\s+(?:please\s+)?(?:tell|let)\s+me(?:\s+know)?\b",
    r"\bi(?:'d|\s+would)\s+like\s+to\s+know\b",
    r"\bdo\s+you\s+know\b",
    r"\bgood\s+(?:morning|afternoon|evening)\b",
    r"\bhello\s+there\b",
]
_FILLER_RE = re.compile("|".join(_FILLER_PATTERNS))

_CONTRACTIONS = [
    (re.compile(r"\bwon't\b"), "will not"),
    (re.compile(r"\bcan't\b"), "can not"),
    (re.compile(r"\bshan't\b"), "shall not"),
    (re.compile(r"\bain't\b"), "is not"),
    (re.compile(r"n't\b"), " not"),
    (re.compile(r"'re\b"), " are"),
    (re.compile(r"'ve\b"), " have"),
    (re.compile(r"'ll\b"), " will"),
    (re.compile(r"'d\b"), " would"),
    (re.compile(r"'m\b"), " am"),
    # "what's" / "where's" / "it's": is (or has); possessive 's is dropped the same way.
    (re.compile(r"'s\b"), ""),
    (re.compile(r"s'(?=\s|$)"), "s"),
    (re.compile(r"\bcannot\b"), "can not"),
    # apostrophe-less spellings people type: whats, wheres, dont, doesnt, cant, wont, isnt
    (re.compile(r"\b(what|where|who|how|when|why|that|there|it)s\b"), r"\1"),
    (re.compile(r"\b(do|does|did|is|are|was|were|have|has|had|could|would|should)nt\b"), r"\1 not"),
    (re.compile(r"\bcant\b"), "can not"),
    (re.compile(r"\bwont\b"), "will not"),
    # obligation: "do I have to pay" asks something else than "do I pay"
    (re.compile(r"\b(?:have|has|got)\s+to\b"), "must"),
]

_NUMBER_WORDS = {
    "zero": "0", "none": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11",
    "twelve": "12", "thirteen": "13", "fourteen": "14", "fifteen": "15", "sixteen": "16",
    "seventeen": "17", "eighteen": "18", "nineteen": "19", "twenty": "20", "thirty": "30",
    "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80",
    "ninety": "90", "hundred": "100", "thousand": "1000", "million": "1000000",
    "billion": "1000000000", "first": "1st", "second": "2nd", "third": "3rd", "fourth": "4th",
    "fifth": "5th", "half": "0.5", "quarter": "0.25", "single": "1", "double": "2",
    "twice": "2x", "once": "1x", "dozen": "12", "couple": "2",
}  # fmt: skip
_NEGATIONS = frozenset({"not", "no", "never", "without", "nor", "neither", "nothing", "nobody"})

# Words that flip an answer while looking alike to an embedding. Both directions are stored.
# Antonyms the content-word rule already rejects; the list matters where that rule is relaxed
# (a verifier, or an entry whose learned threshold allows a differing word).
_ANTONYM_PAIRS = _words(
    """
    include exclude included excluded including excluding accept decline accept reject
    allow forbid allowed forbidden allow ban safe unsafe safe dangerous legal illegal
    buy sell bought sold upload download import export increase decrease increase reduce
    raise lower open close opened closed opening closing start stop start end begin end
    enable disable enabled disabled on off add remove added removed join leave before
    after min max minimum maximum more less most least higher lower high low cheap
    expensive cheapest dearest cheapest expensive best worst better worse early late
    earlier later first last pass fail win lose won lost arrive depart arrival departure
    inbound outbound input output send receive sent received deposit withdraw deposit
    withdrawal credit debit hot cold warm cool summer winter north south east west left
    right up down in out yes no true false always never eat avoid before during during
    after day night weekday weekend morning evening public private paid unpaid free paid
    full part employee employer landlord tenant buyer seller parent child adult child
    male female subscribe unsubscribe lock unlock encrypt decrypt install uninstall
    connect disconnect activate deactivate approve deny approved denied accepted
    rejected pros cons advantage disadvantage benefit risk strength weakness import
    export inside outside
    """
)
_ANTONYMS: dict[str, frozenset[str]] = {}
for _i in range(0, len(_ANTONYM_PAIRS) - 1, 2):
    _x, _y = _ANTONYM_PAIRS[_i], _ANTONYM_PAIRS[_i + 1]
    _ANTONYMS[_x] = _ANTONYMS.get(_x, frozenset()) | {_y}
    _ANTONYMS[_y] = _ANTONYMS.get(_y, frozenset()) | {_x}

# Real words one edit apart that mean different things: never taken for a spelling slip.
_MINIMAL_PAIRS = frozenset(
    frozenset(p.split("/"))
    for p in _words(
        """
    weight/height weigh/neigh affect/effect desert/dessert price/prize later/latter
    trial/trail casual/causal diary/dairy angel/angle quiet/quite united/untied
    marital/martial dinner/diner filling/filing sacred/scared hoping/hopping
    breath/breathe cloth/clothe planed/planned taped/tapped writing/writting
    accept/except advice/advise lose/loose loosing/losing bought/brought though/through
    tough/though hear/here their/there where/were whether/weather lightening/lightning
    statue/status patients/patience device/devise personal/personnel
    complement/compliment principal/principle stationary/stationery vary/very
    adapt/adopt formally/formerly access/excess elicit/illicit allusion/illusion
    ensure/insure assure/ensure manger/manager mortal/portal verses/versus route/router
    lessen/lesson
    """
    )
)

# Clause boundaries: a comma or colon followed by a space, a dash between spaces, a sentence end.
_CLAUSE_RE = re.compile(r"[,;:](?=\s|$)|\s[-\u2013\u2014]+\s|[.?!]+(?=\s)")
# Words keep a trailing + or # (C, C++ and C# are three languages); identifiers keep their
# underscores (get_user is not get_users); numbers keep their separators (3.11, 1/4, 10:30).
_TOKEN_RE = re.compile(
    r"[a-z][a-z0-9]*(?:_[a-z0-9]+)+|[a-z]+[+#]*|\d+(?:[.,:/]\d+)*(?:st|nd|rd|th)?"
)
# Symbols that change an answer but are not letters: currencies, percent, a minus sign.
_SYMBOLS = [
    (re.compile(r"£"), " gbp "),
    (re.compile(r"\$"), " usd "),
    (re.compile(r"€"), " eur "),
    (re.compile(r"¥"), " jpy "),
    (re.compile(r"₹"), " inr "),
    (re.compile(r"%"), " percent "),
    (re.compile(r"(?:(?<=\s)|^)[-\u2212](?=\d)"), " minus "),
    (re.compile(r"(?<=\w)@(?=\w)"), " at_sign "),
]
_DIGITS = re.compile(r"\d")


def _stem(word: str) -> str:
    """Plural and third-person endings only: tense and aspect ("-ed", "-ing") can change the
    answer ("What happened" / "What happens"), so they stay."""
    if len(word) <= 3 or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "sses", "zes")):
        return word[:-2]
    if word.endswith("s"):
        return word[:-1]
    return word


@dataclass(frozen=True, slots=True)
class Signature:
    """What a question says, reduced to what can change its answer."""

    words: tuple[str, ...]  # content words in order (numbers included, stemmed)
    numbers: frozenset[str]  # numbers, ids, ordinals (digits normalised)
    negated: bool  # odd number of negations
    persons: tuple[str, ...]  # "1" (I/we) and "2" (you) in order of appearance, runs collapsed
    names: frozenset[str]  # capitalised words not at a sentence start (proper nouns)
    breaks: frozenset[int] = frozenset()  # word positions that start a clause (after , ; : -)


def _names(text: str) -> frozenset[str]:
    out = set()
    for sentence in re.split(r"[.!?:;]\s+|,\s+", text):
        tokens = re.findall(r"[A-Za-z][A-Za-z'-]*", sentence)
        for token in tokens[1:]:
            if token[0].isupper() and not token.isupper() and token.lower() not in _STOP:
                out.add(token.lower().replace("'", ""))
            elif token.isupper() and len(token) >= 2 and token.lower() not in _STOP:
                out.add(token.lower())
    # A sentence written all in capitals names nothing in particular.
    if text.upper() == text:
        return frozenset()
    return frozenset(out)


@lru_cache(maxsize=8192)
def signature(text: str) -> Signature:
    raw = unicodedata.normalize("NFKC", text).replace("\u2019", "'").replace("\u2018", "'")
    names = _names(raw)
    low = raw.lower()
    for pattern, repl in _CONTRACTIONS:
        low = pattern.sub(repl, low)
    low = _FILLER_RE.sub(" ", low)
    for pattern, repl in _SYMBOLS:
        low = pattern.sub(repl, low)
    words: list[str] = []
    numbers: set[str] = set()
    negations = 0
    persons: list[str] = []
    breaks: set[int] = set()
    plain: list[str] = []
    for clause in _CLAUSE_RE.split(low):
        if words:
            breaks.add(len(words))
        for token in _TOKEN_RE.findall(clause.replace("-", " ")):
            if _DIGITS.search(token):
                token = token.replace(",", "")
                numbers.add(token)
                words.append(token)
                continue
            if token in _NUMBER_WORDS:
                number = _NUMBER_WORDS[token]
                numbers.add(number)
                words.append(number)
                continue
            if token in _NEGATIONS:
                negations += 1
                words.append("not")
                continue
            if token in _STOP:
                continue
            person = _PERSONS.get(token)
            if person is not None:
                if not persons or persons[-1] != person:
                    persons.append(person)
                continue
            plain.append(token)
            words.append(token)
    # Plural endings go, unless the sentence holds both forms ("redirect HTTP to HTTPS"):
    # there the ending is what tells the two apart.
    present = set(plain)
    words = [
        w
        if w in numbers or w == "not" or "_" in w or (w[:-1] in present and w.endswith("s"))
        else _stem(w)
        for w in words
    ]
    return Signature(
        words=tuple(words),
        numbers=frozenset(numbers),
        negated=bool(negations % 2),
        persons=tuple(persons),
        names=names,
        breaks=frozenset(breaks),
    )


def _one_edit(a: str, b: str) -> bool:
    """Damerau-Levenshtein distance exactly 1 (one insertion, deletion, substitution or
    adjacent transposition)."""
    if a == b:
        return False
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    if la == lb:
        diff = [i for i in range(la) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        return (
            len(diff) == 2
            and diff[1] == diff[0] + 1
            and a[diff[0]] == b[diff[1]]
            and a[diff[1]] == b[diff[0]]
        )
    if la > lb:
        a, b = b, a
    # b is one longer: deleting one character of b gives a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i:] == b[i + 1 :]


def is_slip(a: str, b: str) -> bool:
    """A spelling slip, not a different word: one edit in a word of 5+ letters, same first
    letter, both alphabetic, and not a known minimal pair (weight/height, desert/dessert)."""
    return (
        min(len(a), len(b)) >= 5
        and a.isalpha()
        and b.isalpha()
        and a[0] == b[0]
        and frozenset((a, b)) not in _MINIMAL_PAIRS
        and _one_edit(a, b)
    )


def _match_with_slips(x: tuple[str, ...], y: tuple[str, ...], budget: int) -> bool:
    """Equal word sequences up to at most ``budget`` spelling slips, position by position."""
    if len(x) != len(y):
        return False
    for a, b in zip(x, y, strict=True):
        if a != b:
            if budget <= 0 or not is_slip(a, b):
                return False
            budget -= 1
    return True


def _roles_agree(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """ "Can I call you" is not "can you call me", "my address" is not "your address"; but a
    side that names nobody ("what are the opening hours") agrees with either."""
    if not a or not b:
        return True
    if set(a) != set(b):
        return False
    return len(set(a)) < 2 or a == b


def lexically_equivalent(a: Signature, b: Signature, *, slips: int = 2) -> bool:
    """The same request in the same words.

    Equal numbers, negation and roles, and the same content words in the same order, up to
    ``slips`` spelling slips and one *fronted phrase*: "For my subscription, how do I turn
    off auto-renewal?" asks what "How do I turn off auto-renewal for my subscription?" asks.
    A reordering counts only where one of the two texts has a clause break (comma, colon,
    dash) at the seam; any other reordering can swap roles ("is a square a rectangle",
    "redirect HTTP to HTTPS") and is refused.
    """
    if a.numbers != b.numbers or a.negated != b.negated:
        return False
    if not _roles_agree(a.persons, b.persons):
        return False
    x, y = a.words, b.words
    n = len(x)
    if n != len(y):
        return False
    if x == y:
        return True
    for k in range(n):
        # x == y[k:] + y[:k]: y fronted y[:k] (a break at k in y), or x moved it to its end
        # (a break at n - k in x). k == 0 is the plain, unrotated comparison.
        if k and k not in b.breaks and (n - k) not in a.breaks:
            continue
        rotated = y[k:] + y[:k]
        if rotated == x or (slips and _match_with_slips(x, rotated, slips)):
            return True
    return False


def hard_conflicts(a: Signature, b: Signature) -> list[str]:
    """Differences nothing may override: the reasons a relaxed match is still refused."""
    reasons = []
    if a.numbers != b.numbers:
        reasons.append("numbers")
    if a.negated != b.negated:
        reasons.append("negation")
    only_a = set(a.words) - set(b.words)
    only_b = set(b.words) - set(a.words)
    if any(_ANTONYMS.get(w, frozenset()) & only_b for w in only_a):
        reasons.append("antonym")
    differing = a.names ^ b.names
    if any(not any(is_slip(w, o) for o in differing - {w}) for w in differing):
        reasons.append("names")
    if not _roles_agree(a.persons, b.persons):
        reasons.append("roles")
    return reasons
