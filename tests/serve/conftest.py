"""Fixtures of the serve tests: the tiny bundle and model, a live server over it, openai-harmony as the oracle of
prompts. The servers themselves: live_server.py."""

import pytest

from gptoss.runtime import Model
from helpers import FP32
from live_server import RecordingBackend, served


@pytest.fixture(scope="session")
def serve_bundle(tiny_bundle):
    return tiny_bundle("cpu", quant=FP32)


@pytest.fixture(scope="session")
def model(serve_bundle):
    return Model.load(serve_bundle)


@pytest.fixture(scope="module")
def live(model):
    """The real tiny model behind a server with 4 slots; it records the prompts it was fed."""
    with served(RecordingBackend(model), parallel=4, max_queue=16) as server:
        yield server


@pytest.fixture(scope="session")
def oracle(enc):
    """render(messages, effort, instructions, tools) -> the prompt ids openai-harmony renders for completion;
    `messages` are openai_harmony Messages, `tools` chat-style dicts."""
    import openai_harmony as oh

    def render(messages, effort="low", instructions=None, tools=None, for_completion=True):
        system = oh.SystemContent(model_identity="You are ChatGPT, a large language model trained by OpenAI.",
                                  reasoning_effort=oh.ReasoningEffort(effort.capitalize()), knowledge_cutoff="2024-06")
        convo = [oh.Message.from_role_and_content(oh.Role.SYSTEM, system)]
        if instructions is not None or tools:
            dev = oh.DeveloperContent.new()
            if instructions is not None:
                dev = dev.with_instructions(instructions)
            if tools:
                dev = dev.with_function_tools([oh.ToolDescription.new(
                    t["function"]["name"], t["function"]["description"], parameters=t["function"]["parameters"])
                    for t in tools])
            convo.append(oh.Message.from_role_and_content(oh.Role.DEVELOPER, dev))
        conversation = oh.Conversation.from_messages(convo + list(messages))
        if for_completion:
            return enc.render_conversation_for_completion(conversation, oh.Role.ASSISTANT)
        return enc.render_conversation(conversation)

    return render
