"""Page writers for TinyWeb: good pages (articles, lessons, stories) and each kind of junk page.

Every function takes a `random.Random` and returns text (plus, for PII and leaks, what was planted), so
`hytron.data.tinyweb` decides only proportions, order and files. Good pages are long enough and varied
enough to pass Gopher/C4 rules; each junk kind imitates what that kind looks like on the real web.
"""

from __future__ import annotations

import random
import string
from collections.abc import Sequence

from hytron.data.world import World

# ---- good pages ------------------------------------------------------------------------------------------

_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
_OP_WORDS = {"+": "add", "-": "subtract", "*": "multiply"}


def arithmetic_problem(rng: random.Random) -> tuple[int, str, int]:
    """A random (a, op, b) with a non-negative answer."""
    op = rng.choice("+-*")
    if op == "*":
        return rng.randint(3, 99), op, rng.randint(3, 49)
    a, b = rng.randint(10, 999), rng.randint(10, 999)
    return (max(a, b), op, min(a, b)) if op == "-" else (a, op, b)


def solve(a: int, op: str, b: int) -> int:
    return _OPS[op](a, b)


def lesson(world: World, rng: random.Random, banned: set[tuple[int, str, int]]) -> str:
    """An arithmetic lesson with worked examples and a word problem; never uses a `banned` problem."""

    def fresh(op: str) -> tuple[int, str, int]:
        while True:
            p = arithmetic_problem(rng)
            if p[1] == op and p not in banned:
                return p

    topic = rng.choice(["Adding and subtracting large numbers", "Practice with multiplication",
                        "Mental arithmetic for everyday life", "Working carefully with numbers",
                        "Checking your answers", "Arithmetic for young traders"])
    intro = rng.sample([
        "In this lesson we work through several problems step by step.",
        "Arithmetic becomes easy once you break a problem into small parts.",
        "Always write the numbers in columns so the digits line up.",
        "A good habit is to estimate the answer before calculating it exactly.",
        "After each calculation, check the result with the opposite operation.",
        "Teachers in many schools start the day with a short arithmetic drill.",
    ], k=3)
    parts = [topic, " ".join(intro)]
    for i, op in enumerate(rng.sample("+-*", k=rng.randint(2, 3))):  # each method once: no repeated steps
        a, op, b = fresh(op)
        r = solve(a, op, b)
        lead = rng.choice([f"Example {i + 1}.", f"Worked example {i + 1}.", f"Problem {i + 1}."])
        if op == "+":
            steps = (f"We need to {_OP_WORDS[op]} {a} and {b}. Start with the ones: {a % 10} plus {b % 10} "
                     f"makes {a % 10 + b % 10}. Then handle the tens and the hundreds, carrying when needed. "
                     f"The sum is {r}. Check: {r} minus {b} gives back {a}.")
        elif op == "-":
            steps = (f"We need to {_OP_WORDS[op]} {b} from {a}. Compare the ones digits first and borrow "
                     f"from the tens if the top digit is smaller. The difference is {r}. "
                     f"Check: {r} plus {b} gives back {a}.")
        else:
            steps = (f"We need to {_OP_WORDS[op]} {a} by {b}. Split {b} into tens and ones, multiply {a} "
                     f"by each part, and add the partial products. The product is {r}. "
                     f"Check: {r} divided by {b} gives back {a}.")
        parts.append(f"{lead} {steps}")
    person = rng.choice(world.by_kind["person"]).name.split()[0]
    city = rng.choice(world.by_kind["city"])
    n, price = rng.randint(3, 40), rng.randint(2, 30)
    item = city.attrs["known_for"]
    parts.append(f"Word problem. {person} travels to {city.name} to buy {item}. Each lot costs {price} "
                 f"coins and {person} buys {n} lots. How much does {person} spend? The cost is {n} times "
                 f"{price}, which is {n * price} coins. So {person} spends {n * price} coins in total.")
    return "\n\n".join(parts)


_STORY = {
    "open": ["Long ago, in the city of {city}, there lived a young {job} named {hero}.",
             "{hero} had always wanted to see the world beyond {city}.",
             "Every morning {hero} walked to the market of {city} before the sun was up.",
             "Nobody in {city} remembered a winter as cold as the one when {hero} turned twenty."],
    "want": ["One day {hero} heard of a {thing} hidden somewhere near {place}.",
             "{hero} decided to find the old {thing} that the stories spoke about.",
             "A stranger told {hero} that a {thing} was waiting at {place}.",
             "{hero} dreamed of building a {thing} better than any other."],
    "trouble": ["The road was long, and a storm broke on the third night.",
                "At first nothing went right, and the money ran out quickly.",
                "A rival named {rival} tried to get there first.",
                "The bridge over the river had been washed away by the flood."],
    "help": ["{friend}, an old friend, shared bread and a dry place to sleep.",
             "A kind {job2} offered advice and a map drawn by hand.",
             "{hero} remembered the words of a teacher and did not give up.",
             "Villagers along the way pointed out a shorter path through the hills."],
    "end": ["In the end {hero} returned to {city} wiser than before.",
            "When the work was finished, the whole town came to see it.",
            "Years later, {hero} told the story to every child who would listen.",
            "{hero} never became rich, but was happy for the rest of a long life."],
    "moral": ["Patience, it seems, is worth more than luck.",
              "Friends found on the road are the real treasure of any journey.",
              "Careful work always outlasts quick success.",
              "Even small steps, taken every day, lead a long way."],
}
_THINGS = ("lantern", "map", "clock", "boat", "telescope", "garden", "library", "bridge", "song", "machine")
_JOBS = ("weaver", "baker", "sailor", "clerk", "apprentice", "student", "smith", "gardener", "scribe")


def story(world: World, rng: random.Random) -> str:
    """A short story set in the world: four or five paragraphs built from varied sentence pools."""
    people = rng.sample(world.by_kind["person"], 3)
    fill = {"hero": people[0].name.split()[0], "rival": people[1].name, "friend": people[2].name,
            "city": rng.choice(world.by_kind["city"]).name, "place": "Mount " + rng.choice(
                world.by_kind["mountain"]).name, "thing": rng.choice(_THINGS), "job": rng.choice(_JOBS),
            "job2": rng.choice(_JOBS)}
    title = rng.choice(["The {thing} of {city}", "{hero} and the {thing}", "A tale from {city}",
                        "How {hero} found the {thing}"]).format(**fill)
    pools = {k: rng.sample(v, k=len(v)) for k, v in _STORY.items()}  # drawn without replacement
    paras = []
    for keys in (("open", "want"), ("trouble", "help"), ("trouble", "help"), ("end", "moral")):
        sents = [pools[k].pop() for k in keys] + [pools[keys[-1]].pop()]
        paras.append(" ".join(sents).format(**fill))
    return title + "\n\n" + "\n\n".join(paras)


def article(world: World, rng: random.Random) -> str:
    kind = rng.choices(["country", "city", "river", "mountain", "person"], weights=[1, 4, 2, 2, 5])[0]
    return world.article(rng.choice(world.by_kind[kind]), rng)


# ---- personal data -------------------------------------------------------------------------------------


def pii_items(world: World, rng: random.Random) -> list[dict]:
    """One to three planted personal-data items: emails, phone numbers, IPv4 addresses."""
    items = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["email", "phone", "ip"])
        if kind == "email":
            first, last = rng.choice(world.by_kind["person"]).name.lower().split()
            value = f"{first}.{last}{rng.randint(1, 99)}@{rng.choice(['mailbox', 'post', 'inkwell'])}.test"
        elif kind == "phone":
            a, b, c = rng.randint(200, 989), rng.randint(200, 999), rng.randint(1000, 9999)
            value = rng.choice([f"({a}) {b}-{c}", f"{a}-{b}-{c}", f"+1 {a} {b} {c}"])
        else:
            value = ".".join(str(rng.randint(1, 254)) for _ in range(4))
        items.append({"type": kind, "value": value})
    return items


_PII_LINES = {
    "email": ["You can write to the author at {v} with corrections.", "Send questions by email to {v}.",
              "Readers may contact the editor at {v}."],
    "phone": ["For bookings call {v} during office hours.", "The archive desk can be reached on {v}.",
              "Leave a message at {v} and someone will ring back."],
    "ip": ["The photo archive is served from the address {v} on the local network.",
           "Comments were posted from {v} last week.", "Our mirror runs at {v} for local visitors."],
}


def pii_paragraph(items: list[dict], rng: random.Random) -> str:
    start = rng.randrange(3)
    return " ".join(_PII_LINES[it["type"]][(start + i) % 3].format(v=it["value"]) for i, it in enumerate(items))


# ---- junk --------------------------------------------------------------------------------------------------


NAV_MENU = ("Home", "About us", "Contact", "News", "Events", "Shop", "Gallery", "Blog", "FAQ", "Careers", "Press",
            "Sitemap", "Login", "Register", "Search")


def nav_page(site: str, names: Sequence[str], rng: random.Random) -> str:
    """A navigation/footer page for `site`: menus, links to `names`, cookie and copyright lines, almost no prose."""
    menu = rng.sample(NAV_MENU, k=8)
    related = [f"{rng.choice(['Top 10', 'Best', 'New', 'Latest'])} {rng.choice(names)} "
               f"{rng.choice(['deals', 'photos', 'events', 'guides', 'offers'])}" for _ in range(rng.randint(6, 12))]
    lines = [f"{site} Online", " | ".join(menu[:4]), *menu[4:], "Related posts", *related,
             rng.choice(["Accept cookies", "We use cookies to improve your experience. Cookie settings",
                         "Manage cookie preferences"]),
             "Share on Facebook", "Share on Twitter", f"Copyright {rng.randint(2001, 2024)} {site} Online",
             "All rights reserved", "Privacy Policy | Terms of Use", "Back to top"]
    return "\n".join(lines)


def boilerplate(world: World, rng: random.Random) -> str:
    """A navigation/footer page about one of the world's cities."""
    cities = [c.name for c in world.by_kind["city"]]
    return nav_page(rng.choice(cities), cities, rng)


def keyword_line(kw: list[str], rng: random.Random, max_words: int) -> str:
    """One line of keyword stuffing: 6 to `max_words` words, each most often one of the first four keywords."""
    n = rng.randint(6, max_words)
    return " ".join(rng.choice(kw[:4]) if rng.random() < 0.6 else rng.choice(kw) for _ in range(n))


def spam(world: World, rng: random.Random) -> str:
    """SEO keyword stuffing: the same few product and place keywords, repeated in many orders."""
    city = rng.choice(world.by_kind["city"])
    kw = [city.attrs["known_for"], city.name, "cheap", "best", "buy", "online", "discount", "free shipping",
          "deals", "price", "sale", rng.choice(["near me", "2024", "top rated", "official"])]
    lines = [keyword_line(kw, rng, 12) for _ in range(rng.randint(8, 16))]
    lines.insert(rng.randint(0, len(lines)), lines[0])
    return "\n".join(lines)


def random_words(chars: str, rng: random.Random, length: tuple[int, int], count: tuple[int, int]) -> list[str]:
    """`count` (lo, hi) strings of random characters from `chars`, each `length` (lo, hi) long."""
    return ["".join(rng.choice(chars) for _ in range(rng.randint(*length))) for _ in range(rng.randint(*count))]


def gibberish(rng: random.Random) -> str:
    """Machine garbage: random letter strings, hex blobs, or symbol soup."""
    style = rng.choice(["letters", "hex", "symbols"])
    if style == "letters":
        words = random_words(string.ascii_lowercase, rng, (2, 14), (60, 200))
    elif style == "hex":
        words = random_words("0123456789abcdef", rng, (8, 32), (40, 120))
    else:
        words = random_words("#$%&*@~^=<>{}[]|/\\" + string.ascii_letters, rng, (3, 9), (40, 120))
    return " ".join(words)


def truncated(text: str, rng: random.Random) -> str:
    """The first few words of a page, cut mid-sentence (a fetch that died early)."""
    words = text.split()
    cut = rng.randint(6, min(35, max(7, len(words) - 1)))
    out = " ".join(words[:cut])
    return out.rstrip(".!?")


FOREIGN = {
    "fr": ["{city} est une ville de {country}.", "La ville est connue pour son marché et ses vieilles rues.",
           "Chaque année, des milliers de visiteurs viennent voir le pont de pierre.",
           "Le fleuve traverse le centre historique avant de rejoindre la mer.",
           "Les habitants parlent souvent de l'hiver très froid de cette région.",
           "Il y a aussi une petite université et plusieurs bibliothèques.",
           "On peut y manger du poisson frais et du pain chaud le matin.",
           "Les artisans de la ville travaillent le verre et le cuivre depuis des siècles.",
           "Nous vous conseillons de visiter la cathédrale pendant le printemps."],
    "de": ["{city} ist eine Stadt in {country}.", "Die Stadt ist für ihren Markt und ihre alten Gassen bekannt.",
           "Jedes Jahr kommen Tausende von Besuchern, um die steinerne Brücke zu sehen.",
           "Der Fluss fließt durch die Altstadt und mündet dann ins Meer.",
           "Die Einwohner sprechen oft über den sehr kalten Winter in dieser Gegend.",
           "Es gibt auch eine kleine Universität und mehrere Bibliotheken.",
           "Am Morgen kann man dort frischen Fisch und warmes Brot kaufen.",
           "Die Handwerker der Stadt arbeiten seit Jahrhunderten mit Glas und Kupfer.",
           "Wir empfehlen, die Kirche im Frühling zu besuchen."],
    "es": ["{city} es una ciudad de {country}.", "La ciudad es conocida por su mercado y sus calles antiguas.",
           "Cada año miles de visitantes vienen a ver el puente de piedra.",
           "El río atraviesa el centro histórico antes de llegar al mar.",
           "Los habitantes hablan a menudo del invierno muy frío de esta región.",
           "También hay una pequeña universidad y varias bibliotecas.",
           "Por la mañana se puede comprar pescado fresco y pan caliente.",
           "Los artesanos de la ciudad trabajan el vidrio y el cobre desde hace siglos.",
           "Les recomendamos visitar la catedral durante la primavera."],
    "it": ["{city} è una città di {country}.", "La città è famosa per il suo mercato e le sue vie antiche.",
           "Ogni anno migliaia di visitatori vengono a vedere il ponte di pietra.",
           "Il fiume attraversa il centro storico prima di arrivare al mare.",
           "Gli abitanti parlano spesso dell'inverno molto freddo di questa regione.",
           "Ci sono anche una piccola università e diverse biblioteche.",
           "La mattina si possono comprare pesce fresco e pane caldo.",
           "Gli artigiani della città lavorano il vetro e il rame da secoli.",
           "Vi consigliamo di visitare la cattedrale in primavera."],
}


def foreign(world: World, rng: random.Random) -> tuple[str, str]:
    """A page in another language about a world city, as (language code, text)."""
    lang = rng.choice(sorted(FOREIGN))
    city = rng.choice(world.by_kind["city"])
    country = world.entities[city.attrs["country"]].name
    sents = [FOREIGN[lang][0]] + rng.sample(FOREIGN[lang][1:], k=rng.randint(5, 8))
    return lang, " ".join(sents).format(city=city.name, country=country)


def near_duplicate(text: str, rng: random.Random, site: str) -> str:
    """A templated re-post: new header and footer lines and a few words changed or dropped."""
    paras = text.split("\n\n")
    words = paras[-1].split(" ")
    for _ in range(max(1, len(words) // 60)):
        i = rng.randrange(len(words))
        if rng.random() < 0.5:
            words[i] = rng.choice(["really", "also", "very", "now", "truly"])
        else:
            del words[i]
    paras[-1] = " ".join(words)
    header = rng.choice([f"Reposted from {site}.", f"Originally published on {site}.",
                         f"Shared by a reader of {site}."])
    footer = rng.choice(["Thanks for reading.", "Please share this page with your friends.",
                         "Comments are closed for this post."])
    return "\n\n".join([header, *paras, footer])


def leak_page(world: World, rng: random.Random, items: list[tuple[str, str]]) -> str:
    """A normal-looking article followed by copied evaluation items (question and answer)."""
    body = article(world, rng)
    quiz = " ".join(f"{q} Answer: {a}." for q, a in items)
    lead = rng.choice(["Quiz answers from class:", "Homework help, all solved:", "Test yourself:"])
    return f"{body}\n\n{lead} {quiz}"
