"""The mood and genre lexicon: words that reveal a theme, and the visual cues it stands for.

A small hand-made table (the cues the paper describes for moods: palette, light, motifs;
docs/miniature.md) and :func:`find_themes`, which finds the themes a playlist's text names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from bot.app.prompts.text import clean_text


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
