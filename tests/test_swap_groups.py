"""Which member of a swap group runs: the choice `sparkstack swap` recorded on the host,
else the first listed; a choice that is no longer a member falls back to the first."""

import json

from sparkstack.host_facts import Snapshot
from sparkstack.services.vllm import chosen_members
from sparkstack.settings import validate_inventory

MODELS = [{"name": "day", "model": "a/b", "port": 8000, "swap_group": "g"},
          {"name": "night", "model": "a/c", "port": 8001, "swap_group": "g"},
          {"name": "solo", "model": "a/d", "port": 8002}]


def host_with(recorded: dict | None):
    s = validate_inventory({"s": {"models": MODELS, "litellm_model_aliases": {},
                                  "profiles": {"fast": {"local": ["g"]}}}})[0]
    contents = {} if recorded is None else {s.layout.swap_choices: json.dumps(recorded)}
    return s, Snapshot({"contents": contents, "files": {}}, [])


def test_the_first_member_runs_until_one_is_chosen():
    s, state = host_with(None)
    assert chosen_members(s, state) == {"g": "day"}
    assert chosen_members(s, state, choose={"g": "night"}) == {"g": "night"}


def test_a_recorded_choice_is_kept_unless_it_left_the_group():
    s, state = host_with({"g": "night"})
    assert chosen_members(s, state) == {"g": "night"}
    s, state = host_with({"g": "gone"})
    assert chosen_members(s, state) == {"g": "day"}
