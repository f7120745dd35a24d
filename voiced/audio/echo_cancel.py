"""The sound server's echo canceller, set up for voiced: one named source/sink pair.

PulseAudio and PipeWire (through pipewire-pulse) both ship ``module-echo-cancel`` with
WebRTC's canceller. Loaded over a microphone (the *source master*) and a speaker (the *sink
master*), it creates a sink that plays to the speaker and a source that is the microphone
with whatever went through that sink removed. voiced creates the pair under fixed names,
:data:`SOURCE_NAME` and :data:`SINK_NAME`, so that it can always tell its own module from
anyone else's and never touches another.

This is the only module that talks to the sound server, and it does so through ``pactl``
(in the C locale, its plain text listings, which pipewire-pulse's ``pactl`` gives too).
Streams of this process reach the pair either because it is the server's default (``on``
with ``make_default``) or through ``PULSE_SOURCE`` / ``PULSE_SINK`` (:func:`route_process`),
which libpulse, and so ALSA's pulse plugin that PortAudio uses, honours for streams opened
without a device name.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass

log = logging.getLogger(__name__)

MODULE = "module-echo-cancel"
SOURCE_NAME = "voiced_aec_source"
SINK_NAME = "voiced_aec_sink"
# WebRTC's analog gain control turns the *microphone's* volume down (to 33 % here within
# seconds): voiced must not change a device it did not create. Digital gain control off too:
# with it, "hey jarvis" said over the reply scored 0.0 in one of four places on the cancelled
# source (microWakeWord), without it 0.95-1.0 in all four. PipeWire maps these names onto its
# own keys differently, so they are passed to PulseAudio only.
PULSEAUDIO_AEC_ARGS = "analog_gain_control=0 digital_gain_control=0"
_TIMEOUT_S = 10.0


class SoundServerError(Exception):
    """pactl is missing, no server answers, or the server refused; the message is for users."""


@dataclass(frozen=True)
class EchoCancel:
    """voiced's echo-cancel module as the server lists it."""

    module: int
    source_master: str | None
    sink_master: str | None
    source: str = SOURCE_NAME
    sink: str = SINK_NAME


@dataclass(frozen=True)
class ServerState:
    """What :func:`status` found."""

    server: str
    default_source: str | None
    default_sink: str | None
    echo_cancel: EchoCancel | None

    @property
    def on(self) -> bool:
        return self.echo_cancel is not None


def pactl(*args: str) -> str:
    """Run ``pactl`` and return its stdout; :class:`SoundServerError` with one clear line."""
    exe = shutil.which("pactl")
    if exe is None:
        raise SoundServerError(
            "pactl not found: install it (Debian/Ubuntu: apt install pulseaudio-utils; it "
            "also talks to PipeWire through pipewire-pulse)"
        )
    env = {**os.environ, "LC_ALL": "C"}
    try:
        result = subprocess.run(
            [exe, *args], env=env, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise SoundServerError(
            f"pactl {args[0]} got no answer in {_TIMEOUT_S:.0f} s (is the sound server hung?)"
        ) from None
    if result.returncode != 0:
        message = " ".join(result.stderr.split()) or f"exit status {result.returncode}"
        if "Connection failure" in message or "Connection refused" in message:
            where = os.environ.get("PULSE_SERVER") or "this session"
            raise SoundServerError(
                f"no sound server answers in {where}; start PulseAudio or PipeWire's "
                "pipewire-pulse (systemctl --user start pipewire-pulse)"
            )
        raise SoundServerError(f"pactl {' '.join(args)}: {message}")
    return result.stdout


def _info() -> dict[str, str]:
    info = {}
    for line in pactl("info").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


def _names(kind: str) -> list[str]:
    """Names of the server's sources or sinks (``kind``: ``sources`` / ``sinks``)."""
    names = []
    for line in pactl("list", "short", kind).splitlines():
        fields = line.split("\t")
        if len(fields) > 1:
            names.append(fields[1])
    return names


def _module_args(argument: str) -> dict[str, str]:
    try:
        words = shlex.split(argument)
    except ValueError:  # unbalanced quotes in someone else's module: not ours
        return {}
    return dict(word.partition("=")[::2] for word in words if "=" in word)


def find_ours() -> list[EchoCancel]:
    """Every echo-cancel module loaded with voiced's source and sink names."""
    found = []
    for line in pactl("list", "short", "modules").splitlines():
        fields = line.split("\t")
        if len(fields) < 3 or fields[1] != MODULE or not fields[0].strip().isdigit():
            continue
        args = _module_args(fields[2])
        if args.get("source_name") == SOURCE_NAME and args.get("sink_name") == SINK_NAME:
            found.append(
                EchoCancel(int(fields[0]), args.get("source_master"), args.get("sink_master"))
            )
    return found


def status() -> ServerState:
    """Whether voiced's pair is loaded, over what, and what the server's defaults are."""
    info = _info()
    ours = find_ours()
    return ServerState(
        server=info.get("Server Name", "?"),
        default_source=info.get("Default Source") or None,
        default_sink=info.get("Default Sink") or None,
        echo_cancel=ours[0] if ours else None,
    )


def enable(
    mic: str | None = None, speaker: str | None = None, *, make_default: bool = True
) -> tuple[EchoCancel, bool]:
    """Load voiced's echo canceller over ``mic`` and ``speaker`` unless it is loaded already.

    ``mic`` / ``speaker`` are source / sink names; None means the current default. Returns
    the module and whether it was created now. A module of ours over other masters than
    the ones named is replaced. With ``make_default`` the pair becomes the server's default
    source and sink (:func:`disable` gives the defaults back to the masters).
    """
    info = _info()
    ours = find_ours()
    current = ours[0] if ours else None
    wanted_ok = current is not None and (
        (mic is None or mic == current.source_master)
        and (speaker is None or speaker == current.sink_master)
    )
    if current is not None and not wanted_ok:
        log.info(
            "replacing the echo canceller over %s/%s", current.source_master, current.sink_master
        )
        for module in ours:
            pactl("unload-module", str(module.module))
        current = None
    created = False
    if current is None:
        current = _load(info, mic, speaker)
        created = True
    if make_default:
        if info.get("Default Source") != SOURCE_NAME:
            pactl("set-default-source", SOURCE_NAME)
        if info.get("Default Sink") != SINK_NAME:
            pactl("set-default-sink", SINK_NAME)
    return current, created


def _load(info: dict[str, str], mic: str | None, speaker: str | None) -> EchoCancel:
    sources, sinks = _names("sources"), _names("sinks")
    source_master = mic or info.get("Default Source") or None
    sink_master = speaker or info.get("Default Sink") or None
    if not source_master or source_master not in sources:
        raise SoundServerError(
            f"no source (microphone) named {source_master!r}; sources: "
            f"{', '.join(n for n in sources if n != SOURCE_NAME) or 'none'}"
        )
    if not sink_master or sink_master not in sinks:
        raise SoundServerError(
            f"no sink (speaker) named {sink_master!r}; sinks: "
            f"{', '.join(n for n in sinks if n != SINK_NAME) or 'none'}"
        )
    if source_master in (SOURCE_NAME, f"{SINK_NAME}.monitor") or sink_master == SINK_NAME:
        raise SoundServerError("the echo canceller cannot be stacked on its own source or sink")
    args = [
        "aec_method=webrtc",
        f"source_master={source_master}",
        f"sink_master={sink_master}",
        f"source_name={SOURCE_NAME}",
        f"sink_name={SINK_NAME}",
    ]
    if "PipeWire" not in info.get("Server Name", ""):
        args.append(f'aec_args="{PULSEAUDIO_AEC_ARGS}"')
    try:
        output = pactl("load-module", MODULE, *args)
    except SoundServerError as exc:
        raise SoundServerError(
            f"the sound server could not load {MODULE} over {source_master} and "
            f"{sink_master} ({exc}); is it built with WebRTC echo cancellation?"
        ) from None
    index = output.strip()
    log.info("loaded %s (module %s) over %s and %s", MODULE, index, source_master, sink_master)
    return EchoCancel(int(index) if index.isdigit() else -1, source_master, sink_master)


def disable() -> list[EchoCancel]:
    """Unload voiced's echo canceller(s), and only those; returns what was unloaded.

    A default source or sink that was the cancelled one goes back to its master first, so
    the server does not pick some other device on its own.
    """
    ours = find_ours()
    if not ours:
        return []
    info = _info()
    first = ours[0]
    sources, sinks = _names("sources"), _names("sinks")
    if info.get("Default Source") == SOURCE_NAME and first.source_master in sources:
        pactl("set-default-source", first.source_master)
    if info.get("Default Sink") == SINK_NAME and first.sink_master in sinks:
        pactl("set-default-sink", first.sink_master)
    for module in ours:
        pactl("unload-module", str(module.module))
        log.info("unloaded %s (module %d)", MODULE, module.module)
    return ours


def route_process() -> None:
    """Send this process's default-device streams through voiced's pair (via libpulse).

    Call before PortAudio initialises. Only streams opened on the default device (or ALSA's
    ``pulse`` device) follow; a device named in the config does not.
    """
    os.environ["PULSE_SOURCE"] = SOURCE_NAME
    os.environ["PULSE_SINK"] = SINK_NAME


def effective_source(default_source: str | None) -> str | None:
    """The source a default-device stream of this process records from."""
    return os.environ.get("PULSE_SOURCE") or default_source


def effective_sink(default_sink: str | None) -> str | None:
    """The sink a default-device stream of this process plays to."""
    return os.environ.get("PULSE_SINK") or default_sink


# PortAudio devices (ALSA's) that go to the sound server's default source and sink.
SERVER_DEVICES = ("default", "pulse", "pipewire", "sysdefault")


@dataclass(frozen=True)
class Route:
    """Where voiced's streams go on the sound server; None: past it, or cannot tell."""

    source: str | None
    sink: str | None

    @property
    def cancelled(self) -> bool:
        """Listening on the cancelled source and playing through the cancelled sink."""
        return self.source == SOURCE_NAME and self.sink == SINK_NAME


def voiced_route(
    input_device: str | None,
    output_device: str | None,
    state: ServerState,
    *,
    echo_cancel_key: bool,
) -> Route:
    """The source and sink ``voiced run`` uses, given its devices' PortAudio names.

    ``input_device`` / ``output_device``: the name of the PortAudio device the config picks
    (None for PortAudio's default). ``echo_cancel_key``: ``audio.echo_cancel``, with which
    the daemon routes its default-device streams to the pair itself.
    """

    def through_server(name: str | None) -> bool:
        return name is None or name.strip().casefold() in SERVER_DEVICES

    if echo_cancel_key:
        source, sink = SOURCE_NAME, SINK_NAME
    else:
        source = effective_source(state.default_source)
        sink = effective_sink(state.default_sink)
    return Route(
        source if through_server(input_device) else None,
        sink if through_server(output_device) else None,
    )


def ensure_routed() -> bool:
    """For ``audio.echo_cancel``: load the pair if missing and route this process to it.

    The defaults are left alone. A sound server without the module (or without pactl) is
    logged as a warning and voiced goes on without cancellation; returns whether it is on.
    """
    try:
        module, created = enable(make_default=False)
    except SoundServerError as exc:
        log.warning("echo cancellation is unavailable (audio.echo_cancel): %s", exc)
        return False
    route_process()
    log.info(
        "echo cancellation %s: recording from %s (over %s), playing to %s (over %s)",
        "on" if created else "already on",
        SOURCE_NAME,
        module.source_master,
        SINK_NAME,
        module.sink_master,
    )
    return True
