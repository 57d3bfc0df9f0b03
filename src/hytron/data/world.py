"""A procedurally generated world (entities, attributes, relations) that TinyWeb text and QA are written from.

The same seed always gives the same world, so other stages can generate more world-consistent text or
questions without reading the corpus::

    from hytron.data.world import World
    world = World.generate(seed=0)
    fact = world.facts[0]                       # Fact(subject="country-0003", relation="capital", value=...)
    world.question(fact)                        # ("What is the capital of Veloria?", "Marnoss")
    world.article(world.entities["city-0010"], random.Random(1))   # an encyclopedic paragraph

Entity kinds: country, city, river, mountain, person. Every fact is stated the same way wherever it
appears (that is what makes world-fact QA answerable from the corpus).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

_SYLLABLES = [
    "ka", "ve", "lo", "ri", "an", "mar", "dor", "el", "sun", "tha", "bre", "os", "kin", "va", "lu", "ne",
    "zor", "ia", "qua", "te", "mi", "sa", "ro", "ul", "fen", "gal", "hed", "ist", "jor", "lem", "nok", "pra",
    "sel", "tov", "ury", "wen", "yar", "zil", "cor", "dun", "esk", "fal", "gor", "hav", "ith", "kel", "mor", "nar",
    "ost", "pel", "rin", "sor", "tal", "ven", "bar", "cal", "dem", "fir", "gan", "hol", "iv", "jas", "kor", "lin",
    "mab", "nes", "orv", "pim", "ras", "sil", "tor", "ush", "vil", "wyn",
]
CONTINENTS = ("the Northern Reach", "the Amber Coast", "the Sundered Isles", "the Great Steppe", "the Low Marches")
SEAS = ("the Pale Sea", "the Gulf of Orm", "the Iron Sound", "the Western Ocean", "the Bay of Lanth")
PRODUCTS = ("glassware", "silk", "clocks", "paper", "copper bells", "woollen cloth", "maps", "telescopes",
            "olive oil", "rope", "lanterns", "salt", "pottery", "violins", "printed books", "dyes")
PROFESSIONS = ("astronomer", "engineer", "poet", "physician", "cartographer", "botanist", "architect",
               "mathematician", "composer", "chemist", "historian", "explorer")
ACHIEVEMENTS = ("lamp", "compass", "loom", "water clock", "printing press", "lens", "bridge design",
                "star chart", "vaccine", "calendar", "pump", "harp", "theorem", "atlas", "dye process")


@dataclass(frozen=True)
class Entity:
    """One thing in the world; `attrs` values are numbers, words, or other entities' ids."""

    id: str
    kind: str
    name: str
    attrs: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Fact:
    """A (subject, relation, value) triple; `value` is a number or an entity id or a plain word."""

    subject: str
    relation: str
    value: object


# relation -> question template; `{s}` is the subject's name
_QUESTIONS = {
    "capital": "What is the capital of {s}?",
    "continent": "On which continent does {s} lie?",
    "currency": "What is the currency of {s} called?",
    "country": "In which country is the city of {s}?",
    "river": "Which river flows through {s}?",
    "known_for": "What is the city of {s} known for making?",
    "founded": "In which year was {s} founded?",
    "mouth": "Into which sea does the {s} river flow?",
    "length_km": "How long is the {s} river in kilometres?",
    "height_m": "How high is Mount {s} in metres?",
    "range_country": "In which country does Mount {s} stand?",
    "born_in": "In which city was {s} born?",
    "birth_year": "In which year was {s} born?",
    "profession": "What was the profession of {s}?",
    "invention": "What is {s} best remembered for?",
    "teacher": "Who taught {s}?",
}


class World:
    """Entities and facts from one seed; `article`, `sentences` and `question` render them as text."""

    def __init__(self, seed: int, entities: dict[str, Entity]):
        self.seed = seed
        self.entities = entities
        self.facts = [Fact(e.id, rel, v) for e in entities.values() for rel, v in e.attrs.items()
                      if rel in _QUESTIONS]
        self.by_kind: dict[str, list[Entity]] = {}
        for e in entities.values():
            self.by_kind.setdefault(e.kind, []).append(e)

    # ---- generation --------------------------------------------------------------------------------
    @classmethod
    def generate(cls, seed: int = 0, n_countries: int = 40, cities_per_country: int = 10, n_rivers: int = 150,
                 n_mountains: int = 150, n_people: int = 700) -> World:
        rng = random.Random(f"world-{seed}")
        used: set[str] = set()

        def name(min_syl: int = 2, max_syl: int = 3) -> str:
            while True:
                n = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(min_syl, max_syl))).capitalize()
                if n not in used and 4 <= len(n) <= 12:
                    used.add(n)
                    return n

        ents: dict[str, Entity] = {}

        def add(kind: str, i: int, nm: str, attrs: dict) -> Entity:
            e = Entity(f"{kind}-{i:04d}", kind, nm, attrs)
            ents[e.id] = e
            return e

        countries = [add("country", i, name() + rng.choice(["ia", "and", "or", "en"]),
                         {"continent": rng.choice(CONTINENTS), "founded": rng.randint(800, 1700),
                          "population_m": rng.randint(2, 90)}) for i in range(n_countries)]
        for c in countries:
            c.attrs["currency"] = name(1, 2).lower() + rng.choice(["a", "o", "en"])
            c.attrs["language"] = c.name.rstrip("aeiou") + "ish"
        cities = []
        for c in countries:
            for _ in range(cities_per_country):
                city = add("city", len(cities), name(), {"country": c.id, "founded": rng.randint(600, 1800),
                                                          "population_k": rng.randint(5, 2000),
                                                          "known_for": rng.choice(PRODUCTS)})
                cities.append(city)
            c.attrs["capital"] = rng.choice([x for x in cities if x.attrs["country"] == c.id]).id
        mountains = [add("mountain", i, name(), {"height_m": rng.randint(900, 8400),
                                                  "range_country": rng.choice(countries).id})
                     for i in range(n_mountains)]
        rivers = []
        for i in range(n_rivers):
            r = add("river", i, name(1, 2), {"length_km": rng.randint(40, 3900), "mouth": rng.choice(SEAS),
                                              "source": rng.choice(mountains).id})
            rivers.append(r)
        for city in cities:
            city.attrs["river"] = rng.choice(rivers).id
        people = []
        for i in range(n_people):
            first, last = name(1, 2), name(2, 2)
            p = add("person", i, f"{first} {last}", {"born_in": rng.choice(cities).id,
                                                     "birth_year": rng.randint(1400, 1950),
                                                     "profession": rng.choice(PROFESSIONS)})
            p.attrs["invention"] = f"the {last} {rng.choice(ACHIEVEMENTS)}"
            if people and rng.random() < 0.7:
                p.attrs["teacher"] = rng.choice(people).id
            people.append(p)
        return cls(seed, ents)

    # ---- rendering ---------------------------------------------------------------------------------
    def name(self, value: object) -> str:
        """The display form of a fact value: an entity's name, or the value itself."""
        if isinstance(value, str) and value in self.entities:
            return self.entities[value].name
        return str(value)

    def question(self, fact: Fact) -> tuple[str, str]:
        """A question whose answer is the fact's value, as (question, answer)."""
        return _QUESTIONS[fact.relation].format(s=self.entities[fact.subject].name), self.name(fact.value)

    def sentences(self, e: Entity, rng: random.Random) -> list[str]:
        """One sentence per fact about `e`, each in one of several phrasings (never question form)."""
        a, n = e.attrs, self.name
        out: list[str] = []
        if e.kind == "country":
            out += [rng.choice([f"{e.name} is a country in {a['continent']}.",
                                f"The country of {e.name} lies in {a['continent']}.",
                                f"{e.name} is one of the nations of {a['continent']}."]),
                    rng.choice([f"Its capital is {n(a['capital'])}.",
                                f"The capital city of {e.name} is {n(a['capital'])}.",
                                f"{n(a['capital'])} has been the capital of {e.name} for centuries."]),
                    rng.choice([f"The currency of {e.name} is the {a['currency']}.",
                                f"People in {e.name} pay with the {a['currency']}."]),
                    rng.choice([f"Most people there speak {a['language']}.",
                                f"The main language of {e.name} is {a['language']}."]),
                    rng.choice([f"{e.name} was founded in {a['founded']}.",
                                f"The state of {e.name} dates from the year {a['founded']}."]),
                    rng.choice([f"About {a['population_m']} million people live in {e.name}.",
                                f"It has a population of roughly {a['population_m']} million."])]
        elif e.kind == "city":
            c = self.entities[a["country"]]
            out += [rng.choice([f"{e.name} is a city in {c.name}.", f"The city of {e.name} lies in {c.name}.",
                                f"{e.name} is one of the larger towns of {c.name}."]),
                    rng.choice([f"The {n(a['river'])} river flows through {e.name}.",
                                f"{e.name} was built on the banks of the {n(a['river'])} river."]),
                    rng.choice([f"{e.name} is known for its {a['known_for']}.",
                                f"Workshops in {e.name} are famous for {a['known_for']}."]),
                    rng.choice([f"The city was founded in {a['founded']}.",
                                f"{e.name} was founded in the year {a['founded']}."]),
                    rng.choice([f"Around {a['population_k']} thousand people live there.",
                                f"Its population is about {a['population_k']} thousand."])]
            if c.attrs["capital"] == e.id:
                out.append(rng.choice([f"{e.name} is the capital of {c.name}.",
                                       f"It serves as the capital of {c.name}."]))
        elif e.kind == "river":
            out += [rng.choice([f"The {e.name} is a river about {a['length_km']} kilometres long.",
                                f"The {e.name} river runs for {a['length_km']} kilometres."]),
                    rng.choice([f"It rises on Mount {n(a['source'])}.",
                                f"Its source is high on the slopes of Mount {n(a['source'])}."]),
                    rng.choice([f"The {e.name} flows into {a['mouth']}.", f"It empties into {a['mouth']}."])]
            towns = [x.name for x in self.by_kind["city"] if x.attrs["river"] == e.id][:4]
            if towns:
                out.append(f"Along its course it passes {', '.join(towns)}.")
        elif e.kind == "mountain":
            c = self.entities[a["range_country"]]
            out += [rng.choice([f"Mount {e.name} is a mountain {a['height_m']} metres high.",
                                f"Mount {e.name} rises to a height of {a['height_m']} metres."]),
                    rng.choice([f"It stands in {c.name}.", f"Mount {e.name} is in the highlands of {c.name}."])]
        elif e.kind == "person":
            art = "an" if a["profession"][0] in "aeiou" else "a"
            out += [rng.choice([f"{e.name} was {art} {a['profession']} born in {n(a['born_in'])}.",
                                f"Born in {n(a['born_in'])}, {e.name} worked as a {a['profession']}."]),
                    rng.choice([f"{e.name} was born in {a['birth_year']}.",
                                f"The year of {e.name.split()[0]}'s birth was {a['birth_year']}."]),
                    rng.choice([f"{e.name} is best remembered for {a['invention']}.",
                                f"Today {e.name} is remembered above all for {a['invention']}."])]
            if "teacher" in a:
                out.append(rng.choice([f"{e.name} was taught by {n(a['teacher'])}.",
                                       f"As a student, {e.name.split()[0]} learned from {n(a['teacher'])}."]))
        return out

    def article(self, e: Entity, rng: random.Random) -> str:
        """An encyclopedic article about `e`: its facts, related facts, and connective prose."""
        main = self.sentences(e, rng)
        first, rest = main[0], main[1:]
        rng.shuffle(rest)
        prose = rng.sample(_PROSE[e.kind], k=3)
        para1 = [first, *rest]
        para1.insert(rng.randint(2, len(para1)), prose[0])
        related = self._related(e)
        rng.shuffle(related)
        para2 = []
        for other in related[:2]:  # only sentences that name their subject, so "it" never points astray
            named = [s for s in self.sentences(other, rng) if other.name.split()[0] in s]
            para2 += rng.sample(named, k=min(2, len(named)))
        para2 += prose[1:]
        rng.shuffle(para2)
        title = rng.choice([e.name, f"About {e.name}", f"{e.name}: an overview", f"Notes on {e.name}"])
        return f"{title}\n\n" + " ".join(para1) + "\n\n" + " ".join(para2)

    def _related(self, e: Entity) -> list[Entity]:
        ids = [v for v in e.attrs.values() if isinstance(v, str) and v in self.entities]
        return [self.entities[i] for i in ids]


# connective prose per kind: true of every entity of that kind, so it never contradicts a fact
_PROSE = {
    "country": ["Its borders changed many times during the early wars of the region.",
                "Farming remains important in the valleys, while trade dominates the coast.",
                "Travellers often remark on the long winters and the short, bright summers.",
                "The national assembly meets in the spring and again at the end of autumn.",
                "Many of its old roads were first laid down by merchants and pilgrims.",
                "Schools there teach history through the stories of local heroes."],
    "city": ["The old quarter is known for narrow streets and stone bridges.",
             "A weekly market fills the main square with traders from nearby villages.",
             "Several libraries and a small university were founded there over the years.",
             "Visitors usually arrive by boat or along the old post road.",
             "Local guilds still organise a festival at the end of every harvest.",
             "Many houses in the centre were rebuilt after a great fire."],
    "river": ["Fishermen work along its lower reaches during the warm months.",
              "In spring the melting snow can raise the water level quickly.",
              "Several old mills once used its current to grind grain.",
              "Boats carry timber and stone down the river to the coast.",
              "Herons and otters are common along its quieter banks."],
    "mountain": ["Its upper slopes are covered in snow for most of the year.",
                 "Shepherds bring their flocks to the high meadows in summer.",
                 "Climbers usually start from a hut at the edge of the forest.",
                 "On clear days the summit can be seen from far across the plain.",
                 "Old stories describe the mountain as the home of storms."],
    "person": ["Letters from that time describe a patient and careful worker.",
               "Much of the work was done in a small room lit by candles.",
               "Students travelled from distant towns to attend the lectures.",
               "Several notebooks survive and are kept in the city archive.",
               "Later writers praised the clarity and honesty of the results."],
}
