"""``voiced chat``: a text conversation with the assistant, on the same engine and tools.

Each stdin line is one turn; the reply streams to stdout as it is generated. Piped input works
(``echo "what time is it" | voiced chat``): one turn per line, exit 0 when every turn got an
answer. ``--say`` also speaks each reply (Piper, sentence by sentence, as the text streams in).
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

import click

from voiced.brain.assistant import (
    LOADING_SENTENCE,
    Assistant,
    TurnError,
    TurnResult,
    resolve_host,
)
from voiced.brain.tools.registry import ConfirmationRequest

log = logging.getLogger(__name__)

# Errors after which no further turn can work: stop at once.
FATAL = {TurnError.UNREACHABLE, TurnError.MODEL_MISSING, TurnError.BAD_REQUEST}


def _hint(result: TurnResult, model: str, host: str) -> str:
    if result.error is TurnError.UNREACHABLE:
        return (
            f"cannot reach Ollama at {host}. Start it (`ollama serve`), or point llm.host "
            "or OLLAMA_HOST at it."
        )
    if result.error is TurnError.MODEL_MISSING:
        return f"model {model} is not on the Ollama server at {host}; run: ollama pull {model}"
    message = result.error_message or "the turn failed"
    return f"{message} ({result.error_detail})" if result.error_detail else message


class _Voice:
    """The ``--say`` output: Piper through the default (or configured) output device."""

    def __init__(self, settings: Any) -> None:
        from voiced.audio.playback import Player
        from voiced.speech.speaker import Speaker
        from voiced.speech.tts import TextToSpeech

        self.tts = TextToSpeech.from_settings(settings.tts)
        self.player = Player(self.tts.sample_rate, settings.audio.output_device)
        self.speaker = Speaker(self.tts, self.player)

    def close(self) -> None:
        self.speaker.close()
        self.player.close()


@click.command()
@click.option("--model", help="Ollama model (default: llm.model).")
@click.option("--host", help="Ollama server URL (default: llm.host, $OLLAMA_HOST).")
@click.option(
    "--think", type=click.Choice(["low", "medium", "high"]), help="Reasoning effort (llm.think)."
)
@click.option("--no-tools", is_flag=True, help="Chat without tools.")
@click.option("--say", is_flag=True, help="Also speak each reply aloud.")
@click.pass_obj
def chat(
    app: Any, model: str | None, host: str | None, think: str | None, no_tools: bool, say: bool
) -> None:
    """Text chat with the assistant: one turn per input line, replies streamed to stdout.

    Interactive on a terminal (/reset forgets the conversation, Ctrl-D quits); with piped
    input, each line is a turn and the exit status is 0 when every turn was answered.
    Tools that need confirmation ask on the terminal and are declined when input is piped.
    """
    settings = app.settings(**{"llm.model": model, "llm.host": host, "llm.think": think})
    stdin = sys.stdin
    interactive = stdin.isatty()

    def confirm(request: ConfirmationRequest) -> bool:
        if not interactive:
            click.echo(f"declined {request.tool}: confirmation needs a terminal", err=True)
            return False
        return click.confirm(request.question, default=False, err=True)

    registry = None
    if not no_tools:
        from voiced.audio.capture import list_devices
        from voiced.brain.tools.policy import build_registry

        registry = build_registry(
            settings, confirm=confirm, source="chat", audio_devices=list_devices
        )
    assistant = Assistant(settings.llm, registry)
    host_url = resolve_host(settings.llm)
    voice: _Voice | None = None
    if say:
        from voiced.audio.playback import PlaybackError
        from voiced.speech.tts import VoiceError

        try:
            voice = _Voice(settings)
        except (VoiceError, PlaybackError) as exc:
            raise click.ClickException(f"--say: {exc}") from None
    if interactive:
        click.echo(
            f"voiced chat with {settings.llm.model} at {host_url} (/reset forgets, Ctrl-D quits)",
            err=True,
        )
    failed = False
    try:
        while True:
            if interactive:
                click.echo("> ", nl=False, err=True)
            line = stdin.readline()
            if not line:
                break
            text = line.strip()
            if not text:
                continue
            if text in {"/quit", "/exit"}:
                break
            if text == "/reset":
                assistant.reset()
                continue
            try:
                result = _turn(assistant, text, voice)
                if result.error is not None:
                    click.echo(f"voiced: {_hint(result, settings.llm.model, host_url)}", err=True)
                    if voice is not None and result.error_message:
                        voice.speaker.say(result.error_message)
                        voice.speaker.wait()
            except Exception as exc:
                if voice is None:
                    raise
                # Speech failed (device gone, voice broken): the text was shown; stop here.
                raise click.ClickException(f"--say: cannot speak: {exc}") from None
            if result.error is not None:
                if result.error in FATAL:
                    raise SystemExit(1)
                failed = True
    finally:
        if voice is not None:
            voice.close()
    if failed:
        raise SystemExit(1)


def _turn(assistant: Assistant, text: str, voice: _Voice | None) -> TurnResult:
    """One turn on a worker thread, so that Ctrl-C interrupts the reply, not the program."""
    cancel = threading.Event()
    out = sys.stdout
    box: dict[str, TurnResult] = {}

    def on_text(piece: str) -> None:
        out.write(piece)
        out.flush()
        if voice is not None:
            voice.speaker.feed(piece)

    def on_tools() -> None:
        if voice is not None:
            voice.speaker.finish()  # say "Let me check." while the tools run

    def on_loading() -> None:
        # Ollama sends nothing while it loads the model: the first turn can be silent a while.
        click.echo(f"voiced: {LOADING_SENTENCE[0].lower()}{LOADING_SENTENCE[1:]}", err=True)
        if voice is not None:
            voice.speaker.say(LOADING_SENTENCE)

    worker = threading.Thread(
        target=lambda: box.setdefault(
            "result",
            assistant.ask(text, on_text, cancel=cancel, on_tools=on_tools, on_loading=on_loading),
        ),
        name="voiced-chat-turn",
        daemon=True,
    )
    worker.start()

    def end_line() -> None:
        if "result" in box and box["result"].text and not box["result"].text.endswith("\n"):
            out.write("\n")
            out.flush()

    try:
        while worker.is_alive():
            worker.join(0.1)
        end_line()
        if voice is not None:
            voice.speaker.wait()
    except KeyboardInterrupt:
        cancel.set()
        heard = voice.speaker.stop().text if voice is not None else None
        worker.join()
        end_line()
        if heard is not None:
            assistant.clip_last_reply(heard)
        click.echo(" [interrupted]", err=True)
    result = box["result"]
    log.debug("turn: %s", result)
    return result
