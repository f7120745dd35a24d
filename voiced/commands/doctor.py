"""``voiced doctor``: check everything ``voiced run`` needs, each with a hint to fix it.

Checks, in order: the configuration, the speech model (loads and runs), the wake word (the
wake-word models load and run, with ``wake.engine: model``), the voice (loads and speaks), the
Wyoming servers of ``stt.server`` and ``tts.server`` (answer, offer that service; a warning
when not, as voiced then uses its own models),
the input and output devices (open, deliver / take audio), echo cancellation (a warning
when voiced does not listen on an echo-cancelled source), the Ollama server
(reachable), the model (pulled, tool-capable), the transcript folder (writable), and the tool
sandbox (``run_command`` confined by Landlock; a warning where the kernel has none). The
exit status is 1 when any check fails.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from voiced import paths

log = logging.getLogger(__name__)

# For a check that failed in a way nobody foresaw.
_UNEXPECTED_HINT = (
    "an unexpected error: run `voiced -vv doctor` for details, and report it if it persists"
)

CHECKS = (
    "config",
    "stt",
    "wake",
    "turn",
    "tts",
    "servers",
    "input",
    "output",
    "echo",
    "ollama",
    "model",
    "transcripts",
    "sandbox",
)


@dataclass
class Outcome:
    ok: bool
    detail: str
    hint: str = ""
    warning: bool = False


class _Failed(Exception):
    """A failed check: what is wrong, and how to fix it (never empty)."""

    def __init__(self, detail: str, hint: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.hint = hint


class _Warning(_Failed):
    """Works, but not as well as it could: reported with a hint, not counted as a failure."""


def _check_stt(settings: Any, context: dict[str, Any]) -> str:
    import numpy as np

    from voiced.speech.stt import SpeechToText

    try:
        stt = SpeechToText.from_settings(settings.stt)
        stt.transcribe(np.zeros(16000, dtype=np.float32))
    except Exception as exc:
        raise _Failed(
            f"{settings.stt.model}: {exc}",
            "check stt.model; `voiced models list` shows what is installed and "
            "`voiced models verify` checks the default model and rebuilds it if damaged",
        ) from None
    return f"{settings.stt.model} loads and runs ({stt.model_path})"


def _check_wake(settings: Any, context: dict[str, Any]) -> str:
    import numpy as np

    from voiced.audio.wakeword import WakeWordDetector, list_models

    wake = settings.wake
    if wake.engine == "text":
        phrases = ", ".join(wake.phrases) or "none: every utterance is for the assistant"
        return f"text engine: Whisper looks for the wake phrase ({phrases})"
    models = [wake.model] + ([wake.stop_model] if wake.stop_model else [])
    thresholds = {wake.model: wake.threshold} if wake.threshold is not None else None
    try:
        with WakeWordDetector(models, thresholds=thresholds) as detector:
            detector.feed(np.zeros(16000, dtype=np.int16))
            infos = detector.models
            threshold = detector.threshold(infos[0].name)
    except Exception as exc:
        try:
            names = ", ".join(info.name for info in list_models())
        except Exception:  # the package itself is broken
            names = "none (reinstall voiced: pip install pymicro-wakeword)"
        raise _Failed(
            str(exc),
            f"set wake.model (and wake.stop_model) to one of: {names} "
            "(`voiced models list` shows them), or use wake.engine: text",
        ) from None
    wake_info = infos[0]
    detail = (
        f'{wake_info.name} ("{wake_info.phrase}") loads and runs '
        f"(threshold {threshold:.2f}, {wake_info.source})"
    )
    if len(infos) > 1:
        return f'{detail}; stop word {infos[1].name} ("{infos[1].phrase}")'
    return f"{detail}; it is also the stop word"


def _check_turn(settings: Any, context: dict[str, Any]) -> str:
    import importlib.metadata

    import numpy as np

    from voiced.audio.end_of_turn import DISTRIBUTION, EndOfTurnError, TurnModel

    vad = settings.vad
    if vad.end_of_turn == "silence":
        return f"after {vad.silence_ms} ms of silence (vad.end_of_turn: silence)"
    try:
        probability = TurnModel().probability(np.zeros(16000, dtype=np.float32))
    except EndOfTurnError as exc:
        raise _Failed(str(exc).split(";")[0], str(exc).split("; ", 1)[-1]) from None
    if not 0.0 <= probability <= 1.0:
        raise _Failed(f"the end-of-turn model gave {probability}", "reinstall pipecat-ai")
    version = importlib.metadata.version(DISTRIBUTION)
    return (
        f"the Smart Turn model (in {DISTRIBUTION} {version}) loads and runs; it judges pauses "
        f"of {vad.turn_pause_ms} ms"
    )


def _check_tts(settings: Any, context: dict[str, Any]) -> str:
    from voiced.speech.tts import TextToSpeech

    try:
        tts = TextToSpeech.from_settings(settings.tts)
        audio = tts.synthesize("Ready.")
    except Exception as exc:
        raise _Failed(
            f"{settings.tts.voice}: {exc}",
            "check tts.voice (a voice name from `voiced models list`, or a path to a Piper "
            ".onnx file with its .onnx.json beside it)",
        ) from None
    if not audio.size:
        raise _Failed(f"{settings.tts.voice} produced no audio", "try another Piper voice")
    context["tts"] = tts
    return f"{tts.name} speaks at {tts.sample_rate} Hz"


_DEVICE_HINT = (
    "run `voiced devices` and set audio.{key} to the right device (index or part of its "
    "name); is PipeWire or PulseAudio running in this session?"
)


def _check_servers(settings: Any, context: dict[str, Any]) -> str:
    from voiced.speech.remote import RemoteError, describe

    wanted = [("speech-to-text", "asr", settings.stt.server)]
    wanted.append(("text-to-speech", "tts", settings.tts.server))
    found = []
    for what, kind, uri in wanted:
        if not uri:
            continue
        try:
            info = describe(uri, what)
        except (RemoteError, ValueError) as exc:
            raise _Warning(
                f"{what} server {uri}: {exc}",
                f"start it (`voiced serve` on that machine) or correct {kind.replace('asr', 'stt')}"
                ".server; until then voiced uses its own models",
            ) from None
        programs = getattr(info, kind)
        if not programs:
            raise _Warning(
                f"{uri} offers no {what}",
                f"point {kind.replace('asr', 'stt')}.server at a Wyoming {what} server",
            )
        found.append(f"{what}: {programs[0].name} at {uri}")
    return "; ".join(found) or "none set (stt.server, tts.server): all speech is done here"


def _check_input(settings: Any, context: dict[str, Any]) -> str:
    from voiced.audio.capture import Capture

    try:
        with Capture(settings.audio) as capture:
            block = capture.read(timeout=3.0)
            name = capture.device.describe() if capture.device else "?"
    except Exception as exc:
        raise _Failed(str(exc), _DEVICE_HINT.format(key="input_device")) from None
    if block is None:
        raise _Failed(
            f"{name} opened but delivered no audio in 3 s",
            _DEVICE_HINT.format(key="input_device"),
        )
    return f"{name} delivers audio"


def _check_output(settings: Any, context: dict[str, Any]) -> str:
    import numpy as np

    from voiced.audio.playback import Player

    rate = context["tts"].sample_rate if "tts" in context else 22050
    try:
        with Player(rate, settings.audio.output_device) as player:
            player.play(np.zeros(rate // 10, dtype=np.float32))
            player.wait(timeout=5.0)
            device = player.device if player.device is not None else "default"
    except Exception as exc:
        raise _Failed(str(exc), _DEVICE_HINT.format(key="output_device")) from None
    return f"{device} plays audio"


_ECHO_HINT = (
    "on speakers, run `voiced audio echo-cancel on` (or set audio.echo_cancel: true) so that "
    "voiced hears you over its own voice; with headphones nothing is needed"
)


def _check_echo(settings: Any, context: dict[str, Any]) -> str:
    from voiced.audio import echo_cancel as ec
    from voiced.commands.audio import describe_route, route_of

    try:
        state = ec.status()
    except ec.SoundServerError as exc:
        raise _Warning(
            f"cannot tell whether voiced hears an echo-cancelled source: {exc}", _ECHO_HINT
        ) from None
    route = route_of(settings, state)
    if state.echo_cancel is None:
        if settings.audio.echo_cancel and route.cancelled:
            return "not loaded yet; `voiced run` loads it at start (audio.echo_cancel: true)"
        raise _Warning(f"no echo canceller: voiced {describe_route(route)}", _ECHO_HINT)
    if not route.cancelled:
        raise _Warning(
            f"the echo canceller is loaded, but voiced {describe_route(route)}",
            "run `voiced audio echo-cancel on` to make the pair the defaults (with "
            "audio.input_device and audio.output_device at null), or set audio.echo_cancel: "
            "true",
        )
    module = state.echo_cancel
    return f"voiced {describe_route(route)} (over {module.source_master} and {module.sink_master})"


def _check_ollama(settings: Any, context: dict[str, Any]) -> str:
    from voiced.brain.assistant import make_client, resolve_host

    host = resolve_host(settings.llm)
    client = make_client(settings.llm)
    try:
        response = client._client.get("/api/version", timeout=5.0)
        response.raise_for_status()
        version = response.json().get("version", "?")
    except Exception as exc:
        raise _Failed(
            f"cannot reach Ollama at {host}: {type(exc).__name__}: {exc}",
            "start it (`ollama serve`, or `systemctl start ollama`), or point llm.host or "
            "OLLAMA_HOST at the server",
        ) from None
    context["client"] = client
    return f"Ollama {version} at {host}"


def _check_model(settings: Any, context: dict[str, Any]) -> str:
    import ollama

    model = settings.llm.model
    client = context.get("client")
    if client is None:
        raise _Failed("skipped: Ollama is not reachable", "fix the Ollama check first")
    try:
        shown = client.show(model)
    except ollama.ResponseError as exc:
        if exc.status_code == 404:
            raise _Failed(f"{model} is not pulled", f"run: ollama pull {model}") from None
        raise _Failed(
            f"Ollama refused to describe {model}: {exc.error}",
            "look at the Ollama server's log (`journalctl -u ollama`), check the spelling of "
            "llm.model (`ollama list` shows the pulled models), or restart Ollama",
        ) from None
    except Exception as exc:
        raise _Failed(
            f"asking Ollama about {model} failed: {exc}",
            "check that llm.host (or OLLAMA_HOST) points at an Ollama server and that it is "
            "up to date (`ollama --version`)",
        ) from None
    capabilities = list(shown.capabilities or [])
    if "tools" not in capabilities:
        raise _Failed(
            f"{model} cannot call tools (capabilities: {', '.join(capabilities) or 'none'})",
            "set llm.model to a tool-capable model such as gpt-oss:20b, or disable tools "
            "(tools.enabled: [])",
        )
    think = settings.llm.think
    if think not in (False, None) and "thinking" not in capabilities:
        raise _Failed(
            f"{model} cannot think, but llm.think is {think!r}",
            "set llm.think: false, or use a reasoning model such as gpt-oss:20b",
        )
    return f"{model} is pulled ({', '.join(capabilities)})"


def _check_transcripts(settings: Any, context: dict[str, Any]) -> str:
    folder = paths.transcripts_dir()
    if not settings.transcripts.enabled:
        return f"transcripts are off (transcripts.enabled: false); {folder} not needed"
    try:
        paths.ensure_private_dir(folder)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-", delete=True) as probe:
            probe.write(b"ok")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        raise _Failed(
            f"{folder} is not writable: {exc}",
            "fix the folder's owner and permissions, free some disk space, or set "
            "VOICED_HOME / XDG_STATE_HOME to a writable place",
        ) from None
    return f"{folder} is writable"


def _check_sandbox(settings: Any, context: dict[str, Any]) -> str:
    if "commands" not in settings.tools.enabled:
        return "run_command is off (tools.enabled); the file tools check every path"
    from voiced.brain.tools.confine import probe

    try:
        return probe()
    except (OSError, subprocess.SubprocessError) as exc:
        raise _Warning(
            f"run_command is confined by voiced's checks only, not by the kernel: {exc}",
            "use a kernel with Landlock (Linux 5.13+, landlock in the lsm= boot parameter), "
            "or leave commands out of tools.enabled",
        ) from None


_RUNNERS: dict[str, tuple[str, Callable[[Any, dict[str, Any]], str]]] = {
    "stt": ("speech model", _check_stt),
    "wake": ("wake word", _check_wake),
    "turn": ("end of turn", _check_turn),
    "tts": ("voice", _check_tts),
    "servers": ("speech servers", _check_servers),
    "input": ("input device", _check_input),
    "output": ("output device", _check_output),
    "echo": ("echo cancel", _check_echo),
    "ollama": ("Ollama", _check_ollama),
    "model": ("LLM model", _check_model),
    "transcripts": ("transcripts", _check_transcripts),
    "sandbox": ("tool sandbox", _check_sandbox),
}


def _report(label: str, outcome: Outcome) -> None:
    mark = "warn" if outcome.warning else "ok  " if outcome.ok else "FAIL"
    click.echo(f"{mark} {label}: {outcome.detail}")
    if (outcome.warning or not outcome.ok) and outcome.hint:
        click.echo(f"     fix: {outcome.hint}")


@click.command()
@click.option(
    "--skip",
    multiple=True,
    type=click.Choice(CHECKS[1:]),
    help="Leave out a check (repeatable), e.g. --skip input --skip output on a server.",
)
@click.pass_obj
def doctor(app: Any, skip: tuple[str, ...]) -> None:
    """Check that everything voiced needs works; print a fix for anything that does not."""
    started = time.monotonic()
    source = str(app.config_path or paths.user_config_path())
    try:
        settings = app.settings()
    except click.UsageError as exc:
        _report(
            "config",
            Outcome(False, str(exc), "correct the file, or check it with `voiced config check`"),
        )
        raise SystemExit(1) from None
    found = app.config_path is not None or paths.user_config_path().is_file()
    _report("config", Outcome(True, source if found else "built-in defaults (no config file)"))
    failures = 0
    context: dict[str, Any] = {}
    for name, (label, runner) in _RUNNERS.items():
        if name in skip:
            continue
        try:
            outcome = Outcome(True, runner(settings, context))
        except _Warning as warned:
            outcome = Outcome(True, warned.detail, warned.hint, warning=True)
        except _Failed as failed:
            outcome = Outcome(False, failed.detail, failed.hint)
        except Exception as exc:  # a check must never crash the doctor
            log.debug("the %s check failed", name, exc_info=True)
            outcome = Outcome(False, f"{type(exc).__name__}: {exc}", _UNEXPECTED_HINT)
        _report(label, outcome)
        failures += not outcome.ok
    elapsed = time.monotonic() - started
    if failures:
        click.echo(f"{failures} check(s) failed ({elapsed:.1f} s)", err=True)
        raise SystemExit(1)
    click.echo(f"all checks passed ({elapsed:.1f} s)", err=True)
