"""Stage 1a (intent synthesis) and stage 2a (propositions): what the wanted photo looks like, as text.

Two reasoners produce the same `Intent`:
- `llm`: the library's ChatModel with our prompts (`models/prompts/intent.v1.*`, `propositions.v1.*`) and JSON
  schemas; an unusable answer is retried by the chat layer and then replaced by the rules below, never by a blank
  description or by the reference caption.
- `rules`: a small deterministic parser (clauses, negations, dialogue answers); no model at all.

Dialogue requests keep every turn: the request text handed to the LLM lists all answers, the propositions cover
all of them, and the rules reasoner turns each "question? yes/no" turn into its own constraint.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from picscope.models.base import ChatModel, Message
from picscope.models.prompts import load_prompt

OpKind = Literal["add", "remove", "modify", "compare", "keep"]
NO_REFERENCE = "(none: the request describes the photo directly)"
GRANULARITIES = ("core", "detailed", "full")


@dataclass
class Operation:
    kind: str
    text: str


@dataclass
class Proposition:
    question: str
    expected: bool  # the answer a matching photo gives
    reference: bool = False  # compares the candidate with the reference photo


@dataclass
class Intent:
    descriptions: list[str]
    operations: list[Operation] = field(default_factory=list)
    propositions: list[Proposition] = field(default_factory=list)
    source: str = "rules"  # "llm", "rules", or "rules (fallback: <why>)"
    propositions_source: str = ""
    model_calls: int = 0
    tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def request_text(text: str, turns: list[str] | tuple[str, ...] = ()) -> str:
    """The whole request as one text; dialogue answers are listed so that none is dropped."""
    text = " ".join(text.split())
    if not turns:
        return text
    lines = [text, "Answers to follow-up questions (all still apply):"]
    lines += [f"- {' '.join(t.split())}" for t in turns]
    return "\n".join(lines)


# -- rules ------------------------------------------------------------------------------------------------
_NEG = re.compile(r"^(?:but\s+)?(?:with\s+)?(?:no|without|not|never|remove|minus|drop|lose|get rid of|no more)\s+(.+)$",
                  re.I)
# "and" splits only before a negation ("a dog and no people"): "a child and a woman" is one thing to look for.
_SPLIT = re.compile(r"\s*(?:,|;|\bbut\b|\bwhile\b|\band\b(?=\s+(?:no|not|without|never)\b))\s*", re.I)
_YES = re.compile(r"^(yes|yeah|yep|correct|true|it is|there (?:is|are))\b", re.I)
_NO = re.compile(r"^(no|nope|not|none|false|there (?:is|are) no)\b", re.I)
_Q_PREFIX = re.compile(r"^(?:is|are|does|do|can|was|were)\s+(?:there|it|this|the photo|the image|they|he|she)?\s*",
                       re.I)


# Phrases that point at the reference photo ("like this one, but ..."): they say "keep the rest", not what to show.
_DEICTIC = re.compile(
    r"^(?:(?:something|a photo|a picture|an image)\s+)?(?:just\s+)?(?:like|similar to|same as|the same as|as in)\s+"
    r"(?:this|that|the reference)(?:\s+(?:one|photo|picture|image|scene|shot))?"
    r"|^the same(?:\s+(?:kind of\s+)?(?:scene|photo|picture|image|one|thing))?"
    r"|^(?:changed|modified|edited)\s+so\s+that|^(?:except|only)\s+that|^except|^instead",
    re.I)


def _strip_deictic(clause: str) -> str:
    prev = None
    while prev != clause:
        prev = clause
        clause = _DEICTIC.sub("", clause).strip(" ,.:;")
    return clause


def _clauses(text: str) -> list[str]:
    parts = [_strip_deictic(re.sub(r"^(?:and|also|plus)\s+", "", p.strip(" .!?"), flags=re.I))
             for p in _SPLIT.split(text) if p and p.strip(" .!?")]
    return [p for p in parts if len(p) > 1]


def _turn_fact(turn: str) -> tuple[str, bool] | None:
    """'is it outdoors? yes' -> ('it outdoors', True); 'what colour is the car? red' -> ('the car red', True)."""
    q, sep, a = turn.partition("?")
    q, a = q.strip(), a.strip(" .!")
    if not sep or not a:
        return (turn.strip(" .?!"), True) if turn.strip(" .?!") else None
    if _NO.match(a):
        return _Q_PREFIX.sub("", q).strip() or q, False
    if _YES.match(a):
        return _Q_PREFIX.sub("", q).strip() or q, True
    subject = re.sub(r"^(?:what|which|how many|how|where|who)\s+(?:\w+\s+)?(?:is|are|does|do)\s+", "", q, flags=re.I)
    return f"{subject} {a}".strip(), True


_PREP = ("in", "on", "at", "under", "near", "beside", "behind", "through", "across", "over", "into", "along",
         "inside", "outside", "next to", "in front of", "during", "around", "toward", "towards", "onto", "past")
_PREP_RE = re.compile(r"\b(?:" + "|".join(sorted((re.escape(x) for x in _PREP), key=len, reverse=True)) + r")\b", re.I)
_PRONOUN = re.compile(r"^(it|this|that|they|he|she|the photo|the image|the picture|the scene)\b", re.I)
_PLURAL_START = re.compile(r"^(?:two|three|four|five|six|several|many|some|few|a few|a group of|groups? of|people|men|"
                           r"women|children|kids|(?!\w+ss\b)\w+s)\b", re.I)
_IMPERSONAL = re.compile(r"^(?:raining|snowing|sunny|night|daytime|dark|cloudy|foggy|windy)\b", re.I)
_ADJECTIVE_ONLY = re.compile(r"^(?:very\s+)?(?:black and white|sunny|dark|bright|snowy|rainy|foggy|"
                             r"colou?rful|blurry|(?:black|white|red|blue|green|yellow|orange|pink|purple|brown|grey|"
                             r"gray)(?:\s+and\s+\w+)?)$", re.I)
_NOT_VERB = {"something", "anything", "nothing", "everything", "building", "clothing", "ceiling", "evening",
             "morning", "king", "ring", "wing", "thing", "string", "spring", "ping", "sibling", "railing", "ding",
             "wedding", "painting", "bing", "sing", "bring"}
_VERB = re.compile(r"\b(?:(?:is|are)\s+)?(\w+ing)\b", re.I)


def _question(fact: str) -> str:
    """A grammatical yes/no question for one fact: 'a dog running' -> 'Is there a dog running?', 'in the snow' ->
    'Is the scene in the snow?', 'running' -> 'Is someone running?', 'red' -> 'Is the photo red?', 'it is black'
    -> 'Is it black?', 'the bike red' -> 'Is the bike red?'."""
    fact = " ".join(fact.split()).strip(" .?!,")
    fact = re.sub(r"^(A|An|The|Two|Three|Some|Several|Many|People)\b", lambda m: m.group(1).lower(), fact)
    m = re.match(r"^(.+?)\s+(is|are|was|were)\s+(.+)$", fact, re.I)
    if m:  # a sentence: 'a girl is climbing stairs' -> 'Is a girl climbing stairs?'
        return f"{m.group(2).capitalize()} {m.group(1)} {m.group(3)}?"
    if _PRONOUN.match(fact):
        return f"Is {fact}?"
    if _IMPERSONAL.match(fact):
        return f"Is it {fact}?"
    low = fact.lower()
    if any(low == p or low.startswith(p + " ") for p in _PREP):
        return f"Is the scene {fact}?"
    if re.match(r"^\w+ing\b", fact) and fact.split()[0].lower() not in _NOT_VERB:
        return f"Is someone {fact}?"
    if _ADJECTIVE_ONLY.match(fact):
        return f"Is the photo {fact}?"
    plural = bool(_PLURAL_START.match(re.sub(r"^the\s+", "", fact, flags=re.I)))
    if re.match(r"^the\s+", fact, re.I) and len(fact.split()) >= 3:
        return f"{'Are' if plural else 'Is'} {fact}?"  # 'the bike red', 'the dog in the snow'
    return f"{'Are' if plural else 'Is'} there {fact}?"


def _definite(phrase: str) -> str:
    return re.sub(r"^(?:a|an|one|some)\s+", "the ", phrase, flags=re.I)


def _phrases(text: str) -> list[str]:
    """Each prepositional phrase of `text` ('in the snow at night' -> ['in the snow', 'at night'])."""
    starts = [m.start() for m in _PREP_RE.finditer(text)]
    pieces = [text[a:b].strip(" ,") for a, b in zip(starts, [*starts[1:], len(text)], strict=False)]
    return [p for p in pieces if len(p.split()) >= 2]


def atoms(clause: str) -> list[str]:
    """The facts inside one clause, the whole clause first: 'a dog running in the snow' -> ['a dog running in the
    snow', 'a dog', 'the dog running', 'the dog in the snow'] (subject, action, each place or relation)."""
    clause = " ".join(clause.split()).strip(" .?!,")
    if len(clause.split()) < 3:
        return [clause]
    verb = next((m for m in _VERB.finditer(clause) if m.group(1).lower() not in _NOT_VERB and m.start() > 0), None)
    head = clause[: verb.start()].strip() if verb else clause
    tail = clause[verb.end():] if verb else ""
    cut = _PREP_RE.search(head)
    subject = head[: cut.start()].strip() if cut and cut.start() > 0 else head
    subject = re.sub(r"\s+(?:is|are)$", "", subject, flags=re.I)
    own = _phrases(head[cut.start():] if cut and cut.start() > 0 else "")  # "a girl in a pink dress"
    after = _phrases(tail)  # "running through the grass"
    out = [clause]
    if subject and subject != clause and len(subject.split()) <= 5:
        the = _definite(subject)
        out.append(subject)
        if verb:
            out.append(f"{the} {verb.group(1)}")
        definite = the.lower().startswith("the ")
        out.extend(f"{the} {pp}" if definite else pp for pp in own)
        out.extend(f"{the} {verb.group(1)} {pp}" if definite and verb else pp for pp in after)
    else:
        out.extend(own + after)
    seen: set[str] = set()
    return [x for x in out if x and not (x.lower() in seen or seen.add(x.lower()))]  # type: ignore[func-returns-value]


def fact_propositions(ops: list[Operation]) -> list[Proposition]:
    """Rules propositions: for each wanted fact its atoms (expected yes), for each removal the fact (expected no)."""
    props: list[Proposition] = []
    for o in ops:
        facts = [o.text] if o.kind == "remove" else atoms(o.text)
        props.extend(Proposition(_question(f), o.kind != "remove") for f in facts)
    return _dedupe_props(props)


def rules_intent(text: str, turns: list[str] | tuple[str, ...] = (), reference_caption: str | None = None,
                 granularities: int = 3) -> Intent:
    """Deterministic reasoner: clauses become operations, negations removals, dialogue answers constraints."""
    ops: list[Operation] = []
    for clause in _clauses(text):
        m = _NEG.match(clause)
        ops.append(Operation("remove", m.group(1)) if m else Operation("add" if reference_caption is None
                                                                       else "modify", clause))
    for turn in turns:
        fact = _turn_fact(turn)
        if fact:
            ops.append(Operation("add" if fact[1] else "remove", fact[0]))
    wanted = [o.text for o in ops if o.kind != "remove"]
    core = ", ".join(wanted) or text.strip()
    if reference_caption is not None:
        detailed = core
    elif turns:
        detailed = f"{text.strip()}, " + ", ".join(o.text for o in ops[len(_clauses(text)):] if o.kind != "remove")
    else:
        detailed = text.strip()
    full = f"{reference_caption.rstrip('.')}, {core}" if reference_caption else detailed
    props = fact_propositions(ops)
    return Intent(descriptions=_dedupe([core, detailed.strip(", "), full])[:granularities] or [text],
                  operations=ops, propositions=props, source="rules", propositions_source="rules")


def _dedupe(items: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for s in items:
        s = " ".join(s.split())
        if s and s.lower() not in seen:
            seen.add(s.lower())
            out.append(s)
    return out


# -- LLM ---------------------------------------------------------------------------------------------------
def _tokens(res: Any) -> int:
    u = getattr(res, "usage", None)
    return int(getattr(u, "prompt_tokens", 0) + getattr(u, "completion_tokens", 0)) if u else 0


def llm_intent(chat: ChatModel, text: str, turns: list[str] | tuple[str, ...] = (),
               reference_caption: str | None = None, granularities: int = 3, *, timeout: float | None = None
               ) -> Intent:
    """Stage 1a with the LLM; falls back to `rules_intent` (stating why) when the answer is unusable."""
    prompt = load_prompt("intent")
    req = request_text(text, turns)
    system, user = prompt.render(reference=reference_caption or NO_REFERENCE, request=req)
    res = chat.chat([Message("system", system), Message("user", user)], schema=prompt.schema, max_tokens=320,
                    timeout=timeout)
    rules = rules_intent(text, turns, reference_caption, granularities)
    rules.model_calls, rules.tokens = 1, _tokens(res)
    data = res.parsed if isinstance(res.parsed, dict) else None
    if data is None:
        rules.source = f"rules (fallback: {res.fallback or 'no JSON in the answer'})"
        return rules
    descs = _dedupe([str(data.get(g, "")) for g in GRANULARITIES])
    ops = [Operation(str(o.get("kind", "add")), " ".join(str(o.get("text", "")).split()))
           for o in data.get("operations", []) if isinstance(o, dict) and str(o.get("text", "")).strip()]
    if not descs:
        rules.source = "rules (fallback: the LLM gave no description)"
        return rules
    # The rules' dialogue constraints are appended when the LLM left a turn out, so no answer is ever lost.
    for o in rules.operations[len(_clauses(text)):]:
        if not any(o.text.lower() in x.text.lower() for x in ops):
            ops.append(o)
    return Intent(descriptions=descs[:granularities], operations=ops or rules.operations, source="llm",
                  model_calls=1, tokens=_tokens(res))


def llm_propositions(chat: ChatModel, intent: Intent, text: str, turns: list[str] | tuple[str, ...] = (),
                     *, has_reference: bool = False, limit: int = 6, timeout: float | None = None) -> Intent:
    """Stage 2a: yes/no questions with expected answers; rules from the operations when the LLM fails."""
    prompt = load_prompt("propositions")
    ops = "\n".join(f"- {o.kind}: {o.text}" for o in intent.operations) or "- add: " + text
    system, user = prompt.render(request=request_text(text, turns), operations=ops)
    res = chat.chat([Message("system", system), Message("user", user)], schema=prompt.schema, max_tokens=260,
                    timeout=timeout)
    intent.model_calls += 1
    intent.tokens += _tokens(res)
    props: list[Proposition] = []
    if isinstance(res.parsed, dict):
        for p in res.parsed.get("propositions", []):
            q = " ".join(str(p.get("question", "")).split()) if isinstance(p, dict) else ""
            if not q or not isinstance(p, dict):
                continue
            exp = str(p.get("expected", "yes")).strip().lower()
            props.append(Proposition(q if q.endswith("?") else q + "?", exp in ("yes", "true"),
                                     bool(p.get("reference", False)) and has_reference))
    rule_props = [Proposition(_question(o.text), o.kind != "remove") for o in intent.operations]
    if not props:
        intent.propositions = rule_props[:limit]
        intent.propositions_source = f"rules (fallback: {res.fallback or 'no usable propositions'})"
        return intent
    # Every removal must be checked with an expected "no", even if the LLM forgot it.
    for rp, op in zip(rule_props, intent.operations, strict=True):
        if op.kind == "remove" and not any(not p.expected and _overlap(p.question, op.text) for p in props):
            props.append(rp)
    intent.propositions = _dedupe_props(props)[:limit]
    intent.propositions_source = "llm"
    return intent


def _overlap(question: str, text: str) -> bool:
    words = {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 2 and w not in {"the", "and", "with"}}
    return bool(words & set(re.findall(r"[a-z]+", question.lower())))


def _dedupe_props(props: list[Proposition]) -> list[Proposition]:
    seen: set[str] = set()
    out = []
    for p in props:
        key = p.question.lower()
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def rules_propositions(intent: Intent, limit: int = 6) -> Intent:
    if not intent.propositions:
        intent.propositions = fact_propositions(intent.operations)
        intent.propositions_source = "rules"
    intent.propositions = intent.propositions[:limit]
    return intent
