"""``voiced transcripts`` over a real journal, ``voiced doctor`` against real parts, and
signals to a real ``voiced run`` process (without a sound server: it waits for the mic)."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests import ollama_fixtures
from tests import pulse as pulse_fixtures
from tests.notify_socket import NotifySocket
from tests.ollama_server import OllamaTestServer, _Rejected, plain_model_show
from voiced import paths
from voiced.brain.tools.confine import landlock_abi
from voiced.cli import main
from voiced.transcripts import Journal, make_record

ollama_server = ollama_fixtures.ollama_server
dead_ollama_url = ollama_fixtures.dead_ollama_url
pulse_server = pulse_fixtures.pulse_server

DAY1 = dt.datetime(2026, 3, 1, 9, 30, 5).astimezone()
DAY2 = dt.datetime(2026, 3, 2, 18, 4, 0).astimezone()


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def journal() -> Journal:
    journal = Journal(retention_days=0)
    journal.append(make_record("dictation", "buy oat milk", start=DAY1))
    journal.append(
        make_record(
            "turn",
            "What time is it?",
            start=DAY1 + dt.timedelta(minutes=5),
            user="What time is it?",
            assistant="It is nine thirty-five.",
            tool_calls=[
                {
                    "name": "current_time",
                    "arguments": {"timezone": None},
                    "decision": "allowed",
                    "result": "09:35",
                }
            ],
            error=None,
            interrupted=False,
            timings={
                "first_audio_ms": 112,
                "speech_end_to_first_audio_ms": 812,
                "total_ms": 2400,
            },
        )
    )
    journal.append(
        make_record(
            "turn",
            "Tell me about the moon.",
            start=DAY2,
            user="Tell me about the moon.",
            assistant="The moon is…",
            error=None,
            interrupted=True,
            timings={"first_audio_ms": 95, "total_ms": 700},  # a record from before issue 19
        )
    )
    return journal


# ------------------------------------------------------------------------- transcripts


def test_list_shows_days_with_counts(journal: Journal) -> None:
    result = invoke("transcripts")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["2026-03-01", "2", "records", "1", "turns"]
    assert lines[1].split() == ["2026-03-02", "1", "records", "1", "turns"]
    assert invoke("transcripts", "list").stdout == result.stdout


def test_list_when_empty() -> None:
    result = invoke("transcripts", "list")
    assert result.exit_code == 0 and result.stdout == ""
    assert "no transcripts yet" in result.stderr


def test_show_a_day_readably_and_as_json(journal: Journal) -> None:
    result = invoke("transcripts", "show", "2026-03-01")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "2026-03-01 09:30:05  heard: buy oat milk" in text
    assert "2026-03-01 09:35:05  you: What time is it?" in text
    assert 'tool: current_time({"timezone": null}) allowed -> 09:35' in text
    assert "voiced: It is nine thirty-five." in text
    # What the user felt: from the end of their speech, not from the endpoint decision.
    assert "first audio 812 ms after you stopped" in text
    as_json = invoke("transcripts", "show", "2026-03-01", "--json")
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [r["kind"] for r in records] == ["dictation", "turn"]
    assert records[1]["tool_calls"][0]["name"] == "current_time"
    interrupted = invoke("transcripts", "show", "2026-03-02").stdout
    assert "voiced: The moon is… [interrupted]" in interrupted
    assert "first audio 95 ms after the end of your turn was decided" in interrupted


def test_show_today_and_bad_dates(journal: Journal) -> None:
    Journal(retention_days=0).add("dictation", "said today")
    assert "heard: said today" in invoke("transcripts", "show", "today").stdout
    missing = invoke("transcripts", "show", "2020-01-01")
    assert missing.exit_code == 1 and "no transcripts for 2020-01-01" in missing.output
    bad = invoke("transcripts", "show", "last tuesday")
    assert bad.exit_code == 2 and "is not a date" in bad.output


def test_search_matches_user_and_assistant_words(journal: Journal) -> None:
    found = invoke("transcripts", "search", "NINE THIRTY")
    assert found.exit_code == 0
    assert "you: What time is it?" in found.stdout and "oat milk" not in found.stdout
    assert "heard: buy oat milk" in invoke("transcripts", "search", "oat").stdout
    none = invoke("transcripts", "search", "zebra")
    assert none.exit_code == 1 and none.stdout == "" and "nothing matches" in none.stderr


def test_export_json_txt_and_ranges(journal: Journal, tmp_path: Path) -> None:
    result = invoke("transcripts", "export", "--format", "json")
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert [r["text"] for r in records] == [
        "buy oat milk",
        "What time is it?",
        "Tell me about the moon.",
    ]
    assert "exported 3 record(s)" in result.stderr
    ranged = json.loads(
        invoke("transcripts", "export", "-f", "json", "--since", "2026-03-02").stdout
    )
    assert [r["text"] for r in ranged] == ["Tell me about the moon."]
    until = json.loads(
        invoke("transcripts", "export", "-f", "json", "--until", "2026-03-01").stdout
    )
    assert len(until) == 2
    out = tmp_path / "all.txt"
    assert invoke("transcripts", "export", "-o", str(out)).exit_code == 0
    text = out.read_text()
    assert text.count("you: ") == 2 and "heard: buy oat milk" in text
    lines = invoke("transcripts", "export", "-f", "jsonl").stdout.splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["dictation", "turn", "turn"]


def test_export_skips_a_torn_last_line(journal: Journal) -> None:
    path = journal.path_for(DAY2.date())
    with open(path, "ab") as handle:
        handle.write(b'{"id": "torn", "start": "2026-03-02T19:00')
    records = json.loads(invoke("transcripts", "export", "-f", "json").stdout)
    assert len(records) == 3


# ------------------------------------------------------------------------- doctor


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


@pytest.mark.pulse
def test_doctor_passes_when_everything_works(
    pulse_server, ollama_server: OllamaTestServer, tmp_path: Path
) -> None:
    config = _config(tmp_path, f"llm:\n  host: {ollama_server.url}\n")
    result = invoke("--config", str(config), "doctor")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "ok   config",
        "ok   speech model",
        "ok   wake word",
        "ok   end of turn",
        "ok   voice",
        "ok   speech servers",
        "ok   input device",
        "ok   output device",
        "warn echo cancel",  # the test server has no echo canceller loaded
        "     fix",
        "ok   Ollama",
        "ok   LLM model",
        "ok   transcripts",
        *(["ok   tool sandbox"] if landlock_abi() else ["warn tool sandbox", "     fix"]),
    ]
    assert "gpt-oss:20b is pulled (completion, tools, thinking)" in result.stdout
    assert "all checks passed" in result.stderr


SKIP_HEAVY = ("--skip", "stt", "--skip", "tts", "--skip", "input", "--skip", "output")


def test_doctor_ollama_down(dead_ollama_url: str, tmp_path: Path) -> None:
    config = _config(tmp_path, f"llm:\n  host: {dead_ollama_url}\n")
    result = invoke("--config", str(config), "doctor", *SKIP_HEAVY)
    assert result.exit_code == 1
    assert f"FAIL Ollama: cannot reach Ollama at {dead_ollama_url}" in result.stdout
    assert "fix: start it (`ollama serve`" in result.stdout
    assert "FAIL LLM model: skipped" in result.stdout
    assert "ok   transcripts" in result.stdout
    assert "2 check(s) failed" in result.stderr


def test_doctor_model_missing_or_without_tools(
    ollama_server: OllamaTestServer, tmp_path: Path
) -> None:
    config = _config(tmp_path, f"llm:\n  host: {ollama_server.url}\n  model: llama9:1b\n")
    missing = invoke("--config", str(config), "doctor", *SKIP_HEAVY)
    assert missing.exit_code == 1
    assert "FAIL LLM model: llama9:1b is not pulled" in missing.stdout
    assert "fix: run: ollama pull llama9:1b" in missing.stdout

    ollama_server.add_model("gemma3:1b", plain_model_show())
    config = _config(tmp_path, f"llm:\n  host: {ollama_server.url}\n  model: gemma3:1b\n")
    plain = invoke("--config", str(config), "doctor", *SKIP_HEAVY)
    assert plain.exit_code == 1
    assert "FAIL LLM model: gemma3:1b cannot call tools (capabilities: completion)" in plain.stdout


def test_doctor_unwritable_transcripts(
    ollama_server: OllamaTestServer, tmp_path: Path, voiced_home: Path
) -> None:
    paths.transcripts_dir().write_text("a file where the folder should be")
    config = _config(tmp_path, f"llm:\n  host: {ollama_server.url}\n")
    result = invoke("--config", str(config), "doctor", *SKIP_HEAVY)
    assert result.exit_code == 1
    assert f"FAIL transcripts: {paths.transcripts_dir()} is not writable" in result.stdout
    assert "ok   LLM model" in result.stdout


ONLY_WAKE = (
    *SKIP_HEAVY,
    *("--skip", "echo", "--skip", "ollama", "--skip", "model", "--skip", "transcripts"),
    *("--skip", "turn"),
)
ONLY_TURN = (
    *SKIP_HEAVY,
    *("--skip", "echo", "--skip", "ollama", "--skip", "model", "--skip", "transcripts"),
    *("--skip", "wake"),
)


def test_doctor_checks_the_end_of_turn_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tmp_path, "wake:\n  engine: text\n")
    result = invoke("--config", str(config), "doctor", *ONLY_TURN)
    assert result.exit_code == 0, result.output
    assert "ok   end of turn: the Smart Turn model (in pipecat-ai " in result.stdout

    config = _config(tmp_path, "vad:\n  end_of_turn: silence\n")
    result = invoke("--config", str(config), "doctor", *ONLY_TURN)
    assert "ok   end of turn: after 700 ms of silence" in result.stdout

    import importlib.metadata

    def missing(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    config = _config(tmp_path, "wake:\n  engine: text\n")
    result = invoke("--config", str(config), "doctor", *ONLY_TURN)
    assert result.exit_code == 1
    assert "FAIL end of turn: pipecat-ai is not installed" in result.stdout
    assert "fix: the end-of-turn model ships inside" in result.stdout


def test_doctor_checks_the_wake_word_model(tmp_path: Path) -> None:
    config = _config(tmp_path, "wake:\n  engine: model\n  model: hey_jarvis\n")
    result = invoke("--config", str(config), "doctor", *ONLY_WAKE)
    assert result.exit_code == 0, result.output
    assert 'ok   wake word: hey_jarvis ("Hey Jarvis") loads and runs' in result.stdout
    assert "also the stop word" in result.stdout

    config = _config(tmp_path, "wake:\n  model: hey_jarvis\n  stop_model: alexa\n")
    result = invoke("--config", str(config), "doctor", *ONLY_WAKE)
    assert result.exit_code == 0 and 'stop word alexa ("Alexa")' in result.stdout

    config = _config(tmp_path, "wake:\n  model: hey_computer\n")
    result = invoke("--config", str(config), "doctor", *ONLY_WAKE)
    assert result.exit_code == 1
    assert "FAIL wake word: unknown wake-word model 'hey_computer'" in result.stdout
    assert "fix: set wake.model (and wake.stop_model) to one of: alexa, hey_jarvis" in (
        result.stdout
    )

    config = _config(tmp_path, "wake:\n  engine: text\n")
    result = invoke("--config", str(config), "doctor", *ONLY_WAKE)
    assert result.exit_code == 0
    assert "ok   wake word: text engine: Whisper looks for the wake phrase (computer" in (
        result.stdout
    )


def test_doctor_invalid_config(tmp_path: Path) -> None:
    config = _config(tmp_path, "wake:\n  follow_up_s: soon\n")
    result = invoke("--config", str(config), "doctor")
    assert result.exit_code == 1
    assert result.stdout.startswith("FAIL config:") and "wake.follow_up_s" in result.stdout
    assert "fix: correct the file" in result.stdout


def test_doctor_speech_model_and_voice_that_do_not_load(
    ollama_server: OllamaTestServer, tmp_path: Path
) -> None:
    broken = tmp_path / "ggml-broken.bin"
    broken.write_bytes(b"not a ggml file at all" * 100)
    voice = tmp_path / "missing-voice.onnx"
    config = _config(
        tmp_path,
        f"llm:\n  host: {ollama_server.url}\nstt:\n  model: {broken}\ntts:\n  voice: {voice}\n",
    )
    result = invoke("--config", str(config), "doctor", "--skip", "input", "--skip", "output")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    stt = next(i for i, line in enumerate(lines) if line.startswith("FAIL speech model:"))
    assert str(broken) in lines[stt]
    assert lines[stt + 1].startswith("     fix: check stt.model")
    tts = next(i for i, line in enumerate(lines) if line.startswith("FAIL voice:"))
    assert "missing-voice" in lines[tts]
    assert lines[tts + 1].startswith("     fix: check tts.voice")
    assert "2 check(s) failed" in result.stderr


def _failures_without_a_hint(output: str) -> list[str]:
    lines = output.splitlines()
    return [
        line
        for index, line in enumerate(lines)
        if line.startswith("FAIL")
        and not (index + 1 < len(lines) and lines[index + 1].startswith("     fix: "))
    ]


def test_doctor_hints_when_ollama_fails_to_describe_the_model(
    ollama_server: OllamaTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_show(name: str) -> None:
        raise _Rejected(500, "llama runner process has terminated")

    monkeypatch.setattr(ollama_server, "model", broken_show)
    config = _config(tmp_path, f"llm:\n  host: {ollama_server.url}\n")
    result = invoke("--config", str(config), "doctor", *SKIP_HEAVY)
    assert result.exit_code == 1
    assert "FAIL LLM model: Ollama refused to describe gpt-oss:20b" in result.stdout
    assert _failures_without_a_hint(result.stdout) == []
    assert "fix: look at the Ollama server's log" in result.stdout


def test_doctor_hints_when_a_check_crashes(
    ollama_server: OllamaTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voiced.commands import doctor

    def crash(settings, context) -> str:
        raise RuntimeError("something nobody expected")

    monkeypatch.setitem(doctor._RUNNERS, "transcripts", ("transcripts", crash))
    config = _config(tmp_path, f"llm:\n  host: {ollama_server.url}\n")
    result = invoke("--config", str(config), "doctor", *SKIP_HEAVY)
    assert result.exit_code == 1
    assert "FAIL transcripts: RuntimeError: something nobody expected" in result.stdout
    assert _failures_without_a_hint(result.stdout) == []


@pytest.mark.pulse
def test_doctor_missing_devices(
    pulse_server, ollama_server: OllamaTestServer, tmp_path: Path
) -> None:
    config = _config(
        tmp_path,
        f"llm:\n  host: {ollama_server.url}\n"
        "audio:\n  input_device: no-such-mic\n  output_device: no-such-speaker\n",
    )
    result = invoke("--config", str(config), "doctor", "--skip", "stt")
    assert result.exit_code == 1
    assert "FAIL input device: no input device matches 'no-such-mic'" in result.stdout
    assert "FAIL output device:" in result.stdout and "no-such-speaker" in result.stdout
    assert "fix: run `voiced devices` and set audio.input_device" in result.stdout


# ------------------------------------------------------------------------- run: signals

NO_SOUND_SERVER = ("PULSE_SERVER", "PULSE_COOKIE", "PULSE_STATE_PATH", "PULSE_RUNTIME_PATH")


def test_run_reloads_with_its_options_on_sighup_and_stops_on_sigterm(
    ollama_server: OllamaTestServer, voiced_home: Path, tmp_path: Path
) -> None:
    """SIGHUP re-reads the file but keeps `voiced run`'s options; SIGTERM while idle exits
    0 within the 2 s of the spec (2.5 s with a margin for loaded CI machines).

    The witness is what the Ollama server receives: the model warm-up after each (re)load of
    the assistant, sent to the host and model the options name.
    """
    file_llm = "llm:\n  host: http://127.0.0.1:9\n  model: other:1b\n"
    config = _config(tmp_path, file_llm)
    notify = NotifySocket(tmp_path / "notify.sock")
    messages = notify.messages
    env = {key: value for key, value in os.environ.items() if key not in NO_SOUND_SERVER}
    env["NOTIFY_SOCKET"] = str(notify.path)
    log_path = tmp_path / "run.log"
    command = [sys.executable, "-m", "voiced", "-v", "--config", str(config), "run"]
    options = ["--no-wake", "--host", ollama_server.url, "--model", "gpt-oss:20b"]
    devices = ["--input-device", "no-such-mic", "--output-device", "no-such-speaker"]
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [*command, *options, *devices],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )

    def wait_for(condition, what: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, f"{what}; log:\n{log_path.read_text()[-3000:]}"
            time.sleep(0.05)

    try:
        # The models are loaded and the main loop runs (no microphone without a sound server).
        wait_for(lambda: "STATUS=waiting for the microphone" in messages, "never ran")
        wait_for(lambda: len(ollama_server.chat_requests) == 1, "no warm-up")
        config.write_text(file_llm + "  keep_alive: 10m\n")  # the assistant is rebuilt
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "RELOADING=1" in messages, "no reload")
        wait_for(lambda: len(ollama_server.chat_requests) == 2, "no warm-up after the reload")
        warm_up = ollama_server.chat_requests[-1]
        assert warm_up["model"] == "gpt-oss:20b" and warm_up["keep_alive"] == "10m"
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(15)
        took = time.monotonic() - sent
    finally:
        pulse_fixtures.end_process(proc)
        notify.close()
    assert code == 0, log_path.read_text()[-3000:]
    assert took < 2.5, took
    assert "STOPPING=1" in messages
