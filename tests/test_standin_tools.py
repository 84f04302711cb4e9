"""The vLLM stand-in calls a tool only when asked, as a model would be."""

import json

from sparkstack.simulated.vllm_standin import _tool_call

WRITE = {"type": "function", "function": {"name": "Write", "parameters": {
    "type": "object", "required": ["file_path", "content"],
    "properties": {"file_path": {"type": "string"}, "content": {"type": "string"}}}}}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}}}


def user(text):
    return [{"role": "user", "content": text}]


def test_a_file_the_user_asks_for_is_written_with_the_write_tool():
    call = _tool_call(user("Create the file /tmp/x/hello.txt containing exactly: hi there"),
                      [WEATHER, WRITE], "auto")
    assert call["function"]["name"] == "Write"
    assert json.loads(call["function"]["arguments"]) == {"file_path": "/tmp/x/hello.txt",
                                                         "content": "hi there"}


def test_a_named_tool_is_called_and_a_plain_question_is_answered():
    assert _tool_call(user("get_weather: Oslo?"), [WRITE, WEATHER], "auto")[
        "function"]["name"] == "get_weather"
    assert _tool_call(user("What is 2 + 2?"), [WRITE, WEATHER], "auto") is None
    assert _tool_call(user("get_weather: Oslo?"), [WEATHER], "none") is None


def test_once_the_tool_result_is_back_it_answers():
    messages = user("get_weather: Oslo?") + [
        {"role": "assistant", "tool_calls": [{"id": "1"}]},
        {"role": "tool", "tool_call_id": "1", "content": "sunny"}]
    assert _tool_call(messages, [WEATHER], "auto") is None
