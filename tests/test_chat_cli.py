"""``voiced chat`` against the scripted Ollama server."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests import ollama_fixtures
from tests import pulse as pulse_fixtures
from tests.ollama_server import OllamaTestServer, Reply, ToolCall
from tests.speech import wer
from voiced.cli import main

ollama_server = ollama_fixtures.ollama_server
dead_ollama_url = ollama_fixtures.dead_ollama_url
pulse_server = pulse_fixtures.pulse_server


def run_chat(url: str, text: str, *args: str):
    return CliRunner().invoke(main, ["chat", "--host", url, *args], input=text)


def test_piped_mode_runs_one_turn_per_line(ollama_server: OllamaTestServer) -> None:
    ollama_server.script(
        Reply(thinking=["greeting"], content=["Hello", " there."]),
        Reply(content=["I am ", "fine."]),
    )
    result = run_chat(ollama_server.url, "hi\n\nhow are you\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Hello there.\nI am fine.\n"
    assert "greeting" not in result.output  # thinking is never shown
    second = ollama_server.chat_requests[1]["messages"]
    assert [m["content"] for m in second[1:]] == ["hi", "Hello there.", "how are you"]


def test_the_first_answer_comes_after_a_model_load_longer_than_the_idle_limit(
    tmp_path: Path,
) -> None:
    # gpt-oss:20b loading for 45 s against the 30 s idle limit, scaled down: 4 s against 1 s.
    # Ollama sends nothing while it loads and drops the load when the client hangs up.
    config = tmp_path / "config.yaml"
    config.write_text("llm:\n  idle_timeout_s: 1.0\n")
    with OllamaTestServer(load_s=4.0) as server:
        server.script(Reply(content=["Loaded", " and ready."]))
        result = CliRunner().invoke(
            main, ["--config", str(config), "chat", "--host", server.url], input="hi\n"
        )
        assert result.exit_code == 0, result.output
        assert result.stdout == "Loaded and ready.\n"
        assert "voiced: one moment, the model is loading." in result.stderr
        assert [load.outcome for load in server.loads] == ["loaded"]


def test_tools_work_in_chat(ollama_server: OllamaTestServer) -> None:
    ollama_server.script(
        Reply(tool_calls=[ToolCall("current_time", {"timezone": "UTC"})]),
        Reply(content=["It is late."]),
    )
    result = run_chat(ollama_server.url, "what time is it\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == "It is late.\n"
    tool_message = ollama_server.chat_requests[1]["messages"][-1]
    assert tool_message["tool_name"] == "current_time"
    assert str(date.today().year) in tool_message["content"]
    names = [t["function"]["name"] for t in ollama_server.chat_requests[0]["tools"]]
    assert "current_time" in names


def test_options_reach_the_request(ollama_server: OllamaTestServer) -> None:
    ollama_server.script(Reply(content=["Ok."]))
    result = run_chat(ollama_server.url, "hi\n", "--think", "high", "--no-tools")
    assert result.exit_code == 0, result.output
    sent = ollama_server.chat_requests[0]
    assert sent["think"] == "high" and not sent.get("tools")


def test_reset_and_quit(ollama_server: OllamaTestServer) -> None:
    ollama_server.script(Reply(content=["One."]), Reply(content=["Two."]))
    result = run_chat(ollama_server.url, "first\n/reset\nsecond\n/quit\nnever sent\n")
    assert result.exit_code == 0, result.output
    assert [m["role"] for m in ollama_server.chat_requests[1]["messages"]] == ["system", "user"]
    assert len(ollama_server.chat_requests) == 2


def test_server_down_is_a_clear_error(dead_ollama_url: str) -> None:
    result = run_chat(dead_ollama_url, "hi\nagain\n")
    assert result.exit_code == 1
    assert f"cannot reach Ollama at {dead_ollama_url}" in result.stderr
    assert "ollama serve" in result.stderr
    assert result.stdout == ""


def test_missing_model_says_how_to_pull(ollama_server: OllamaTestServer) -> None:
    result = run_chat(ollama_server.url, "hi\n", "--model", "llama9:1b")
    assert result.exit_code == 1
    assert "ollama pull llama9:1b" in result.stderr


def test_a_failed_turn_does_not_stop_the_rest(ollama_server: OllamaTestServer) -> None:
    ollama_server.script(
        Reply.http_error(500, "boom"),
        Reply.http_error(500, "boom"),
        Reply(content=["Second answer."]),
    )
    result = run_chat(ollama_server.url, "first\nsecond\n")
    assert result.exit_code == 1  # one turn failed
    assert "The language model ran into an error" in result.stderr
    assert result.stdout == "Second answer.\n"


def test_echo_pipe_into_the_installed_command(ollama_server: OllamaTestServer) -> None:
    ollama_server.script(Reply(content=["Piped ", "answer."]))
    env = dict(os.environ, OLLAMA_HOST=ollama_server.url)
    voiced = [sys.executable, "-m", "voiced"]
    done = subprocess.run(
        [*voiced, "chat"], input="hello\n", capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Piped answer.\n"


@pytest.mark.pulse
def test_say_speaks_the_reply(ollama_server: OllamaTestServer, pulse_server, stt) -> None:
    # Piper's voice varies run to run; tiny.en heard this reply word for word in 25 of 25 draws.
    reply = "The weather today is sunny and warm. You could take a long walk in the park."
    ollama_server.script(
        Reply(
            content=[
                "The weather today is ",
                "sunny and warm. You could ",
                "take a long walk in the park.",
            ]
        )
    )
    recording = pulse_server.start_speaker_recording()
    result = run_chat(ollama_server.url, "how warm is the kitchen\n", "--say")
    audio = recording.stop()
    assert result.exit_code == 0, result.output
    assert result.stdout == reply + "\n"
    loud = np.flatnonzero(np.abs(audio) > 0.01)
    assert loud.size, "nothing was heard on the speaker"
    speech = audio[max(0, loud[0] - 1600) : loud[-1] + 1600]  # transcribe only the reply
    heard = stt.transcribe(speech).text
    assert wer(reply, heard) <= 0.2, heard


@pytest.mark.pulse
def test_say_with_a_missing_speaker_fails_clearly(
    ollama_server: OllamaTestServer, pulse_server, tmp_path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("audio:\n  output_device: no-such-speaker\n")
    ollama_server.script(Reply(content=["Hello."]))
    result = CliRunner().invoke(
        main, ["--config", str(config), "chat", "--host", ollama_server.url, "--say"], input="hi\n"
    )
    assert result.exit_code == 1
    assert result.stdout == "Hello.\n"  # the text still arrives
    assert "--say: cannot speak" in result.stderr and "no-such-speaker" in result.stderr
