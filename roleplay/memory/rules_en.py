"""English fact patterns, applied per clause (see `clauses.clauses`).

Each pattern keeps the *object* of what was said, with its articles and modifiers ("The
user loves playing the piano.", "The user has an old grey cat called Mochi."), because
the object is the one word a later turn needs. Objects are cut at a connector ("because",
"when", "which"…) or at eight words, and trailing fillers ("too", "a lot", "these days")
are dropped. The slot of a preference is keyed by the object's last content word
(``pref.piano``), so "I love playing the piano" and "I don't play the piano any more"
land on the same slot and the second ends the first.

Trade-offs: "I'm a …" is a job only when the noun is a known job or has a job suffix
(-er, -ist, -ian…) and is not in a short list of non-jobs ("a fan", "a morning person");
present-tense habits ("I play the violin") count, past-tense stories ("I played…") do
not. Promises and agreements become story *events*; everything else is a user fact.
"""
from __future__ import annotations

import re

from .fact import Fact, dedupe

ANIMALS = ("cat", "kitten", "dog", "puppy", "rabbit", "bunny", "parrot", "hamster", "fish", "goldfish",
           "turtle", "tortoise", "bird", "snake", "horse", "lizard", "ferret", "budgie", "guinea pig",
           "pony", "chicken", "gecko", "rat", "mouse")
RELATIONS = ("best friend", "wife", "husband", "sister", "brother", "mother", "mom", "mum", "father", "dad",
             "son", "daughter", "friend", "boyfriend", "girlfriend", "partner", "boss", "grandmother",
             "grandma", "grandfather", "grandpa", "aunt", "uncle", "cousin", "roommate", "flatmate",
             "neighbour", "neighbor", "fiancé", "fiancée", "fiance", "fiancee", "niece", "nephew")
JOBS = {"nurse", "doctor", "teacher", "engineer", "student", "lawyer", "chef", "cook", "programmer",
        "developer", "designer", "accountant", "pilot", "firefighter", "librarian", "architect", "artist",
        "dentist", "vet", "veterinarian", "pharmacist", "journalist", "writer", "author", "translator",
        "baker", "barista", "waiter", "waitress", "plumber", "electrician", "carpenter", "farmer",
        "scientist", "researcher", "professor", "lecturer", "tutor", "musician", "photographer",
        "mechanic", "cashier", "clerk", "manager", "consultant", "analyst", "surgeon", "paramedic",
        "midwife", "soldier", "police officer", "officer", "detective", "driver", "gardener", "tailor",
        "jeweller", "jeweler", "florist", "butcher", "postman", "courier", "secretary", "receptionist",
        "salesman", "saleswoman", "editor", "illustrator", "animator", "actor", "actress", "dancer",
        "singer", "painter", "sculptor", "potter", "welder", "builder", "therapist", "psychologist",
        "social worker", "freelancer", "intern", "apprentice", "historian", "physicist", "chemist",
        "biologist", "economist", "banker", "broker", "coach", "trainer", "instructor", "lifeguard",
        "zookeeper", "locksmith", "clockmaker", "watchmaker", "bookbinder", "archivist", "curator",
        "sailor", "fisherman", "miner", "janitor", "cleaner", "housekeeper", "nanny", "babysitter"}
NOT_JOBS = {"fan", "lot", "bit", "person", "member", "mess", "fool", "winner", "loser", "beginner",
            "lover", "monster", "sucker", "dreamer", "worrier", "overthinker", "believer", "reader",
            "listener", "talker", "thinker", "gamer", "introvert", "extrovert", "other", "customer",
            "stranger", "foreigner", "traveller", "traveler", "regular", "vegetarian", "vegan"}

_PRONOUN_OBJ = re.compile(r"^(it|that|this|these|those|you|your|yours|him|her|them|me|us|when|how|what|"
                          r"why|where|which|who|so|too|everything|nothing|anything|something)\b", re.I)
_CUT = re.compile(r"\s+(?:because|since|when|whenever|while|which|who|that is|though|although|unless|"
                  r"whereas|but|so that|as long as|and i|and i'm|and my|and we|or)\b.*$", re.I)
_FILLER = re.compile(r"(?:\s+(?:too|as well|a lot|so much|very much|these days|nowadays|now|lately|"
                     r"anymore|any more|at the moment|right now|really|honestly|though|lol|haha|"
                     r"by the way|btw|actually|now actually))+$", re.I)
_STOPWORDS = {"a", "an", "the", "my", "our", "of", "to", "in", "on", "at", "for", "with", "and", "from",
              "by", "old", "new", "little", "big", "some", "all", "kinds", "kind", "sort", "any", "every",
              "up", "out", "about", "playing", "making", "doing", "going", "eating", "drinking", "watching",
              "reading", "listening", "collecting", "restoring", "growing", "cooking", "baking"}
_VERB_3RD = {"have": "has", "do": "does", "go": "goes", "be": "is", "can't stand": "can't stand",
             "cannot stand": "can't stand", "don't like": "doesn't like", "do not like": "doesn't like",
             "don't really like": "doesn't really like", "am into": "is into", "'m into": "is into",
             "am obsessed with": "is obsessed with", "'m obsessed with": "is obsessed with",
             "am crazy about": "is crazy about", "'m crazy about": "is crazy about"}


def third(verb: str) -> str:
    """'love' → 'loves', 'study' → 'studies', 'don't like' → "doesn't like"."""
    v = verb.lower().strip()
    if v in _VERB_3RD:
        return _VERB_3RD[v]
    m = re.match(r"^('m|am) (a big|a huge|a) fan of$", v)
    if m:
        return f"is {m.group(2)} fan of"
    head, _, tail = v.partition(" ")
    if head.endswith("y") and head[-2:-1] not in "aeiou":
        head = head[:-1] + "ies"
    elif head.endswith(("s", "sh", "ch", "x", "o", "z")):
        head += "es"
    else:
        head += "s"
    return f"{head} {tail}".strip()


def obj(text: str, *, limit: int = 8) -> str:
    """The object phrase at the start of ``text``: cut at a connector, fillers dropped."""
    text = re.split(r"[.!?;,:()\"“”…]", text, maxsplit=1)[0]
    text = _CUT.sub("", " " + text).strip()
    text = _FILLER.sub("", text).strip()
    words = text.split()[:limit]
    return " ".join(words).strip("'’ -")


def key(phrase: str) -> str:
    """The slot key of an object phrase: its head's last content word, singular."""
    head = re.split(r"\b(?:my|your|his|her|their|our|i|we|he|she|they|that|which|who|from|at|in|on|with|for|"
                    r"every|each|twice|once|after|before|during|daily|when)\b",
                    phrase.lower(), maxsplit=1)[0] or phrase.lower()
    words = [w for w in re.findall(r"[a-z0-9'-]+", head) if w not in _STOPWORDS]
    w = (words[-1] if words else phrase.lower().strip()).strip("'")
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    return re.sub(r"\W+", "_", w) or "x"


def _article(phrase: str) -> str:
    if phrase.split()[0].lower() in ("a", "an", "the", "my", "our"):
        return phrase
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


_NAME_BAD = {"not", "a", "an", "the", "so", "very", "too", "sorry", "tired", "happy", "sad", "here", "back",
             "done", "fine", "good", "okay", "ok", "just", "really", "still", "also", "from", "in", "at",
             "going", "trying", "looking", "new", "old", "later", "when", "if", "tomorrow", "anytime",
             "sometime", "maybe", "crazy", "home", "busy", "ready", "afraid", "scared", "glad", "sure",
             "who", "which", "that", "whose", "is", "was", "has", "had", "will", "would", "does",
             "now", "then", "again", "anyway", "actually", "today", "though", "lol", "haha", "please",
             "thanks", "btw", "okay", "by", "for", "with", "to", "on", "of"}


def name(text: str, *, limit: int = 3, capital: bool = False) -> str:
    """Leading name words of ``text`` ("lin and I…" → "Lin"); "" when it is not a name."""
    out = []
    for w in re.split(r"[\s]+", re.split(r"[.!?;,:()\"“”]", text.strip(), maxsplit=1)[0]):
        if not w or not re.match(r"^[A-Za-zÀ-ÿ][\w'’-]*$", w) or w.lower() in _NAME_BAD | {"and", "but", "i", "i'm"}:
            break
        if capital and not w[0].isupper():
            break
        out.append(w[0].upper() + w[1:])
        if len(out) >= limit:
            break
    if out and out[0].lower() in _NAME_BAD:
        return ""
    return " ".join(out)


def _animal_re() -> str:
    return "|".join(sorted(ANIMALS, key=len, reverse=True))


def _rel_re() -> str:
    return "|".join(sorted(RELATIONS, key=len, reverse=True))


def _job_np(text: str) -> str:
    """'primary school teacher at …' → 'primary school teacher' when the noun is a job."""
    words = obj(text, limit=6).split()
    for i in range(min(len(words), 4), 0, -1):
        head = words[i - 1].lower().strip("'")
        two = " ".join(w.lower() for w in words[max(0, i - 2):i])
        if head in NOT_JOBS:
            return ""
        if head in JOBS or two in JOBS or (len(head) > 4 and head.endswith(("er", "or", "ist", "ian", "eer"))
                                           and head not in NOT_JOBS and i == len(words[:i])):
            if any(w.lower() in NOT_JOBS or w.lower() in ("of", "to", "in") for w in words[:i]):
                return ""
            return " ".join(words[:i])
    return ""


def _swap(text: str, *, speaker: str) -> str:
    """Pronouns of a promise as the character reads it ("me" of the user → "the user")."""
    if speaker == "user":
        table = {"me": "the user", "my": "the user's", "i": "the user", "mine": "the user's", "myself": "themself"}
    else:
        table = {"you": "the user", "your": "the user's", "yours": "the user's", "me": "you", "my": "your",
                 "i": "you", "mine": "yours", "yourself": "themself"}
    return re.sub(r"\b(\w+)\b", lambda m: table.get(m.group(1).lower(), m.group(1)), text)


def events(clause: str, *, speaker: str = "user") -> list[Fact]:
    """Promises and agreements in a clause of the user's (or the character's) message."""
    c = clause.strip()
    out: list[Fact] = []
    m = re.search(r"\bi (?:promise|swear|vow|give you my word)(?: you)?(?: that)?(?: i'll| i will| to)?\s+(.+)", c, re.I)
    if m and obj(m.group(1)):
        what = _swap(obj(m.group(1), limit=12), speaker=speaker)
        who = "The user" if speaker == "user" else "You"
        out.append(Fact(f"{who} promised to {what}.", None, what, kind="event"))
    if speaker == "user":
        m = re.search(r"\byou (?:promised|swore|said you would|said you'd)(?: me)?(?: that)?(?: you'd| you would| to)?\s+(.+)", c, re.I)
        if m and obj(m.group(1)):
            what = _swap(obj(m.group(1), limit=12), speaker="user")
            out.append(Fact(f"You promised to {what}.", None, what, kind="event"))
    m = re.search(r"\b(?:let's|let us|we agreed to|we decided to|we'll|we will|we're going to|we are going to)\s+"
                  r"(meet|travel|search|look|find|visit|leave|start|return|sail|ride|hunt|open|build|"
                  r"train|practise|practice|watch|cook|wait|explore)\b\s*(.*)", c, re.I)
    if m and not out:
        what = _swap(f"{m.group(1).lower()} {obj(m.group(2), limit=10)}".strip(), speaker=speaker)
        out.append(Fact(f"You and the user agreed to {what}.", None, what, kind="event"))
    if speaker != "user" and not out:
        m = re.search(r"\bi(?:'ll| will| shall)\s+(bring|find|teach|show|give|return|make|help|wait for|"
                      r"send|take|lend|fix|write)\s+(.+)", c, re.I)
        if m:
            what = _swap(f"{m.group(1).lower()} {obj(m.group(2), limit=10)}", speaker=speaker)
            out.append(Fact(f"You promised to {what}.", None, what, kind="event"))
    return out


def facts(clause: str) -> list[Fact]:
    """The user facts in one clause (first person)."""
    c = clause.strip()
    out: list[Fact] = []
    animals, rels = _animal_re(), _rel_re()

    def add(text: str, slot: str | None, value: str, *, negated: bool = False) -> None:
        out.append(Fact(_swap(text, speaker="user"), slot, value, negated=negated))

    # -- names ---------------------------------------------------------------------------
    for m in re.finditer(r"\b(?:my name(?:'s| is)|i'm called|i am called|the name's|the name is)\s+(.+)", c, re.I):
        n = name(m.group(1))
        if n:
            add(f"The user's name is {n}.", "user.name", n)
    m = re.match(r"^(?:(?:[Hh]i|[Hh]ello|[Hh]ey|[Ww]ell|[Oo]h|[Yy]es|[Oo]k|[Oo]kay|[Ss]o)\s+)?(?:[Ii]'m|[Ii] am)\s+"
                 r"([A-Z][\w'-]+)(?:\s+([A-Z][\w'-]+))?(?=\s*$|\s+from\b|\s+here\b)", c)
    if m and m.group(1).lower() not in _NAME_BAD and not re.search(r"(ish|ese|ian|an)$", m.group(1)) \
            and not any(f.slot == "user.name" for f in out):
        n = " ".join(p for p in m.groups() if p)
        add(f"The user's name is {n}.", "user.name", n)
    for m in re.finditer(r"\b(?:call me|i go by|everyone calls me|people call me|friends call me|"
                         r"my friends call me)\s+(.+)", c, re.I):
        n = name(m.group(1), limit=2)
        if n:
            add(f"The user wants to be called {n}.", "user.callname", n)

    # -- pets ----------------------------------------------------------------------------
    pet_named = False
    for m in re.finditer(rf"\bi(?:'ve| have)? (?:also |just |recently )?(?:have|keep|own|got|adopted|rescued|have got)\s+"
                         rf"(a|an|one|two|three|four|five|\d+)\s+((?:[a-z-]+\s+){{0,3}}?)({animals})(?:s|es)?\b(.*)", c, re.I):
        count, adj, animal, rest = m.group(1).lower(), m.group(2).strip(), m.group(3).lower(), m.group(4)
        nm = re.match(r"^\s*,?\s*(?:called|named|whose name is|by the name of)\s+(.+)", rest, re.I)
        n = name(nm.group(1), limit=2) if nm else ""
        what = f"{adj} {animal}".strip()
        if count not in ("a", "an", "one"):
            add(f"The user has {count} {what}s.", f"pet.{key(animal)}", what)
            continue
        for more in re.finditer(rf"\band (?:a|an) ((?:[a-z-]+\s+){{0,3}}?)({animals}) (?:called|named)\s+(.+)", rest, re.I):
            n2 = name(more.group(3), limit=2)
            if n2:
                a2 = more.group(2).lower()
                add(f"The user has {_article((more.group(1).strip() + ' ' + a2).strip())} called {n2}.", f"pet.{key(a2)}.name", n2)
        if n:
            add(f"The user has {_article(what)} called {n}.", f"pet.{key(animal)}.name", n)
            pet_named = True
        else:
            add(f"The user has {_article(what)}.", f"pet.{key(animal)}", what)
    if not pet_named:
        for m in re.finditer(rf"\bmy ((?:[a-z-]+\s+){{0,3}}?)({animals})(?:'s name is| is called| is named| called| named)\s+(.+)",
                             c, re.I):
            adj, animal, n = m.group(1).strip(), m.group(2).lower(), name(m.group(3), limit=2)
            if n:
                add(f"The user has {_article((adj + ' ' + animal).strip())} called {n}.", f"pet.{key(animal)}.name", n)
                pet_named = True
    if not pet_named:
        for m in re.finditer(rf"\b[Mm]y ((?:[a-z-]+\s+){{0,3}}?)({animals}),?\s+([A-Z][a-z]+)\b", c):
            adj, animal, n = m.group(1).strip(), m.group(2).lower(), m.group(3)
            if n.lower() not in _NAME_BAD:
                add(f"The user has {_article((adj + ' ' + animal).strip())} called {n}.", f"pet.{key(animal)}.name", n)

    # -- family and friends ----------------------------------------------------------------
    rel_done = set()
    for m in re.finditer(rf"\bmy ({rels})(?:'s name is| is called| is named)\s+(.+)", c, re.I):
        rel, n = m.group(1).lower(), name(m.group(2), limit=2)
        if n:
            add(f"The user's {rel} is called {n}.", f"rel.{key(rel)}.name", n)
            rel_done.add(rel)
    for m in re.finditer(rf"\bmy ({rels})(?:,?\s+([A-Z][a-z]+),?)?\s+(?:is an? |works as an? |works as )(.+)", c, re.I):
        rel, n, job = m.group(1).lower(), m.group(2) or "", _job_np(m.group(3))
        if job:
            who = f"{rel} {n}" if n else rel
            add(f"The user's {who} is {_article(job)}.", f"rel.{key(rel)}.job", job)
            rel_done.add(rel)
    for m in re.finditer(rf"\bmy ({rels})(?:,?\s+([A-Z][a-z]+),?)?\s+(?:lives|is living|moved) (?:in|to)\s+(.+)", c, re.I):
        rel, n, place = m.group(1).lower(), m.group(2) or "", obj(m.group(3), limit=5)
        if place:
            who = f"{rel} {n}" if n else rel
            add(f"The user's {who} lives in {place}.", f"rel.{key(rel)}.city", place)
            rel_done.add(rel)
    for m in re.finditer(rf"\b[Mm]y ({rels}),?\s+([A-Z][a-z]+)\b", c):
        rel, n = m.group(1).lower(), m.group(2)
        if n.lower() not in _NAME_BAD and n not in ("I",):
            add(f"The user's {rel} is called {n}.", f"rel.{key(rel)}.name", n)

    # -- home, origin ----------------------------------------------------------------------
    m = re.search(r"\bi (?:no longer|don't|do not) live in\s+(.+)", c, re.I)
    if m and (re.search(r"\bno longer\b", c, re.I) or re.search(r"\bany ?more\b", c, re.I)):
        place = obj(m.group(1), limit=5)
        add(f"The user no longer lives in {place}.", "user.city", place, negated=True)
    else:
        m = re.search(r"\b(?:i|we)(?:'ve| have)? (?:just |now |currently |still |actually |all )?(?:live|am living|'m living|"
                      r"reside|am staying|'m staying)\s+(in|near|above|on|with)\s+(.+)", c, re.I)
        if m:
            prep, rest = m.group(1).lower(), obj(m.group(2), limit=8)
            if rest and prep == "in" and rest[0].isupper() and not rest.split()[0].lower() in ("a", "an", "the", "my"):
                city = name(rest, limit=3, capital=True) or rest
                add(f"The user lives in {city}.", "user.city", city)
            elif rest and prep == "with":
                add(f"The user lives with {_swap(rest, speaker='user')}.", "user.household", rest)
            elif rest:
                add(f"The user lives {prep} {_swap(rest, speaker='user')}.", "user.home", rest)
        m = re.search(r"\b(?:i|we)(?:'ve| have)? (?:just |recently |finally |now )?(?:moved|relocated) to\s+(.+)", c, re.I)
        if m:
            rest = obj(m.group(1), limit=7)
            city = name(rest, limit=3, capital=True) or rest.split()[0] if rest else ""
            if city:
                add(f"The user moved to {rest}.", "user.city", city)
    m = re.search(r"\bi used to live in\s+(.+)", c, re.I)
    if m and obj(m.group(1), limit=5):
        place = obj(m.group(1), limit=5)
        add(f"The user used to live in {place}.", f"past.city.{key(place)}", place)
    for m in re.finditer(r"\b(?:i'm|i am) (?:originally |[A-Z][a-z]+ )?from\s+(.+)|\bi (?:grew up|was born and raised|was born) in\s+(.+)",
                         c, re.I):
        place = obj(m.group(1) or m.group(2), limit=5)
        if place:
            verb = "is from" if m.group(1) else ("grew up in" if "grew" in m.group(0).lower() else "was born in")
            add(f"The user {verb} {place}.", "user.origin", place)

    # -- work and study ----------------------------------------------------------------------
    job_neg = re.search(r"\b(?:i'm|i am) (?:no longer|not) an? (.+?)(?: any ?more| anymore|$)", c, re.I)
    if job_neg and (re.search(r"\bno longer\b|\bany ?more\b", c, re.I)) and _job_np(job_neg.group(1)):
        job = _job_np(job_neg.group(1))
        add(f"The user is no longer {_article(job)}.", "user.job", job, negated=True)
    elif re.search(r"\bi (?:quit|left|lost) my job\b", c, re.I):
        m = re.search(r"\bmy job\b\s*(.*)", c, re.I)
        tail = obj(m.group(1), limit=6) if m else ""
        verb = re.search(r"quit|left|lost", c, re.I).group(0).lower()
        add(f"The user {verb} their job{' ' + tail if tail else ''}.", "user.job", "", negated=True)
    else:
        for m in re.finditer(r"\b(?:i work as|i'm working as|i am working as|my job is|i am employed as|"
                             r"i'm employed as)\s+(?:an? )?(.+)", c, re.I):
            job = obj(m.group(1), limit=5)
            if job:
                add(f"The user works as {_article(job)}.", "user.job", job)
        for m in re.finditer(r"\b(?:i'm|i am) (?:now |also |actually |still )?an? (.+)", c, re.I):
            if re.match(r"^(big|huge|massive|total|real)\s+fan\b", m.group(1), re.I):
                continue
            job = _job_np(m.group(1))
            if job and not any(f.slot == "user.job" for f in out):
                add(f"The user works as {_article(job)}.", "user.job", job)
        for m in re.finditer(r"\bi (?:work|volunteer) (at|for|in)\s+(.+)", c, re.I):
            place = obj(m.group(2), limit=6)
            if place and not _PRONOUN_OBJ.match(place):
                add(f"The user works {m.group(1).lower()} {_swap(place, speaker='user')}.", "user.workplace", place)
        if re.search(r"\b(?:i'm|i am) (?:now )?retired\b", c, re.I):
            add("The user is retired.", "user.job", "retired")
    for m in re.finditer(r"\b(?:i'm studying|i am studying|i study|i'm doing a degree in|i major in|"
                         r"i'm majoring in)\s+(.+)", c, re.I):
        what = obj(m.group(1), limit=6)
        if what and not _PRONOUN_OBJ.match(what):
            add(f"The user studies {what}.", "user.study", what)
    for m in re.finditer(r"\b(?:i'm learning|i am learning|i'm taking lessons in|i've started learning)\s+(.+)", c, re.I):
        what = obj(m.group(1), limit=6)
        if what and not _PRONOUN_OBJ.match(what):
            add(f"The user is learning {what}.", f"learn.{key(what)}", what)
    for m in re.finditer(r"\bi (?:speak|can speak)\s+(.+)", c, re.I):
        what = obj(m.group(1), limit=6)
        if what and what[0].isupper():
            add(f"The user speaks {what}.", "user.languages", what)

    m = re.search(r"\bi (?:promised|have promised|'ve promised) (my [\w ]{2,20}?|\w+) (?:that )?(?:i would|i'd|i will|i'll|to) (.+)", c, re.I)
    if m and obj(m.group(2)):
        add(f"The user promised {m.group(1)} to {obj(m.group(2), limit=10)}.", None, obj(m.group(2), limit=10))

    # -- age, birthday, body ---------------------------------------------------------------------
    for m in re.finditer(r"\b(?:i'm|i am|i just turned|i turned|i've just turned)\s+(\d{1,3})(?:\s+years?\s+old|\b(?!\s*(?:minutes|hours|%|km|kg|cm)))",
                         c, re.I):
        add(f"The user is {m.group(1)} years old.", "user.age", m.group(1))
    for m in re.finditer(r"\bmy birthday is (?:on )?(.+)", c, re.I):
        day = obj(m.group(1), limit=4)
        if day:
            add(f"The user's birthday is {day}.", "user.birthday", day)
    for m in re.finditer(r"\b(?:i'm|i am) (?:very |badly |severely )?allergic to\s+(.+)", c, re.I):
        what = obj(m.group(1), limit=5)
        if what:
            add(f"The user is allergic to {what}.", f"health.allergy.{key(what)}", what)
    for m in re.finditer(r"\b(?:i'm|i am) (?:really |very |so |terribly )?(scared|afraid|terrified|frightened) of\s+(.+)", c, re.I):
        what = obj(m.group(2), limit=6)
        if what and not _PRONOUN_OBJ.match(what):
            add(f"The user is {m.group(1).lower()} of {what}.", f"fear.{key(what)}", what)
    m = re.search(r"\b(?:i'm|i am|i've been|i have been)\s+(?:a |an )?(vegetarian|vegan|pescatarian)\b(.*)", c, re.I)
    diet_gone = re.search(r"\b(?:i'm|i am) (?:no longer|not) (?:a |an )?(vegetarian|vegan|pescatarian)\b", c, re.I)
    if diet_gone and re.search(r"\bno longer\b|\bany ?more\b", c, re.I):
        add(f"The user is no longer {diet_gone.group(1).lower()}.", "user.diet", "", negated=True)
    elif m:
        tail = obj(m.group(2), limit=4) if re.match(r"\s*for\b", m.group(2)) else ""
        add(f"The user is {m.group(1).lower()}{' ' + tail if tail else ''}.", "user.diet", m.group(1).lower())
    m = re.search(r"\b(?:i'm|i am|i got) (married|engaged|divorced|single|widowed)\b(?:\s+to\s+(.+))?", c, re.I)
    if m:
        to = name(m.group(2), limit=2) if m.group(2) else ""
        add(f"The user is {m.group(1).lower()}{' to ' + to if to else ''}.", "user.relationship", m.group(1).lower())
    m = re.search(r"\bi have (\w+) (kids|children|sons|daughters|grandchildren)\b", c, re.I)
    if m:
        add(f"The user has {m.group(1).lower()} {m.group(2).lower()}.", "user.children", m.group(1).lower())

    # -- preferences, habits, hobbies --------------------------------------------------------------
    for m in re.finditer(r"\bmy fav(?:ou)?rite (\w+(?: \w+)?) (?:is|are)\s+(.+)", c, re.I):
        what, value = m.group(1).lower(), obj(m.group(2), limit=6)
        if value and not _PRONOUN_OBJ.match(value):
            add(f"The user's favourite {what} is {value}.", f"fav.{key(what)}", value)
    for m in re.finditer(r"\bmy (?:hobby is|hobbies are|favourite hobby is|favorite hobby is|passion is)\s+(.+)", c, re.I):
        value = obj(m.group(1), limit=8)
        if value:
            add(f"The user's hobby is {value}.", f"hobby.{key(value)}", value)
    neg = re.search(r"\bi (?:don't|do not|no longer|never|can't|cannot) (?:really )?(\w+)\s+(.+?)(?:\s+any ?more|\s+anymore)\b", c, re.I) \
        or re.search(r"\bi no longer (\w+)\s+(.+)", c, re.I)
    pet_gone = re.search(rf"\bi (?:no longer|don't|do not) (?:have|keep|own) (?:a |an |any )?({animals})", c, re.I)
    if pet_gone and (re.search(r"\bno longer\b|\bany ?more\b", c, re.I)):
        animal = pet_gone.group(1).lower()
        word = re.match(r"[\w-]+(?: pig)?", c[pet_gone.start(1):]).group(0).lower()
        add(f"The user no longer has {word if word != animal else _article(animal)}.", f"pet.{key(animal)}.name", "",
            negated=True)
    elif neg and neg.group(1).lower() not in ("live", "like", "love", "have", "work", "know", "think", "want", "need", "care"):
        verb, what = neg.group(1).lower(), obj(neg.group(2), limit=6)
        if what and not _PRONOUN_OBJ.match(what):
            add(f"The user no longer {third(verb)} {what}.", f"pref.{key(what)}", what, negated=True)
    elif neg and neg.group(1).lower() in ("like", "love", "have"):
        what = obj(neg.group(2), limit=6)
        if what and not _PRONOUN_OBJ.match(what):
            animal = re.search(rf"\b({animals})\b", what, re.I)
            slot = f"pet.{key(animal.group(1))}" if animal and neg.group(1).lower() == "have" else f"pref.{key(what)}"
            add(f"The user no longer {third(neg.group(1))} {what}.", slot, what, negated=True)
    for m in re.finditer(r"\bi(?:'ve| have)? (?:quit|gave up|given up|stopped)\s+(.+)", c, re.I):
        what = obj(m.group(1), limit=6)
        if what and not _PRONOUN_OBJ.match(what) and not what.lower().startswith("my job"):
            verb = re.search(r"quit|gave up|given up|stopped", m.group(0), re.I).group(0).lower().replace("given", "gave")
            add(f"The user {verb} {what}.", f"pref.{key(what)}", what, negated=True)
    if not neg:
        for m in re.finditer(r"\bi (?:really |absolutely |just |totally |also |kind of |so |do |truly |still )?"
                             r"(like|love|adore|enjoy|hate|dislike|detest|can't stand|cannot stand|don't like|"
                             r"do not like|don't really like|prefer)\s+(.+)", c, re.I):
            verb, what = m.group(1), obj(m.group(2))
            if not what or _PRONOUN_OBJ.match(what) or re.match(r"^(to|the way|the idea)\b$", what, re.I):
                continue
            add(f"The user {third(verb)} {what}.", f"pref.{key(what)}", what)
    for m in re.finditer(r"\b(?:i'm|i am) (?:really |totally |so |also )?(into|obsessed with|crazy about|"
                         r"a big fan of|a huge fan of|a fan of|passionate about|addicted to)\s+(.+)", c, re.I):
        what = obj(m.group(2))
        if what and not _PRONOUN_OBJ.match(what):
            add(f"The user is {m.group(1).lower()} {what}.", f"pref.{key(what)}", what)
    if not neg:
        for m in re.finditer(r"\bi (?:also |still |usually |often |always )?(play|collect|bake|paint|knit|grow|brew|"
                             r"restore|build|sew|draw|ride|climb|swim|run|practise|practice|teach|drink|read|write|keep|"
                             r"volunteer|sing|dance|cook|go)\s+(.+)", c, re.I):
            verb, what = m.group(1).lower(), obj(m.group(2))
            if verb == "keep" and re.match(r"^(\w+ing|a |an |my |it|on|going|forgetting|thinking)\b", what, re.I):
                continue
            if verb == "go" and not re.match(r"^(to the gym|running|swimming|hiking|climbing|fishing|camping|"
                                             r"cycling|dancing|skiing|surfing|sailing|bowling|to church|to yoga)", what, re.I):
                continue
            if verb in ("read", "write", "drink", "cook") and not re.search(
                    r"\b(every|each|daily|always|usually|a lot|poetry|novels|books|tea|coffee|wine|beer)\b",
                    m.group(0) + " " + c, re.I):
                continue
            if not what or _PRONOUN_OBJ.match(what) or re.search(r"\b(yesterday|today|tonight|last|tomorrow)\b", c, re.I):
                continue
            add(f"The user {third(verb)} {what}.", f"pref.{key(what)}", what)
    for m in re.finditer(r"\bi spend (my|most of my|all my) (weekends|evenings|free time|spare time|mornings|summers)\s+(.+)",
                         c, re.I):
        what = obj(m.group(3))
        if what:
            add(f"The user spends their {m.group(2).lower()} {what}.", f"pref.{key(what)}", what)
    for m in re.finditer(r"\bi(?:'ve| have) been (\w+ing)\s+(.+?)\s+for\s+(.+)", c, re.I):
        what, span = obj(m.group(2)), obj(m.group(3), limit=4)
        if what and not _PRONOUN_OBJ.match(what):
            add(f"The user has been {m.group(1).lower()} {what} for {span}.", f"pref.{key(what)}", what)
    return dedupe(out)
