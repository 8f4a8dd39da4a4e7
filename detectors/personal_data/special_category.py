"""Special-category data (health, safeguarding, ethnicity, religion, ...) about a named person.

Two steps, cheapest first:
1. One pass of a compiled term list over each text segment. Terms are phrases that say
   something about a person ("diagnosed with", "child protection plan", "asylum
   seeker"), not topic words ("safeguarding", "mental health") that every council
   email uses. A term followed by a role or service word ("safeguarding policy",
   "mental health awareness week", "Probation Officer") is not counted.
2. Only for the paragraphs that hold a term, spaCy NER (see detectors.nlp). A finding
   needs a PERSON entity in the same paragraph as the term; a term inside a
   PERSON or ORG entity ("Christian Smith", "Alzheimer's Society") is not counted.

The context unit is the paragraph: text between blank lines, with a sign-off line
("Kind regards,") starting a new one so a signature never shares a unit with the
last paragraph, and a greeting line ("Hi Sam,") ending one so the recipient is not
taken for the person the paragraph is about. Paragraphs longer than `max_unit_chars` are cut into sentences, and
lines of a table-like paragraph are units of their own (each row is one record).
Limitation: HTML table cells become separate paragraphs (gateway.message), so a name
and a condition in two cells of one HTML row are not paired.

One finding per (location, category); `count` is the number of distinct named people
in that category there. Summed per detector for the bulk rule this counts
(category, person) pairs: a person named beside two categories counts twice, which
errs to the safe side. Findings never hold the name or the term.

NER reads at most `max_chars` characters per message. When that bound cuts off
term-bearing text and what was read gave no finding, a finding with
Signal.INCOMPLETE says so (rule incomplete-inspection); once a finding is made the
unread rest could only add to counts, so it is not reported.

Without the model (detectors.nlp logs one warning) nothing is reported: a term with
no recognisable name is not a finding. `status` says "disabled: ..." then.

Never does I/O (the model is loaded once per process by detectors.nlp).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from re import _constants as sre, _parser as sre_parse  # type: ignore[attr-defined]  # used once, at import

import regex

from detectors.base import Category, Finding, Signal, Strength
from detectors.nlp import DEFAULT_MAX_CHARS, DEFAULT_MODEL, PERSON, EntitySpan, NerModel, ner_model
from detectors.personal_data.anchors import Anchors, alternation, lowered, vocabulary
from gateway.message import Message

NAME = "special_category"
DEFAULT_MAX_UNIT_CHARS = 2_000


@dataclass(frozen=True)
class SpecialCategory:
    key: str
    words: str                      # "health" -> "health information about a named person"
    terms: tuple[str, ...]          # regex fragments, case-insensitive unless wrapped in (?-i:...)

    @property
    def kind(self) -> str:
        return f"{self.words} information about a named person"


CATEGORIES: tuple[SpecialCategory, ...] = (
    SpecialCategory("mental_health", "mental health", (
        r"mental health (?:conditions?|problems?|issues?|crisis|difficulties|diagnosis|assessment|history|needs|episode|illness|disorder|admission|act assessment|team referral)",
        r"mental(?:ly)? ill(?:ness)?", r"depression", r"clinically depressed", r"anxiety (?:disorder|attacks?|and depression)",
        r"(?:suffers?|suffering) (?:from|with) anxiety", r"(?:has|with|having) (?:severe |social )?anxiety",
        r"panic attacks?", r"bi-?polar(?: disorder)?", r"schizophreni[ac]", r"psychosis", r"psychotic",
        r"(?-i:PTSD)", r"post-traumatic stress", r"(?-i:OCD)", r"obsessive[ -]compulsive", r"eating disorder",
        r"anorexi[ac]", r"bulimi[ac]", r"self[- ]harm(?:ing|ed|s)?", r"suicid(?:e|al)(?: attempt| thoughts| ideation)?",
        r"overdosed?", r"sectioned", r"detained under (?:section \d+|the mental health act)",
        r"under section \d+ of the mental health act", r"(?-i:CAMHS) (?:referral|waiting list|assessment|appointment)",
        r"(?:referred to|known to|open to|seen by) (?-i:CAMHS)", r"admitted to (?:a |the )?psychiatric (?:unit|ward|hospital)",
        r"psychiatric", r"psychiatrist",
        r"anti-?depressants?", r"sertraline", r"fluoxetine", r"citalopram", r"mirtazapine", r"personality disorder",
        r"nervous breakdown", r"(?:signed off|off work) with stress", r"work[- ]related stress",
    )),
    SpecialCategory("health", "health", (
        r"diagnosed (?:with|as)", r"diagnos(?:is|es) of(?! the\b)", r"(?:his|her|their|recent|new|formal|medical|clinical) diagnos(?:is|es)",
        r"cancer", r"tumou?r", r"leuka?emia", r"lymphoma", r"diabet(?:es|ic)",
        r"(?-i:HIV)(?: positive)?", r"(?-i:AIDS)", r"hepatitis(?: [ABC])?", r"epilep(?:sy|tic)", r"seizures?",
        r"(?:had|suffered|having) a stroke", r"heart (?:attack|condition|disease|failure|surgery)", r"cardiac arrest",
        r"dementia", r"alzheimer['’]?s", r"parkinson['’]?s", r"multiple sclerosis", r"motor neurone disease", r"asthma(?:tic)?",
        r"(?-i:COPD)", r"tuberculosis", r"cystic fibrosis", r"sickle cell", r"(?:kidney|renal|liver) (?:failure|disease)",
        r"dialysis", r"chemo(?:therapy)?", r"radiotherapy", r"pregnan(?:t|cy)", r"miscarri(?:age|ed)",
        r"termination of (?:her )?pregnancy", r"abortion", r"sexually transmitted", r"chlamydia", r"(?-i:STI)",
        r"tested positive", r"long covid", r"terminal(?:ly)? ill(?:ness)?", r"seriously ill", r"illness",
        r"(?:broken|fractured) (?:arm|leg|hip|wrist|ankle|ribs?|skull|collarbone|pelvis)", r"injur(?:y|ies|ed)",
        r"allerg(?:y|ies|ic)", r"medication",
        r"(?:was|been|is|being) prescribed", r"prescribed (?:by (?:his|her|their|a) (?:GP|doctor|consultant)|antibiotics|medication|painkillers|tablets)",
        r"prescriptions?", r"insulin", r"methadone",
        r"antibiotics", r"morphine", r"warfarin", r"inhaler", r"epipen",
        r"admitted (?:to|into) (?:the )?(?:hospital|a&e|ward|intensive care|icu)", r"(?:in|into|from) hospital",
        r"hospital admission", r"hospitali[sz]ed", r"hospice care", r"(?-i:A&E)", r"intensive care",
        r"(?:had|having|undergo(?:ne|ing)|recovering from|awaiting) (?:an? )?(?:surgery|operation|transplant)",
        r"medical (?:conditions?|history|records?|notes|reports?|treatment|needs|evidence)",
        r"health (?:conditions?|problems?|issues?)", r"sick(?:ness)? (?:note|leave|absence)", r"fit note",
        r"signed off (?:sick|work)", r"long-term sick", r"referred to occupational health",
        r"occupational health (?:referral|report|assessment|appointment)", r"blood (?:tests?|results|pressure)",
        r"(?:his|her|their) (?-i:GP)", r"(?-i:GP) (?:appointment|letter|records?)",
    )),
    SpecialCategory("safeguarding", "safeguarding or child protection", (
        r"child protection (?:plans?|conference|register|case|investigation|enquir(?:y|ies)|referral|concerns?|medical)",
        r"subject to (?:a )?child protection", r"(?-i:CP) (?:plan|conference|register)",
        r"section 47", r"s\.? ?47(?: enquiry| investigation| strategy)?", r"section 42 (?:enquiry|safeguarding)", r"s\.? ?42 enquiry",
        r"child in need (?:plan|meeting|review|status)", r"(?-i:CIN) (?:plan|meeting|review)",
        r"looked[- ]after child(?:ren)?", r"child(?:ren)? looked after", r"(?-i:LAC) (?:review|status|child(?:ren)?)",
        r"(?:taken into|came into|come into|placed in|entered|accommodated in) (?:local authority )?care",
        r"(?:interim )?care order", r"supervision order", r"emergency protection order", r"(?-i:EPO)",
        r"placement order", r"special guardianship", r"foster (?:care|placement)", r"fostered",
        r"care proceedings", r"pre-proceedings", r"public law outline", r"(?-i:PLO)",
        r"safeguarding (?:concerns?|referrals?|alert|enquir(?:y|ies)|investigation|issues?|disclosure|report|meeting|case|plan)",
        r"at risk of (?:significant )?(?:harm|abuse|exploitation|neglect|radicalisation|sexual exploitation)",
        r"significant harm", r"child sexual exploitation", r"(?-i:CSE|CCE)", r"criminal exploitation", r"county lines",
        r"(?-i:FGM)", r"female genital mutilation", r"forced marriage", r"trafficked", r"modern slavery",
        r"domestic (?:abuse|violence)", r"(?-i:MARAC)", r"(?-i:MASH) (?:referral|enquiry)", r"(?-i:DASH) (?:risk assessment|form)",
        r"(?:sexual|physical|emotional|financial) abuse", r"(?:was|were|been|being) (?:sexually |physically )?abused",
        r"(?:signs of|evidence of|concerns? (?:about|of|regarding)|suffering|experiencing) neglect", r"neglected by",
        r"non-accidental injur(?:y|ies)", r"(?-i:NAI)",
        r"(?-i:LADO) (?:referral|strategy|meeting|investigation|allegation|threshold)", r"(?:referred|referral|reported) to (?:the )?(?-i:LADO)",
        r"allegations? (?:of abuse|against)", r"(?-i:Prevent) referral", r"channel panel",
        r"disclos(?:ed|ure of) (?:sexual |physical )?abuse", r"missing from (?:home|care)", r"early help (?:assessment|plan)",
    )),
    SpecialCategory("disability", "disability", (
        r"(?:is|are|was|registered|being|severely|physically|mentally) disabled",
        r"disabled (?:person|people|child|children|adult|man|woman|boy|girl|son|daughter|pupil|student|employee|tenant|resident|parent)",
        r"disabilit(?:y|ies)", r"learning difficult(?:y|ies)", r"wheelchair(?: user)?", r"uses a wheelchair",
        r"mobility (?:impairment|issues|problems|scooter)", r"(?:visually|hearing|sight) impaired", r"(?:visual|hearing) impairment",
        r"(?:is|are|was|profoundly|partially|severely) deaf", r"deafness", r"hearing aids?",
        r"(?:registered|partially|is|was) blind", r"blindness", r"autis(?:m|tic)", r"(?-i:ASD)", r"asperger['’]?s",
        r"(?-i:ADHD)", r"dyslexi[ac]", r"dyspraxia", r"cerebral palsy", r"down['’]?s syndrome", r"spina bifida",
        r"muscular dystrophy", r"amputee", r"paraly[sz](?:ed|is)", r"(?:quadri|para)plegic",
        r"(?-i:EHCP)", r"education,? health and care plan", r"special educational needs", r"(?-i:SEND?) (?:support|needs|status|pupil|child)",
        r"(?-i:PIP) (?:claim|award|assessment|application)", r"personal independence payment", r"disability living allowance",
        r"attendance allowance", r"blue badge (?:holder|application|renewal|assessment)", r"(?:his|her|their|a) blue badge",
        r"reasonable adjustments?",
    )),
    SpecialCategory("ethnicity", "ethnic origin", (
        r"ethnicity", r"ethnic (?:origin|background|group|minority|heritage)", r"(?-i:BAME|BME)",
        r"(?:white|black|asian|mixed) (?:british|irish|african|caribbean|other|gypsy)",
        r"(?:british|english|scottish|welsh) (?:asian|indian|pakistani|bangladeshi|chinese|african|caribbean|arab)",
        r"of (?-i:\p{Lu})\p{L}+ (?:heritage|descent|ethnic origin|origin)", r"mixed (?:race|heritage|ethnicity)", r"dual heritage",
        r"gypsy", r"(?-i:Roma|Traveller|Irish Traveller)", r"racial (?:origin|background)",
    )),
    SpecialCategory("religion", "religious belief", (
        r"religion", r"religious (?:beliefs?|views|faith|background|practice|observance)",
        r"(?-i:Muslim|Christian|Jewish|Jew|Hindu|Sikh|Buddhist|Catholic|Protestant|Anglican|Methodist|Baptist|Mormon|Rastafarian|Pagan)",
        r"jehovah['’]?s witness", r"atheist", r"agnostic", r"practising (?:muslim|christian|jew|catholic|hindu|sikh|buddhist)",
        r"(?:attends?|attended|attending|goes to|went to) (?:the |a |her |his |their )?(?:mosque|church|synagogue|temple|gurdwara|mass)",
        r"(?:observes|observing|fasting (?:for|during)|during) ramadan", r"(?:requires|needs|eats only|keeps) (?:halal|kosher)",
    )),
    SpecialCategory("sexuality", "sexual orientation or gender identity", (
        r"sexual orientation", r"sexuality", r"(?:is|as|openly|being|identifies as) (?:gay|lesbian|bisexual|bi|queer|homosexual|pansexual|asexual)",
        r"gay", r"lesbian", r"bisexual", r"homosexual", r"(?-i:LGBTQ?(?:IA)?\+?)",
        r"(?:came|coming|come) out as (?:gay|lesbian|bi|bisexual|trans|transgender|non-binary|queer)",
        r"(?:came|coming|come) out to (?:his|her|their) (?:parents|family|mum|dad|mother|father|friends)",
        r"same-sex (?:partner|relationship|couple)", r"transgender", r"trans (?:man|woman|person|child|boy|girl)",
        r"non-binary", r"gender (?:identity|reassignment|dysphoria)", r"transitioning (?:to|from) (?:male|female|a man|a woman)",
        r"transitioning(?! (?:to|from|the|our|all|its|their|services|systems?)\b)", r"gender recognition certificate",
    )),
    SpecialCategory("criminal_record", "criminal record", (
        r"criminal (?:records?|convictions?|history|offences?|offending|charges?|proceedings|investigation|damage)",
        r"(?:previous|spent|unspent|prior) convictions?", r"convicted (?:of|for)", r"convictions? for",
        r"(?:criminal|sexual|sex|violent|violence|drugs?|driving|motoring|public order|firearms?|weapons?|previous|serious|summary|indictable) offences?",
        r"offences? (?:of|against)", r"commit(?:ted|ting|s)? (?:an? )?offences?", r"(?:ex-)?offenders?", r"offending (?:behaviour|history)",
        r"re-?offend(?:ing|ed)?", r"sex offenders? register", r"(?-i:MAPPA)", r"known to (?:the )?(?:(?-i:YOT|YOS)|youth offending)",
        r"in (?:police )?custody", r"custodial sentence", r"remanded(?: in custody)?", r"sentenced (?:to|for)",
        r"(?:suspended|prison|custodial|community) sentence", r"(?:in|from|to|out of) prison", r"(?:in|at|to|from) (?-i:HMP|HMYOI)",
        r"imprisoned", r"incarcerated", r"served time", r"released (?:from prison|on licence)", r"on licence", r"recalled to prison",
        r"on probation", r"probation (?:order|supervision|licence)", r"(?:supervised by|under) (?:the )?probation", r"community order", r"(?-i:DBS|CRB) (?:disclosure|certificate (?:showed|shows|revealed))", r"barred list",
        r"arrested", r"arrest (?:for|on suspicion)", r"on suspicion of",
        r"charged with (?:a |an |the )?(?:offences?|assault|murder|theft|burglary|robbery|possession|fraud|rape|manslaughter|criminal|drink[- ]driving|dangerous driving|harassment|stalking|affray|battery|arson)",
        r"(?:received|given|accepted) a (?:police |simple |conditional |youth )?caution", r"cautioned (?:for|by (?:the )?police)",
        r"(?:released )?on bail", r"bail conditions", r"police bail",
        r"(?:appeared|appears|appearing|due to appear) in court", r"pleaded (?:not )?guilty", r"found guilty", r"acquitted",
    )),
    SpecialCategory("immigration", "immigration status", (
        r"asylum (?:seekers?|seeking|claims?|claimant|application|support|status|appeal|case|interview)", r"(?:seeking|claimed|granted|refused) asylum",
        r"(?-i:UASC)", r"unaccompanied asylum", r"refugees?(?: status)?", r"(?-i:NRPF)", r"no recourse to public funds",
        r"overstay(?:er|ers|ed|ing)", r"visa (?:overstay(?:er)?|expired|expiry|status|refused|refusal|application)",
        r"(?:expired|overstayed) (?:his|her|their|a) visa", r"(?:indefinite )?leave to (?:remain|enter)", r"(?-i:ILR)",
        r"(?:pre-)?settled status", r"(?-i:EUSS)", r"eu settlement scheme", r"(?-i:BRP)", r"biometric residence permit",
        r"immigration (?:status|bail|detention|removal|tribunal|appeal|case|history|enforcement|offence|application)",
        r"undocumented (?:migrants?|immigrants?|status|workers?|person|people|family)", r"illegal (?:immigrant|entrant|migrant)", r"irregular migrant", r"deport(?:ed|ation|ing)",
        r"removal (?:directions|centre)", r"detention centre", r"reporting (?:to|at) the home office",
        r"home office (?:reporting|interview|decision|refusal|removal)",
    )),
)
_BY_KEY = {c.key: c for c in CATEGORIES}



def _first_words(seq: "sre_parse.SubPattern", open_: set[str]) -> tuple[set[str], set[str]]:
    """The lowercase words a parsed term can begin with: (still growing, finished)."""
    finished: set[str] = set()
    for op, av in seq:
        if not open_:
            break
        if op is sre.LITERAL:
            ch = chr(av)
            if ch.isalpha():
                open_ = {w + ch.lower() for w in open_}
            else:
                finished |= open_
                open_ = set()
        elif op is sre.IN:
            letters: set[str] = set()
            other = False
            for member, value in av:
                if member is sre.LITERAL:
                    letters.add(chr(value).lower()) if chr(value).isalpha() else None
                    other = other or not chr(value).isalpha()
                elif member is sre.RANGE:
                    letters |= {chr(c).lower() for c in range(value[0], value[1] + 1) if chr(c).isalpha()}
                elif member is sre.CATEGORY and value in (sre.CATEGORY_DIGIT, sre.CATEGORY_SPACE):
                    other = True
                else:
                    raise ValueError("a term's first word may only use letters, digits or spaces in a class")
            if other:
                finished |= open_
            open_ = {w + c for w in open_ for c in letters}
        elif op is sre.SUBPATTERN:
            open_, done = _first_words(av[3], open_)
            finished |= done
        elif op is sre.BRANCH:
            grown: set[str] = set()
            for branch in av[1]:
                more, done = _first_words(branch, open_)
                grown |= more
                finished |= done
            open_ = grown
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            least, most, item = av
            if most > 3:
                raise ValueError("a term's first word may not repeat without bound")
            current, grown = open_, set()
            for i in range(most + 1):
                if i >= least:
                    grown |= current
                if i == most or not current:
                    break
                current, done = _first_words(item, current)
                finished |= done
            open_ = grown
        elif op not in (sre.AT, sre.ASSERT, sre.ASSERT_NOT):
            raise ValueError(f"a term's first word may not use {op}")
    return open_, finished


def first_words(term: str) -> set[str]:
    """Every lowercase word a term can begin with; ValueError when that is not a finite set."""
    source = term.replace(r"\p{Lu}", "[A-Z]").replace(r"\p{L}", "[a-z]")
    growing, finished = _first_words(sre_parse.parse(source), {""})
    words = growing | finished
    if not words or "" in words:
        raise ValueError(f"term {term!r} must begin with a letter")
    return words


class TermIndex:
    """The terms of every category, indexed by the word they begin with.

    One big alternation scans at about 0.3 MB/s; looking up each word of the text and
    trying only the few terms that begin with it scans at about 3.5 MB/s, same matches.
    Many terms begin with common words ("is", "has", "of", "a"), so the words looked up
    are first narrowed by anchors (see detectors.personal_data.anchors): a rarer word (or
    piece of text) each term must contain, looked up in the text's vocabulary. Mail with
    none of them (most mail) costs that lookup; otherwise only the words that begin a term
    with an anchor in the text are visited, found by one stdlib scan.
    """

    _WORD = re.compile(r"[^\W\d_]+")

    def __init__(self, categories: tuple[SpecialCategory, ...]):
        by_word: dict[str, list[tuple[str, str]]] = {}
        for category in categories:
            for term in category.terms:
                for word in first_words(term):
                    by_word.setdefault(word, []).append((category.key, term))
        compiled: dict[tuple[tuple[str, str], ...], regex.Pattern[str]] = {}
        self._patterns: dict[str, regex.Pattern[str]] = {}
        for word, entries in by_word.items():
            key = tuple(entries)
            if key not in compiled:
                grouped: dict[str, list[str]] = {}
                for category_key, term in entries:
                    grouped.setdefault(category_key, []).append(term)
                alternatives = "|".join(f"(?P<{k}>{'|'.join(ts)})" for k, ts in grouped.items())
                compiled[key] = regex.compile(f"(?:{alternatives})(?![\\p{{L}}\\p{{N}}])", regex.IGNORECASE)
            self._patterns[word] = compiled[key]
        terms = [term for category in categories for term in category.terms]
        built = Anchors.build(terms, end_bounded=True)
        self._anchors: Anchors | None = None
        self._first_words_by_anchor: dict[tuple[str, str], frozenset[str]] = {}
        if built is not None and all(word.isascii() for word in self._patterns):
            self._anchors, anchors_of_term = built
            by_anchor: dict[tuple[str, str], set[str]] = {}
            for term, anchors in zip(terms, anchors_of_term):
                for anchor in anchors:
                    by_anchor.setdefault(anchor, set()).update(first_words(term))
            self._first_words_by_anchor = {a: frozenset(ws) for a, ws in by_anchor.items()}

    def find(self, text: str) -> Iterator[tuple[str, int, int]]:
        """(category key, start, end) of each term in `text`, left to right, not overlapping."""
        vocab = vocabulary(text) if self._anchors is not None else None
        if vocab is None:
            yield from self._find_at_every_word(text)
            return
        present = self._anchors.found(vocab)  # type: ignore[union-attr]
        if not present:
            return
        # A term starts at a whole word, and every first word is ASCII: one the text lacks starts nothing.
        words = frozenset(
            w for a in present for w in self._first_words_by_anchor.get(a, ()) if w.encode() in vocab.words
        )
        if not words:
            return
        low = lowered(text)     # the text's letters at the same offsets, so its words are the text's words
        after = 0
        for word in _word_finder(words).finditer(low):
            start = word.start()
            if start < after:
                continue
            m = self._patterns[word.group()].match(text, start)
            if m:
                after = m.end()
                yield m.lastgroup or "", m.start(), m.end()

    def _find_at_every_word(self, text: str) -> Iterator[tuple[str, int, int]]:
        after = 0
        for word in self._WORD.finditer(text):
            start = word.start()
            if start < after or (start and text[start - 1].isalnum()):
                continue
            pattern = self._patterns.get(word.group().lower())
            if pattern is None:
                continue
            m = pattern.match(text, start)
            if m:
                after = m.end()
                yield m.lastgroup or "", m.start(), m.end()


@lru_cache(maxsize=256)
def _word_finder(words: frozenset[str]) -> re.Pattern[str]:
    """Whole words from `words` in lowered text: after no letter or digit, before no letter (as _WORD reads words)."""
    return re.compile(rf"(?<![^\W_])(?:{alternation(words)})(?![^\W\d_])")


TERMS = TermIndex(CATEGORIES)

# A term naming a role, service or event rather than a person's circumstances.
_ROLE_AFTER = regex.compile(
    r"[ \t\-/&]{1,3}(?:and [\p{L}]+ )?(?:awareness|policy|policies|procedures?|team|teams|lead|leads|officers?|managers?|"
    r"services?|unit|board|partnership|hub|training|courses?|week|month|day|forum|network|group|champions?|"
    r"co-?ordinators?|advis[eo]rs?|practitioners?|nurses?|workers?|specialists?|consultants?|charit(?:y|ies)|strategy|"
    r"framework|campaign|audit|statistics|data|funding|budget|provision|access|facilities|toilets?|parking|bays?|"
    r"period|review|research|act|legislation|law|guidance|sector|clinic|ward|department|directorate|panel|"
    r"practice|provider|friendly|inclusion|equality|history|hate crime|pride|society|trust|foundation|centre|center|"
    r"prevention|management|programme|program|scheme|resettlement|charges|accessible|ramps?|lifts?|sites?|pitch(?:es)?|"
    r"accommodation|liaison|communit(?:y|ies)|leaders?|schools?|association|organisations?|groups?)(?![\p{L}\p{N}])",
    regex.IGNORECASE,
)
_ROLE_BEFORE = regex.compile(
    r"(?:head|director|lead|manager|minister|team|department|directorate|service|officer|secretary|designated)"
    r" (?:of|for) (?:the )?$",
    regex.IGNORECASE,
)
# Named things a term may sit inside without being about a person.
_CONTAINERS = frozenset({PERSON, "ORG", "FAC", "WORK_OF_ART", "EVENT", "LAW", "PRODUCT"})
_PARAGRAPH_BREAK = regex.compile(
    r"\r?\n[ \t\r]*\n\s*"
    r"|\r?\n(?=[ \t]*(?:kind |best |warm |many |with )?(?:regards|wishes|thanks|thank you|cheers|"
    r"yours (?:sincerely|faithfully|truly)|sincerely)\b[^\n]{0,20}\n)"
    r"|(?<=^[ \t]*(?:hi|hello|dear|good (?:morning|afternoon)|morning|afternoon)\b[^\n]{0,40}),?[ \t]*\r?\n",
    regex.IGNORECASE | regex.MULTILINE,
)
_LINE_BREAK = regex.compile(r"\r?\n")
_SENTENCE_BREAK = regex.compile(r"(?<=[.!?])\s+(?=[\"'(\p{Lu}\p{N}])|\r?\n")
_TABLE_DELIMITERS = ("\t", ",", ";", "|")
_CELLS_AS_TABS = str.maketrans(",;|", "\t\t\t")
_TITLES = regex.compile(r"^(?:mr|mrs|ms|miss|mx|dr|prof|professor|sir|dame|rev|cllr|councillor)\.?\s+", regex.IGNORECASE)
# Words the small model sometimes labels PERSON on their own.
_NOT_NAMES = frozenset("""email e-mail tel mobile phone fax regards thanks dear hi hello cheers best kind
many warm sincerely loss bin twitter facebook linkedin teams zoom outlook dob nhs nino ref re fw fwd""".split())
# ... and names of places: "Moor Lane", "Hillside Primary".
_PLACE_WORDS = frozenset("""lane road street avenue close drive way court crescent grove place square terrace gardens
park hill house hall centre center school primary academy college university hospital surgery ward estate
council office unit""".split())


@dataclass(frozen=True)
class _Unit:
    """A stretch of one segment that holds terms, with the categories it holds."""

    location: str
    start: int
    end: int
    terms: tuple[tuple[str, int, int], ...]      # (category key, start, end), offsets in the segment
    row: bool = False                            # one row of a table: cells are read as tab-separated

    def text_for_ner(self, text: str) -> str:
        # "12,John Smith,asthma" is one token to the tokenizer at "12,John"; a tab is a
        # boundary, and the same length, so entity offsets still fit the segment.
        piece = text[self.start:self.end]
        return piece.translate(_CELLS_AS_TABS) if self.row else piece


def person_key(text: str) -> str:
    """A name as compared for distinctness: no title, no possessive, case and spacing folded."""
    key = regex.sub(r"[’']s$", "", text.strip())
    key = _TITLES.sub("", key)
    return " ".join(key.casefold().split())


def is_plausible_name(text: str) -> bool:
    key = person_key(text)
    if len(key) < 2 or key in _NOT_NAMES or not any(ch.isalpha() for ch in key) or any(ch.isdigit() for ch in key):
        return False
    if key.split()[-1] in _PLACE_WORDS:
        return False
    return any(word[:1].isupper() for word in text.split())


def _merge_partial_names(names: set[str]) -> set[str]:
    """'smith' and 'john smith' in one place are one person."""
    words = {n: set(n.split()) for n in names}
    return {n for n in names if not any(o != n and words[n] < words[o] for o in names)}


def _paragraphs(text: str) -> Iterator[tuple[int, int]]:
    start = 0
    for m in _PARAGRAPH_BREAK.finditer(text):
        yield start, m.start()
        start = m.end()
    yield start, len(text)


def _looks_tabular(lines: list[str]) -> bool:
    lines = [ln for ln in lines if ln.strip()]
    if len(lines) < 3:
        return False
    for d in _TABLE_DELIMITERS:
        common, times = Counter(ln.count(d) for ln in lines).most_common(1)[0]
        if common >= 1 and times >= 0.8 * len(lines):
            return True
    return False


def _pieces(text: str, start: int, end: int, max_unit: int) -> Iterator[tuple[int, int, bool]]:
    """The context units of one paragraph: itself, or its rows, or its sentences; (start, end, is_row)."""
    para = text[start:end]
    rows = "\n" in para.strip() and _looks_tabular(para.splitlines())
    if rows:
        splitter = _LINE_BREAK
    elif len(para) > max_unit:
        splitter = _SENTENCE_BREAK
    else:
        yield start, end, False
        return
    pos = start
    for m in splitter.finditer(text, start, end):
        yield pos, m.start(), rows
        pos = m.end()
    yield pos, end, rows


def find_units(location: str, text: str, max_unit: int = DEFAULT_MAX_UNIT_CHARS) -> list[_Unit]:
    """Paragraphs (or rows, or sentences) of `text` that hold at least one term. No NER."""
    terms: list[tuple[str, int, int]] = []
    for key, start, end in TERMS.find(text):
        if _ROLE_AFTER.match(text, end) or _ROLE_BEFORE.search(text[max(0, start - 40):start]):
            continue
        terms.append((key, start, end))
    if not terms:
        return []
    units: list[_Unit] = []
    i = 0
    for p_start, p_end in _paragraphs(text):
        if i >= len(terms):
            break
        if terms[i][1] >= p_end:
            continue
        for u_start, u_end, row in _pieces(text, p_start, p_end, max_unit):
            inside = []
            while i < len(terms) and terms[i][1] < u_end:
                if terms[i][1] >= u_start:
                    inside.append(terms[i])
                i += 1
            if inside:
                s, e = u_start, u_end
                if e - s > max_unit:  # one endless sentence: a window around its terms
                    s = max(u_start, inside[0][1] - max_unit // 2)
                    e = min(u_end, max(s + max_unit, inside[-1][2]))
                units.append(_Unit(location, s, e, tuple(inside), row))
    return units


class SpecialCategoryDetector:
    """Special-category terms with a named person in the same paragraph. STRONG personal data."""

    name = NAME

    def __init__(self, model: str = DEFAULT_MODEL, max_chars: int = DEFAULT_MAX_CHARS,
                 max_unit_chars: int = DEFAULT_MAX_UNIT_CHARS, preload: bool = True,
                 ner: NerModel | None = None):
        self.max_chars = max_chars
        self.max_unit_chars = max_unit_chars
        self.ner = ner if ner is not None else ner_model(model, preload=preload)

    @property
    def status(self) -> str:
        return self.ner.status

    def detect(self, message: Message) -> list[Finding]:
        units: list[tuple[_Unit, str]] = []
        for segment in message.segments:
            for unit in find_units(segment.location, segment.text, self.max_unit_chars):
                units.append((unit, segment.text))
        if not units or not self.ner.available:
            return []
        budget = self.max_chars
        scanned: list[tuple[_Unit, str]] = []
        cut_at: str | None = None
        for unit, text in units:
            size = unit.end - unit.start
            if size > budget:
                cut_at = unit.location
                break
            budget -= size
            scanned.append((unit, text))
        spans = self.ner.entities([u.text_for_ner(text) for u, text in scanned], labels=_CONTAINERS)
        people: dict[tuple[str, str], set[str]] = {}
        for (unit, text), entities in zip(scanned, spans):
            for key, name in _pairs(unit, text, entities):
                people.setdefault((unit.location, key), set()).add(name)
        findings = [
            Finding(
                detector=NAME,
                category=Category.PERSONAL_DATA,
                kind=_BY_KEY[key].kind,
                location=location,
                count=len(_merge_partial_names(names)),
                strength=Strength.STRONG,
            )
            for (location, key), names in people.items()
        ]
        if cut_at is not None and not findings:
            findings.append(Finding(
                detector=NAME,
                category=Category.ATTACHMENT,
                kind="text too long to check for special-category data about named people",
                location=cut_at,
                signal=Signal.INCOMPLETE,
                detail=f"named-entity check limited to {self.max_chars} characters per message",
            ))
        return findings


def _pairs(unit: _Unit, text: str, entities: list[EntitySpan]) -> Iterator[tuple[str, str]]:
    """(category key, person key) for every term and named person in one unit."""
    names = set()
    for e in entities:
        raw = text[unit.start + e.start:unit.start + e.end]
        # The small model sometimes labels "Mrs Doreen Clarke" ORG; a personal title settles it.
        if e.label == PERSON or (e.label == "ORG" and _TITLES.match(raw)):
            if is_plausible_name(raw):
                names.add((e.start, e.end, person_key(raw)))
    if not names:
        return
    for key, t_start, t_end in unit.terms:
        s, e = t_start - unit.start, t_end - unit.start
        if any(c.start <= s and e <= c.end and c.end - c.start > e - s for c in entities):
            continue  # the term is part of a longer name: "Christian Smith", "Alzheimer's Society"
        for n_start, n_end, name in names:
            if n_start <= s < n_end or s <= n_start < e:
                continue  # the "name" is the term itself
            yield key, name
