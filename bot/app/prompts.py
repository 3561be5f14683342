"""Prompts from playlist facts: the seed paper's heuristic and a few richer styles.

    PlaylistFacts → clean title/description → themes (lexicon) → one Prompt per candidate

Styles (``STYLES``):

- ``seed``: seed 000's heuristic, exactly ``"<title> playlist cover image"``. The paper tried
  genres and artists and dropped them (faces and unknown artists render badly), so this stays
  the default.
- ``description``: the title and the playlist's own description, condensed.
- ``genre``: the top genre (or genre words found in the title/description) with visual cues.
- ``artist``: the top artist's *name* as a musical reference, never a likeness: those prompts
  carry :data:`FACE_NEGATIVE`.
- ``mood``: mood words (late-night drive, workout, rain, ...) mapped to palettes, light and
  motifs by a small hand-made lexicon (seed 000 §1 describes exactly these cues).
- ``mix``: a different style per candidate, falling back where a playlist has no material.
- ``expand``: seed 003's prompt expansion – the ``seed`` prompt continued by a GPT-2 prompt
  model (:mod:`models.expand`), sampled with the candidate's seed, filtered and kept within
  CLIP's 77 tokens. Needs the model in the local cache; without it the request fails with a
  message saying how to fetch it.
- ``auto``: ``expand`` where its model is cached, ``mix`` otherwise.

A playlist may be metadata only (Spotify's Feb 2026 rules, see NOTES): every style can then
still write a prompt from the title and description, and reports the style it really used in
:attr:`Prompt.style`.

Everything is deterministic: the same facts, style and seed give the same prompts; candidate
``i`` uses ``seed + i`` both as its image seed and to pick among synonymous visual cues.
"""

from __future__ import annotations

import math
import random
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from bot.app.errors import InvalidOption
from bot.app.playlist import PlaylistFacts

STYLES = ("seed", "description", "genre", "artist", "mood", "mix", "expand", "auto")
# The styles written from the lexicon alone: no model, nothing cached needed.
HEURISTIC_STYLES = tuple(s for s in STYLES if s not in ("expand", "auto"))
MAX_COUNT = 4
CLIP_MAX_TOKENS = 77  # CLIP's context, start and end tokens included
MIN_TOKENS = 40  # room for a title, a frame and an artist reference

DEFAULT_NEGATIVE = (
    "blurry, low quality, lowres, jpeg artifacts, watermark, signature, username, "
    "deformed, distorted text, misspelled text, cropped, out of frame, duplicate, "
    "noisy, ugly"
)
# Added whenever an artist name is in the prompt: the name is a reference to a sound, and a
# diffusion model asked for a musician tends to paint a (bad) likeness of them.
FACE_NEGATIVE = "face, portrait, person, people, human, celebrity, crowd, hands, body"

UNTITLED = "untitled"
_LABEL_TOKENS = 20  # longest artist name (else the next artist) or genre label in a prompt
_SEED_SUFFIX = "playlist cover image"  # seed 000 §3: "<playlist title> playlist cover image"

# Candidate i of a "mix" request takes the first of these styles that has material.
_MIX_ORDER: tuple[tuple[str, ...], ...] = (
    ("seed",),
    ("description", "mood", "genre"),
    ("genre", "mood", "description"),
    ("artist", "mood", "genre", "description"),
)

# Phrases that frame a prompt as cover art; non-seed styles vary them per candidate.
_FRAMES = (
    "playlist cover art",
    "playlist cover image",
    "square album cover art",
    "music cover artwork",
)


@dataclass(frozen=True)
class Prompt:
    text: str
    negative: str
    style: str  # the style actually used (after any fallback for missing material)
    seed: int


# --- the lexicon ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Theme:
    """A mood or genre: words that reveal it, and interchangeable visual cues for it."""

    name: str
    keywords: tuple[str, ...]  # matched as whole words on normalised text ("lo fi", "r and b")
    visuals: tuple[str, ...]  # synonyms: palette, light and motifs; one is picked per candidate
    genre: bool = False


def _theme(name: str, keywords: str, *visuals: str, genre: bool = False) -> Theme:
    """Compact lexicon entries: ``keywords`` is one comma-separated string."""
    return Theme(name, tuple(k.strip() for k in keywords.split(",")), visuals, genre)


THEMES: tuple[Theme, ...] = (
    # moods and occasions
    _theme(
        "night",
        "night, nights, late night, midnight, nocturnal, "
        "moon, moonlight, 2am, 3am, 4am, after hours",
        "dark blue tones, city lights",
        "deep navy palette, soft neon glow, night sky",
        "midnight sky, stars, cool blue light",
    ),
    _theme(
        "drive",
        "drive, driving, road trip, roadtrip, cruise, cruising, highway, car, ride",
        "empty road, headlights, motion blur",
        "open highway at dusk, long shadows",
        "view through a car window, passing lights",
    ),
    _theme(
        "chill",
        "chill, chilled, chillout, relax, relaxing, calm, mellow, sunday, lazy sunday, unwind",
        "soft pastel colors, calm light, gentle gradients",
        "muted warm tones, soft focus, hazy light",
    ),
    _theme(
        "rain",
        "rain, rainy, raining, storm, stormy, cloudy, grey",
        "rain on a window, grey blue tones, soft reflections",
        "wet streets, blurred lights, grey sky",
    ),
    _theme(
        "summer",
        "summer, summertime, sun, sunny, beach, tropical, vacation, holiday, pool",
        "bright sunlight, warm yellow and turquoise, beach",
        "golden hour, palm trees, blue sea",
    ),
    _theme(
        "workout",
        "workout, workouts, gym, training, run, running, "
        "cardio, lifting, pump, hype, beast mode, motivation, fitness",
        "saturated reds, bold diagonal shapes, high contrast",
        "gym weights, dramatic light, strong red and black",
    ),
    _theme(
        "party",
        "party, parties, club, dance, dancing, pregame, friday, saturday, weekend, festival, rave",
        "neon colors, disco lights, confetti",
        "vibrant pink and purple, dance floor, glitter",
    ),
    _theme(
        "sad",
        "sad, sadness, heartbreak, heartbroken, crying, cry, "
        "tears, lonely, alone, melancholy, breakup, depressed, feeling blue",
        "muted grey blue palette, empty room, soft shadows",
        "faded colors, cold light, window at dusk",
    ),
    _theme(
        "love",
        "love, romance, romantic, crush, valentine, valentines, date night, heart, kiss",
        "soft pink and red tones, warm light, hearts",
        "roses, candle light, warm glow",
    ),
    _theme(
        "focus",
        "focus, study, studying, concentration, work, "
        "reading, coding, homework, exam, exams, deep work",
        "clean minimal desk, warm lamp light, books",
        "calm neutral tones, notebook, daylight",
    ),
    _theme(
        "sleep",
        "sleep, sleeping, asleep, sleepy, bedtime, dream, dreams, dreamy, lullaby, nap",
        "dark indigo sky, stars, soft clouds",
        "moonlit bedroom, soft blue light",
    ),
    _theme(
        "morning",
        "morning, mornings, sunrise, wake up, breakfast, coffee",
        "sunrise, warm morning light, coffee cup",
        "soft golden light, open window, plants",
    ),
    _theme(
        "christmas",
        "christmas, xmas, holidays, santa, winter wonderland, noel, navidad, weihnachten, jingle",
        "red and green, warm fairy lights, snow, ornaments",
        "cozy fireplace, pine tree, gold lights",
    ),
    _theme(
        "halloween",
        "halloween, spooky, horror, scary",
        "orange and black, pumpkins, fog, moon",
        "haunted house, purple night, fog",
    ),
    _theme(
        "winter",
        "winter, snow, snowy, cold, frozen, ice",
        "snow, cold blue and white tones, frost",
        "snowy forest, pale light",
    ),
    _theme(
        "autumn",
        "autumn, fall vibes, fall songs, october, november, cozy, cosy, leaves",
        "orange and brown leaves, warm light",
        "cozy knit textures, amber tones",
    ),
    _theme(
        "happy",
        "happy, happiness, good vibes, feel good, smile, joy, fun, sunshine, upbeat",
        "bright cheerful colors, sunshine, playful shapes",
        "yellow and orange palette, bold simple shapes",
    ),
    _theme(
        "sunset",
        "sunset, dusk, golden hour, evening",
        "orange and pink sky, golden light",
        "warm sunset gradient, silhouettes of palm trees",
    ),
    _theme(
        "nature",
        "nature, forest, hiking, mountain, mountains, camping, ocean, sea, outdoors",
        "misty forest, green tones, soft daylight",
        "mountains, wide sky, fresh green and blue",
    ),
    _theme(
        "retro",
        "retro, throwback, throwbacks, 80s, 90s, 00s, "
        "70s, vintage, oldies, nostalgia, nostalgic, classics",
        "retro colors, film grain, faded print",
        "synthwave sunset, grid horizon, magenta",
    ),
    _theme(
        "dark",
        "dark, angry, rage, villain, evil, shadow",
        "black and deep red, dramatic shadows",
        "dark smoke, harsh light, high contrast",
    ),
    # genres (also matched in Spotify's artist genres)
    _theme(
        "jazz",
        "jazz, bebop, swing, bossa nova",
        "smoky club, warm amber light, saxophone",
        "deep blue and gold, vinyl record, brass",
        genre=True,
    ),
    _theme(
        "lofi",
        "lofi, lo fi, chillhop, beats",
        "cozy room, warm lamp light, window at dusk, pastel illustration",
        "grainy pastel illustration, headphones, desk",
        genre=True,
    ),
    _theme(
        "metal",
        "metal, metalcore, deathcore, doom, thrash",
        "black and silver, dark dramatic lighting, sharp edges",
        "fire and smoke, heavy black texture",
        genre=True,
    ),
    _theme(
        "punk",
        "punk, hardcore, grunge, emo",
        "torn paper collage, bold black and pink",
        "xerox texture, rough grunge collage",
        genre=True,
    ),
    _theme(
        "rock",
        "rock, guitar, alt rock",
        "electric guitar, gritty texture, stage lights",
        "worn denim blue, amp glow, grain",
        genre=True,
    ),
    _theme(
        "hip hop",
        "hip hop, hiphop, rap, trap, drill, grime, boom bap",
        "urban street, graffiti wall, bold gold and black",
        "city rooftop, moody light, concrete",
        genre=True,
    ),
    _theme(
        "r&b",
        "r and b, rnb, soul, neo soul, slow jams",
        "smooth purple and gold tones, soft glow, silk",
        "velvet textures, warm low light",
        genre=True,
    ),
    _theme(
        "electronic",
        "electronic, edm, house, techno, trance, dubstep, "
        "dnb, drum and bass, synth, synthwave, electro, garage",
        "neon laser lights, geometric shapes, dark club",
        "glowing synth waves, vivid blue and magenta",
        genre=True,
    ),
    _theme(
        "classical",
        "classical, piano, orchestra, orchestral, symphony, opera, baroque, strings, instrumental",
        "grand piano, elegant marble, soft golden light",
        "sheet music, candle light, ivory",
        genre=True,
    ),
    _theme(
        "country",
        "country, folk, americana, bluegrass, acoustic, western",
        "wooden porch, open fields, warm sunset",
        "dusty road, acoustic guitar, warm tones",
        genre=True,
    ),
    _theme(
        "reggae",
        "reggae, dancehall, dub, ska",
        "green yellow and red, sunny beach, palm leaves",
        "warm tropical colors, sun rays",
        genre=True,
    ),
    _theme(
        "latin",
        "latin, latino, reggaeton, salsa, bachata, cumbia, merengue, samba, urbano",
        "hot pink and orange, tropical flowers, sunlight",
        "warm colors, street party lights",
        genre=True,
    ),
    _theme(
        "k-pop",
        "k pop, kpop, j pop, jpop, idol",
        "glossy pastel colors, sparkles, bold graphic shapes",
        "candy colors, shiny stickers",
        genre=True,
    ),
    _theme(
        "indie",
        "indie, bedroom pop, dream pop, shoegaze",
        "film grain, pastel colors, polaroid style",
        "soft faded colors, analog photo",
        genre=True,
    ),
    _theme(
        "pop",
        "pop, hits, top hits, charts, dance pop",
        "bright bubblegum colors, glossy shapes",
        "bold pink and blue, shiny gradient",
        genre=True,
    ),
    _theme(
        "ambient",
        "ambient, meditation, yoga, spa, healing, drone, new age",
        "soft gradients, misty landscape, calm",
        "slow waves, pale light, wide space",
        genre=True,
    ),
    _theme(
        "funk",
        "funk, disco, groove, boogie, motown",
        "mirror ball, seventies colors, groovy patterns",
        "gold and orange, glitter, retro type",
        genre=True,
    ),
    _theme(
        "blues",
        "blues",
        "deep blue tones, old guitar, smoky bar",
        "dim bar light, worn wood, blue haze",
        genre=True,
    ),
)

_KEYWORDS_LONGEST_FIRST = sorted(
    ((keyword, theme) for theme in THEMES for keyword in theme.keywords),
    key=lambda pair: -len(pair[0]),
)

# When nothing in the playlist names a mood or a genre: generic but pleasant cover cues.
GENERIC_VISUALS = (
    "bold graphic design, vibrant colors, clean shapes",
    "abstract shapes, soft gradient, modern design",
    "colorful collage, paper texture, simple composition",
    "minimal design, strong color contrast, geometric pattern",
)


# --- text cleaning --------------------------------------------------------------------------------

_COMBINING_BLOCKS = (
    (0x0300, 0x036F),
    (0x1AB0, 0x1AFF),
    (0x1DC0, 0x1DFF),
    (0x20D0, 0x20FF),
    (0xFE20, 0xFE2F),
    (0xFE00, 0xFE0F),
    (0xE0100, 0xE01EF),
)
_DROP_CATEGORIES = {"So", "Sk", "Cf", "Co", "Cn", "Cs", "Me"}
_SPACE_CATEGORIES = {"Cc", "Zl", "Zp", "Zs"}
_EDGE_JUNK = " -–—|~•·*_=:/\\,;+"
_SPACES = re.compile(r"\s+")
# Words that make no sense at the end of a cut text.
_DANGLING_TEXT = "a an and & the of for with to in on at by from like or but my your"
_DANGLING = frozenset(_DANGLING_TEXT.split())


def clean_text(text: str) -> str:
    """Keep letters, digits and punctuation; drop emoji, symbols, control and stray marks.

    NFKC first turns "𝓬𝓱𝓲𝓵𝓵" and fullwidth letters (common in playlist titles) into plain ones
    and composes accents, so the combining marks left afterwards are decoration (strike-through,
    "zalgo", emoji variation selectors) and can go. Marks outside those blocks are kept: Indic
    and Thai vowel signs are combining marks too.
    """
    text = unicodedata.normalize("NFKC", text or "")
    kept = []
    for ch in text:
        category = unicodedata.category(ch)
        if category in _SPACE_CATEGORIES:
            kept.append(" ")
        elif category in _DROP_CATEGORIES or any(a <= ord(ch) <= b for a, b in _COMBINING_BLOCKS):
            continue
        else:
            kept.append(ch)
    return _SPACES.sub(" ", "".join(kept)).strip(_EDGE_JUNK)


def clean_title(name: str) -> str:
    """The playlist title as it goes into a prompt; ``"untitled"`` when nothing is left."""
    return clean_text(name) or UNTITLED


# Sentences of a description that talk about the playlist rather than the music.
_BOILERPLATE = re.compile(
    r"\b(follow|updated?|updates|submit|submissions?|instagram|insta|tiktok|twitter|youtube|"
    r"spotify|playlist by|curated by|made by|cover (?:art|photo|image|by)|photo by|"
    r"pic by|dm|link|links|contact|email|soundcloud|enjoy)\b|@\w|\.com\b",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\s+[|•·]\s+|\s+[-–—]\s+")


def condense_description(description: str) -> str:
    """The description's sentences about the music, joined as one prompt clause.

    Drops promotional sentences ("Updated weekly!", "Follow @x", "Cover by ..."), hashtags'
    ``#`` signs and sentence-final punctuation; :func:`fit_tokens` later cuts it to length.
    """
    text = clean_text(description).replace("#", " ")
    sentences = [s.strip(" .!?" + _EDGE_JUNK) for s in _SENTENCE_END.split(text)]
    useful = [s for s in sentences if s and not _BOILERPLATE.search(s)]
    return _SPACES.sub(" ", ", ".join(useful)).strip()


# --- token budget ---------------------------------------------------------------------------------

# CLIP's pre-tokenizer (open_clip / transformers): contractions, letter runs, single digits,
# and runs of anything else. Python's re has no \p{L}: [^\W\d_] is "word characters minus
# digits and underscore", i.e. letters (plus a few numeric symbols, which only cost more below).
_PRETOKEN = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+")
_CONSONANT_RUN = re.compile(r"[^aeiou]+")
_Q_WITHOUT_U = re.compile(r"q(?!u)")
_ASCII_RUNS = re.compile(r"([a-z]+)|([^a-z]+)")

# Words that are one token in CLIP's vocabulary (each checked against the real OpenAI BPE,
# bpe_simple_vocab_16e6, as "word</w>"). They cover the function words and every word the
# lexicon, the frames and the negative prompts use, so the estimate is exact on our own text.
_ONE_TOKEN_TEXT = """
    a about above abstract acoustic across after again against album albums all almost alone
    along already also alt always am amber among amp an analog and angry another anthem any
    anyone anything are around art artifacts artist artwork as at autumn away b babe baby back
    bad ball band bangers bar bass be beach beast beat beats beautiful because bed bedroom been
    before being below best better between big black blue blur blurred blurry body bold books
    bop both boy boys brass bright brown bubblegum but by c calm came can candle candy cant car
    celebrity chains chart charts cheerful chill choir city classic classics clean clouds club
    coffee cold collage collection color colorful colors come composition concrete confetti
    contrast cool could country cover covers cozy cropped crowd cry cup d dance dancing dark
    date day daylight days dead deep denim design desk did didnt dim disco do does doing dont
    down dramatic dream dreams drive driving during dusk dusty e each early earth easy edges
    edit electric elegant empty end energy enough essentials even evening ever every everything
    f face faded fairy fall family fast favorite favorites favourite favourites feat feel
    feeling feelings feels few fields film find fire fireplace first floor flowers fm focus fog
    for forest forever found frame free fresh friday friends from frost full fun funk g gems
    genre gentle geometric get gets getting girl girls give glitter glossy glow glowing go goes
    going gold golden gone good gospel got gradient graffiti grain grand graphic gray great
    green grey grid gritty groove grooves groovy grunge guitar gym h had hands happy hard harsh
    has hate haunted have having haze hazy he headlights headphones heart hearts heavy her here
    hers herself hey high highway him himself hip his hit hits home hop horizon hot hour house
    how human i if illustration image in indie indigo inside into is isnt it its ivory j jam
    jams jazz just k keep kind kiss knit know l lamp landscape laser last late leaves left less
    let life light lighting lights like little live long look lost lot lots loud love low lyrics
    m made magenta make many marble may me melody metal midnight mind mine minimal mirror misty
    mix mixtape mode modern money mood moods moody moon more morning most motion mountains much
    music must muted my myself n navy need neon neutral never new next night nights no noisy
    none not notebook nothing now o ocean of off oh ok okay old on once one only open or orange
    ornaments other our ours out outside over own p pale palette palm paper part party passing
    pastel pattern patterns people person photo piano pine pink plants play playful playlist
    please polaroid pool pop porch portrait print pumpkins purple put q quality quiet r radio
    rain rainy rap rays really record red reds reflections remix remixes retro rhythm right road
    rock romance rooftop room roses rough s sad said same saturated saw sax saxophone say school
    sea see seen shadows shapes sharp she sheet shiny should show signature silk silver simple
    since single singles sky slow smile smoke smoky smooth snow snowy so soft some something
    sometimes song songs soon soul sound sounds soundtrack space sparkles spring square stage
    star stars stickers still stop street streets strong study stuff style such summer sun
    sunday sunlight sunny sunrise sunset sunshine sweet synth t take tape tears text texture
    textures than that thats the their them then there these they thing things think this those
    though through time to today together tomorrow tone tones tonight too top torn tracks train
    tree trees trip tropical true try tune tunes turn turquoise two type u ugly under until up
    upon urban us use username v velvet very vibe vibes vibrant view vintage vinyl violet vivid
    vocals volume w walk wall want warm was water waves way we wedding weekend weights well went
    were wet what when where which while white who whole why wide wild will wind window winter
    with without wood wooden work world worn would x y yeah year years yellow yes yet yoga you
    young your yours yourself z
    """
_ONE_TOKEN_WORDS = frozenset(_ONE_TOKEN_TEXT.split())
# ... and the few words of our own text that CLIP splits, with their exact counts.
_KNOWN_COSTS = {
    "deformed": 2,
    "diagonal": 2,
    "distorted": 2,
    "duplicate": 2,
    "gradients": 3,
    "grainy": 2,
    "jpeg": 2,
    "lowres": 2,
    "misspelled": 2,
    "moonlit": 2,
    "seventies": 2,
    "silhouettes": 2,
    "synthwave": 2,
    "watermark": 2,
    "xerox": 3,
    **{c: 1 for c in ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")},
}


def _letters_cost(run: str) -> int:
    """Upper estimate of CLIP BPE tokens for an ASCII letter run that is not a known word.

    BPE can only merge pairs it learned, so unusual letter sequences stay split: "qxzvbn" is 5
    tokens, "ksenia" 3. Measured against the real vocabulary (the open_clip wheel ships it) on
    about 26,000 words from English prose, names and code identifiers, plus 6,000 random
    strings: ``ceil(n/3)`` undercounts 7% of them, while half the length plus one, plus one per
    consonant beyond the second in a run, plus one per "q" without "u", undercounted none. It
    overcounts an ordinary word by about three tokens, which is what the table above is for.
    """
    n = len(run)
    if n <= 1:
        return n
    extra = sum(max(0, len(r) - 2) for r in _CONSONANT_RUN.findall(run))
    return math.ceil(n / 2) + 1 + extra + len(_Q_WITHOUT_U.findall(run))


def _piece_cost(piece: str) -> int:
    if piece in _ONE_TOKEN_WORDS or (len(piece) == 1 and piece.isascii()):
        return 1
    if piece in _KNOWN_COSTS:
        return _KNOWN_COSTS[piece]
    if piece.isascii():
        if piece.isalpha():
            return _letters_cost(piece)
        return len(piece)  # punctuation run: at most one token per ASCII byte
    # Non-ASCII: BPE works on UTF-8 bytes and a token holds at least one byte, so the byte count
    # is a hard upper bound; ASCII stretches inside the piece use the letter estimate.
    cost = 0
    for ascii_run, other in _ASCII_RUNS.findall(piece):
        cost += _letters_cost(ascii_run) if ascii_run else len(other.encode("utf-8"))
    return cost


def estimate_clip_tokens(text: str) -> int:
    """A conservative count of CLIP tokens in ``text``, start and end tokens *not* included.

    Follows CLIP's own preparation (NFC, lower case, its pre-tokenizer split) and never counts
    fewer than one token per piece, so it is at least the number of words, digits and
    punctuation runs. A word from a table of common words costs exactly 1; any other word costs
    the upper estimate of :func:`_letters_cost`. Never below the real count on everything
    measured; pathological strings (random consonants) can still exceed it in principle, and
    then the pipeline's own 77-token truncation is the backstop.
    """
    text = unicodedata.normalize("NFC", text).lower()
    return sum(_piece_cost(piece) for piece in _PRETOKEN.findall(text))


def fit_tokens(text: str, max_tokens: int = CLIP_MAX_TOKENS) -> str:
    """Cut trailing words of ``text`` until ``estimate_clip_tokens(text) + 2 <= max_tokens``.

    Words are never split, except a single first word that alone is over the budget (it is cut
    to what fits, so a non-empty text never comes back empty while the budget holds one
    character: at most 4 tokens, one per UTF-8 byte). Connectives ("and", "of the") and commas
    left dangling by the cut are removed too.
    """
    budget = max_tokens - 2  # CLIP's start and end tokens
    if budget < 1:
        raise ValueError(f"max_tokens must be at least 3, got {max_tokens}")
    words = text.split()
    # The pre-tokenizer never joins across whitespace, so the estimate adds up word by word.
    total, keep = 0, 0
    for word in words:
        total += estimate_clip_tokens(word)
        if total > budget:
            break
        keep += 1
    if keep == len(words):
        return " ".join(words)
    if keep == 0:
        word = words[0]
        while word and estimate_clip_tokens(word) > budget:
            word = word[:-1]
        return word
    kept = words[:keep]
    while len(kept) > 1 and kept[-1].lower().strip(_EDGE_JUNK) in _DANGLING:
        kept.pop()
    return " ".join(kept).rstrip(_EDGE_JUNK)


# --- theme matching -------------------------------------------------------------------------------


def _normalise(text: str) -> str:
    """Lower case words separated by single spaces, "&" spelled out: "R&B" → "r and b"."""
    text = clean_text(text).lower().replace("&", " and ")
    return " " + " ".join(re.findall(r"[^\W_]+", text)) + " "


def find_themes(texts: Iterable[str], *, genres_only: bool = False) -> list[Theme]:
    """Themes named in ``texts``, in order: earlier texts first, then by position in the text.

    Longer keywords claim their words first, so "k-pop" is K-pop and not also pop, and
    "late night" is night only once.
    """
    found: list[Theme] = []
    for text in texts:
        padded = _normalise(text)
        first_at: dict[str, int] = {}
        for keyword, theme in _KEYWORDS_LONGEST_FIRST:
            if genres_only and not theme.genre:
                continue
            needle = f" {keyword} "
            while (at := padded.find(needle)) >= 0:
                first_at[theme.name] = min(at, first_at.get(theme.name, at))
                padded = padded[: at + 1] + "_" * len(keyword) + padded[at + 1 + len(keyword) :]
        by_name = {theme.name: theme for theme in THEMES}
        for name in sorted(first_at, key=first_at.__getitem__):
            if by_name[name] not in found:
                found.append(by_name[name])
    return found


# --- prompt writing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Material:
    """What a playlist offers to the styles, computed once per request."""

    title: str
    description: str
    genre: str | None  # the genre label: Spotify's top genre, else a genre theme's name
    genre_themes: tuple[Theme, ...]
    mood_themes: tuple[Theme, ...]  # moods first, then genres: all carry visual cues
    artist: str | None


def _material(facts: PlaylistFacts) -> _Material:
    title = clean_title(facts.name)
    description = condense_description(facts.description)
    genres = [g for g in (clean_text(g) for g in facts.top_genres) if g]
    # Themes come from the condensed description: "Updated every Friday" is no party.
    genre_themes = find_themes(genres[:3], genres_only=True) or find_themes(
        [title, description], genres_only=True
    )
    genre = genres[0] if genres else (genre_themes[0].name if genre_themes else None)
    genre = fit_tokens(genre, _LABEL_TOKENS + 2) if genre else None
    themes = find_themes([title, description, *genres[:3]])
    moods = [t for t in themes if not t.genre] + [t for t in themes if t.genre]
    # A cut name would name someone else: the first top artist whose whole name is short enough.
    names = (clean_text(a) for a in facts.top_artists)
    artists = [a for a in names if a and estimate_clip_tokens(a) <= _LABEL_TOKENS]
    return _Material(
        title=title,
        description=description,
        genre=genre,
        genre_themes=tuple(genre_themes),
        mood_themes=tuple(moods),
        artist=artists[0] if artists else None,
    )


def _has_material(style: str, m: _Material) -> bool:
    return {
        "seed": True,
        "description": bool(m.description),
        "genre": m.genre is not None,
        "artist": m.artist is not None,
        "mood": any(not t.genre for t in m.mood_themes),
    }[style]


def _effective_style(style: str, m: _Material) -> str:
    """The style a single-style request really gets when its material is missing."""
    if _has_material(style, m):
        return style
    if style == "artist" and m.genre is not None:
        return "genre"
    return "mood"  # mood always writes something: matched themes or generic cues


def _mix_styles(count: int, m: _Material) -> list[str]:
    """Candidate i takes the first style of ``_MIX_ORDER[i]`` that has material, else mood.

    The orders are chosen so that a style repeats only when the playlist has too little
    material for four different ones (then the per-candidate seed still varies the cues).
    """
    return [
        next((s for s in preferences if _has_material(s, m)), "mood")
        for preferences in _MIX_ORDER[:count]
    ]


def _cues(themes: Sequence[Theme], rng: random.Random, limit: int = 2) -> list[str]:
    if not themes:
        return [rng.choice(GENERIC_VISUALS)]
    return [rng.choice(theme.visuals) for theme in themes[:limit]]


def _compose(
    title: str,
    max_tokens: int,
    *,
    suffix: str = "",
    required: Sequence[str] = (),
    optional: Sequence[str] = (),
    tail: str = "",
    spare: int = 0,
) -> str:
    """``title suffix, required..., optional..., tail`` within ``max_tokens``.

    Priorities: the suffix and required clauses always fit (the title gives way, whole words
    only, and also leaves ``spare`` tokens); optional clauses follow while they fit whole; the
    tail (a description) takes what is left, cut word by word.
    """
    fixed = (f" {suffix}" if suffix else "") + "".join(f", {clause}" for clause in required)
    # Estimates add up across whitespace, so title + fixed fits when each fits its share.
    reserve = max(spare, estimate_clip_tokens(fixed))
    text = fit_tokens(title, max(3, max_tokens - reserve)) + fixed
    for clause in optional:
        longer = f"{text}, {clause}"
        if estimate_clip_tokens(longer) + 2 > max_tokens:
            break
        text = longer
    if tail:
        text = fit_tokens(f"{text}, {tail}", max_tokens)
    return text


def _write(style: str, m: _Material, seed: int, max_tokens: int) -> Prompt:
    rng = random.Random(seed)
    if style == "seed":
        # The paper's prompt, verbatim; only a title too long for the window loses words.
        text = _compose(m.title, max_tokens, suffix=_SEED_SUFFIX)
        return Prompt(text, DEFAULT_NEGATIVE, style, seed)
    # Other styles leave a third of the window for their own words even after a long title.
    spare = max_tokens // 3
    frame = rng.choice(_FRAMES)
    negative = DEFAULT_NEGATIVE
    if style == "description":
        text = _compose(m.title, max_tokens, suffix=frame, tail=m.description, spare=spare)
    elif style == "genre":
        assert m.genre is not None
        cues = _cues(m.genre_themes, rng, limit=1)
        text = _compose(
            m.title, max_tokens, required=[f"{m.genre} {frame}"], optional=cues, spare=spare
        )
    elif style == "artist":
        assert m.artist is not None
        reference = f"cover art for a playlist of music like {m.artist}"
        cues = _cues(m.genre_themes or m.mood_themes, rng, limit=1)
        text = _compose(m.title, max_tokens, required=[reference], optional=cues, spare=spare)
        negative = f"{DEFAULT_NEGATIVE}, {FACE_NEGATIVE}"
    else:  # mood
        cues = _cues(m.mood_themes, rng, limit=2)
        text = _compose(m.title, max_tokens, suffix=frame, optional=cues, spare=spare)
    return Prompt(text=text, negative=negative, style=style, seed=seed)


def check_inputs(count: int, style: str, max_tokens: int) -> None:
    if style not in STYLES:
        raise InvalidOption(f"`style` must be one of {', '.join(STYLES)}, got {style!r}")
    if not 1 <= count <= MAX_COUNT:
        raise InvalidOption(f"`count` must be between 1 and {MAX_COUNT}, got {count}")
    if max_tokens < MIN_TOKENS:
        raise ValueError(f"max_tokens must be at least {MIN_TOKENS}, got {max_tokens}")


# (prompt, seed, max_tokens) → the expanded prompt; models.expand.default_expander is the real one
Expander = Callable[[str, int, int], str]


def build_prompts(
    facts: PlaylistFacts,
    *,
    count: int = MAX_COUNT,
    style: str = "seed",
    seed: int,
    max_tokens: int = CLIP_MAX_TOKENS,
    expander: Expander | None = None,
) -> list[Prompt]:
    """One prompt per candidate; candidate ``i`` (from 0) gets seed ``seed + i``.

    Raises :class:`~bot.app.errors.InvalidOption` (a ``ValueError``) naming ``style`` or ``count``
    when they are out of range. ``expand`` (and ``auto`` where the model is cached) runs a
    language model: call it off the event loop. ``expander`` replaces the default model.
    """
    check_inputs(count, style, max_tokens)
    # 1. What the playlist offers: cleaned title and description, genres, themes, an artist.
    m = _material(facts)
    if style == "auto":
        style = "expand" if expander is not None or _expansion_available() else "mix"
    if style == "expand":
        # The paper's short prompt is what seed 003 expands; the sampled continuation, not the
        # cues, makes the candidates differ.
        expand = expander or _default_expander()
        bases = [_write("seed", m, seed + i, max_tokens) for i in range(count)]
        return [
            Prompt(expand(b.text, b.seed, max_tokens), DEFAULT_NEGATIVE, "expand", b.seed)
            for b in bases
        ]
    # 2. One style per candidate: the same for all, or the mix order with fallbacks.
    styles = _mix_styles(count, m) if style == "mix" else [_effective_style(style, m)] * count
    # 3. Write each; the per-candidate seed also picks among synonymous cues, so candidates of
    #    one style differ a little while staying reproducible.
    return [_write(s, m, seed + i, max_tokens) for i, s in enumerate(styles)]


def _expansion_available() -> bool:
    from models.expand import expansion_available  # lazy: torch only when a model is there

    return expansion_available()


def _default_expander() -> Expander:
    from models.expand import default_expander, load_expander

    load_expander()  # fails here, naming the model and how to fetch it, if it is not cached
    return default_expander
