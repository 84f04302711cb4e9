"""A labeled set of prompts for task-aware routing, written for this project: what a Spark
owner's chat users and agents ask, in four classes.

- code: writing, fixing or explaining code;
- quick: short questions and chat a small model answers;
- research: long or hard questions that want the larger model;
- live: questions that need today's data (prices, news, weather, scores).

`PROMPTS` is a list of (class, prompt), 60 per class, made from hand-written templates
and subjects so that no two are alike. `EXPECTED` maps each class to the profile the
README's example routes should pick.
"""

from __future__ import annotations

import itertools

EXPECTED = {"code": "code", "quick": "fast", "research": "expert", "live": "cloud"}

CODE_TEMPLATES = [
    "Write a {lang} function that {task}.",
    "Why does this {lang} code fail? It should {task} but returns the wrong result.",
    "Refactor my {lang} script so that it can {task} without global state.",
    "How do I {task} in {lang}? Show a short example.",
    "Add unit tests for a {lang} module that needs to {task}.",
    "I get a stack trace when I try to {task} in {lang}; what is wrong?",
]
LANGS = ["Python", "Rust", "TypeScript", "Go", "Java", "Bash", "SQL", "C++", "JavaScript",
         "Kotlin"]
TASKS = ["parse a CSV file into records", "reverse a linked list", "retry an HTTP call with backoff",
         "deduplicate a list while keeping order", "read a large file line by line",
         "validate an e-mail address with a regex", "merge two sorted arrays",
         "compute a moving average", "walk a directory tree", "serialize a config to JSON"]

QUICK = [
    "hi", "hello there", "thanks!", "good morning", "What is the capital of Australia?",
    "How many days are in a leap year?", "What does 'ephemeral' mean?",
    "Translate 'good night' into French.", "Give me a synonym for happy.",
    "What is 15% of 80?", "Who wrote Pride and Prejudice?", "How far is the Moon?",
    "What is the boiling point of water in Fahrenheit?", "Spell 'necessary' for me.",
    "What rhymes with orange?", "Name three primary colours.", "What is a haiku?",
    "Suggest a name for a grey cat.", "How do you say thank you in Japanese?",
    "What is the plural of cactus?", "Tell me a short joke.", "Is a tomato a fruit?",
    "What is the square root of 144?", "How many legs does a spider have?",
    "What's the opposite of generous?", "Convert 10 km to miles.",
    "What colour do you get mixing blue and yellow?", "Give me a fun fact about owls.",
    "What year did the Berlin Wall fall?", "What is the largest ocean?",
    "How many minutes are in a day?", "What is the chemical symbol for gold?",
    "Recommend a board game for four people.", "Write a two-line birthday greeting.",
    "What does CPU stand for?", "Which planet is the red planet?",
    "How many continents are there?", "What is a baker's dozen?",
    "Summarise the plot of Cinderella in one sentence.", "Is 97 a prime number?",
    "What language is spoken in Brazil?", "What is the freezing point of water?",
    "Give me a word that starts with 'qu'.", "Who painted the Mona Lisa?",
    "What is 7 times 8?", "Name a fruit that is yellow.", "What is an acronym?",
    "How many sides does a hexagon have?", "Suggest a title for a poem about rain.",
    "What is the tallest animal?", "ok", "cool, thanks", "yes please",
    "Can you say that more simply?", "What time zone is London in?",
    "What does 'RSVP' mean?", "How do I pronounce 'quinoa'?",
    "What's a good stretch for a stiff neck?", "Which is heavier, a kilo of feathers or steel?",
    "Define photosynthesis in one line.",
]

RESEARCH_TEMPLATES = [
    "Compare {a} and {b} in depth: costs, risks and long-term trade-offs.",
    "Write a thorough analysis of {a}, with its implications for {b}.",
    "Explain why {a} matters for {b}, step by step, with the evidence for and against.",
    "Survey the literature on {a} and how it affects {b}.",
    "Evaluate three strategies for {a} in the context of {b}; which would you pick and why?",
    "Critique the common arguments about {a} as they apply to {b}.",
]
TOPICS = [("remote work", "small engineering teams"), ("nuclear power", "grid stability"),
          ("carbon taxes", "manufacturing exports"), ("microservices", "a five-person startup"),
          ("universal basic income", "labour markets"), ("four-day weeks", "productivity"),
          ("open-source licensing", "cloud providers"), ("urban heat islands", "public health"),
          ("central bank digital currencies", "privacy"), ("battery recycling", "EV adoption")]

LIVE = [
    "What is the price of bitcoin right now?", "What's the weather in Berlin today?",
    "Who won last night's Champions League match?", "What are today's top headlines?",
    "Is the A7 motorway congested at the moment?", "What is the current EUR to USD rate?",
    "Latest news about the Mars sample return mission?", "What's the score of the Lakers game?",
    "When is the next train from Lyon to Paris today?", "What is Nvidia's share price today?",
    "Are there any flight delays at Heathrow right now?", "What's trending on the news this morning?",
    "What is the air quality in Delhi today?", "Current gas prices in Ohio?",
    "Did the ECB change interest rates this week?", "What's the forecast for Tokyo tomorrow?",
    "Latest version of Python released this month?", "Who is leading the Tour de France today?",
    "What are the current COVID case numbers in France?", "Is it raining in Seattle now?",
    "How did the stock market close today?", "What's the latest on the election results?",
    "What time does the sun set today in Oslo?", "Current price of gold per ounce?",
    "Any earthquakes reported today?", "What's the current temperature in Cairo?",
    "Which movies are in cinemas this weekend?", "Latest iPhone announcement news today?",
    "What is the current inflation rate in the UK this month?", "Traffic on the Golden Gate bridge now?",
]
LIVE_PREFIXES = ["", "Quick one: ", "Please check: ", "Right now, "]


def _code() -> list[str]:
    out = []
    for template, (lang, task) in zip(itertools.cycle(CODE_TEMPLATES),
                                      itertools.product(LANGS, TASKS)):
        out.append(template.format(lang=lang, task=task))
        if len(out) == 60:
            break
    return out


def _research() -> list[str]:
    return [t.format(a=a, b=b) for t in RESEARCH_TEMPLATES for a, b in TOPICS][:60]


def _live() -> list[str]:
    return [p + q for p in LIVE_PREFIXES[:2] for q in LIVE][:60]


PROMPTS: list[tuple[str, str]] = (
    [("code", p) for p in _code()] + [("quick", p) for p in QUICK[:60]]
    + [("research", p) for p in _research()] + [("live", p) for p in _live()])
assert len(PROMPTS) == 240 and len({p for _, p in PROMPTS}) == 240
