"""``voiced llm info`` and ``voiced llm create``: the Ollama side of the assistant.

``info`` shows what ``ollama show --verbose`` shows, through the Python client: architecture,
size, context and embedding length, attention and KV heads, sliding window, experts,
quantization, capabilities and licence. ``create`` is ``ollama create`` from a Modelfile that
may only use FROM, SYSTEM and PARAMETER: rewriting the chat TEMPLATE (as some guides do)
breaks gpt-oss's harmony format, and tools go through the API's ``tools`` parameter anyway.
"""

from __future__ import annotations

import json
import re
import sys
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import httpx
import ollama
from ollama import Options

from voiced.brain.assistant import make_client, resolve_host
from voiced.config import LlmSettings

DEFAULT_NAME = "voiced"

# model_info key suffixes (after "<architecture>.") and how ollama show labels them.
_MODEL_ROWS = [
    ("context_length", "context length"),
    ("embedding_length", "embedding length"),
    ("block_count", "layers"),
    ("attention.head_count", "attention heads"),
    ("attention.head_count_kv", "KV heads"),
    ("attention.sliding_window", "sliding window"),
    ("expert_count", "experts"),
    ("expert_used_count", "experts used"),
]


def _fail(message: str) -> typing.NoReturn:
    click.echo(f"error: {message}", err=True)
    raise SystemExit(1)


def _explain(exc: Exception, model: str, host: str) -> str:
    """One clear line for a failed call to the server."""
    if isinstance(exc, (ConnectionError, httpx.ConnectError)):
        return (
            f"cannot reach Ollama at {host}: is it running? Start it with `ollama serve`, or "
            f"point llm.host or OLLAMA_HOST at it. Then pull the model: ollama pull {model}"
        )
    if isinstance(exc, ollama.ResponseError) and exc.status_code == 404:
        return (
            f"model {model} is not pulled on the Ollama server at {host}; run: ollama pull {model}"
        )
    if isinstance(exc, ollama.ResponseError):
        return f"Ollama at {host} answered: {exc.error}"
    if isinstance(exc, httpx.TimeoutException):
        return f"Ollama at {host} did not answer in time"
    return f"talking to Ollama at {host} failed: {type(exc).__name__}: {exc}"


def _server_version(client: ollama.Client) -> str | None:
    # The 0.6 client has no version() call; its httpx client already has the base URL.
    try:
        response = client._client.get("/api/version")
        response.raise_for_status()
        return str(response.json().get("version"))
    except Exception:
        return None


def license_name(text: str | None) -> str:
    """``Apache License\\nVersion 2.0, ...`` -> ``Apache License, Version 2.0``."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return "unknown"
    name = lines[0]
    if len(lines) > 1 and lines[1].lower().startswith("version"):
        name = f"{name}, {lines[1].split(',')[0]}"
    return name


def describe(show: Any, model: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """The sections of ``ollama show --verbose`` as (title, [(label, value)])."""
    info = dict(show.modelinfo or {})
    details = show.details
    architecture = str(info.get("general.architecture") or (details.family if details else ""))
    rows: list[tuple[str, str]] = [("architecture", architecture or "unknown")]
    parameter_size = details.parameter_size if details else None
    count = info.get("general.parameter_count")
    if parameter_size or count:
        value = parameter_size or ""
        if count:
            value = f"{value} ({count:,})".strip()
        rows.append(("parameters", value))
    for suffix, label in _MODEL_ROWS:
        value = info.get(f"{architecture}.{suffix}")
        if value is not None:
            rows.append((label, str(value)))
    if details and details.quantization_level:
        rows.append(("quantization", details.quantization_level))
    sections = [("Model", rows)]
    capabilities = list(show.capabilities or [])
    cap_rows = [(cap, "") for cap in capabilities]
    if "thinking" in capabilities and architecture == "gptoss":
        cap_rows.append(("thinking levels", "low, medium, high (cannot be turned off)"))
    sections.append(("Capabilities", cap_rows))
    if show.parameters:
        params = []
        for line in show.parameters.splitlines():
            key, _, value = line.strip().partition(" ")
            if key:
                params.append((key, value.strip()))
        sections.append(("Parameters", params))
    sections.append(("License", [(license_name(show.license), "")]))
    return sections


@click.group()
def llm() -> None:
    """Inspect and set up the Ollama model."""


@llm.command()
@click.option("--model", help="Model to describe (default: llm.model).")
@click.option("--host", help="Ollama server URL (default: llm.host, $OLLAMA_HOST).")
@click.option("--json", "as_json", is_flag=True, help="Print Ollama's /api/show answer as JSON.")
@click.pass_obj
def info(app: Any, model: str | None, host: str | None, as_json: bool) -> None:
    """Show the model's architecture, size, context, experts, capabilities and licence."""
    settings = app.settings(**{"llm.model": model, "llm.host": host}).llm
    host_url = resolve_host(settings)
    client = make_client(settings)
    try:
        show = client.show(settings.model)
    except Exception as exc:
        _fail(_explain(exc, settings.model, host_url))
    if as_json:
        payload = show.model_dump(mode="json", by_alias=True, exclude_none=True)
        click.echo(json.dumps(payload, indent=2))
        return
    version = _server_version(client)
    served = f" (Ollama {version})" if version else ""
    click.echo(f"{settings.model} on {host_url}{served}")
    for title, rows in describe(show, settings.model):
        click.echo(f"\n  {title}")
        width = max((len(label) for label, _ in rows), default=0) + 4
        for label, value in rows:
            click.echo(f"    {label:<{width}}{value}".rstrip())
    capabilities = set(show.capabilities or [])
    if "tools" not in capabilities:
        click.echo(
            f"\nwarning: {settings.model} cannot call tools; voiced's tools need it", err=True
        )
    click.echo(f"\n  voiced uses think={settings.think!s}, keep_alive={settings.keep_alive!s}")


# --------------------------------------------------------------------------- Modelfiles


class ModelfileError(ValueError):
    """A Modelfile voiced will not send; the message names the line and the reason."""


@dataclass
class Modelfile:
    """The parts of a Modelfile voiced uses: FROM, SYSTEM, PARAMETER."""

    from_: str
    system: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    def render(self) -> str:
        lines = [f"FROM {self.from_}"]
        for key, value in self.parameters.items():
            for item in value if isinstance(value, list) else [value]:
                lines.append(f"PARAMETER {key} {_format_value(item)}")
        if self.system:
            lines.append(f'SYSTEM """{self.system}"""')
        return "\n".join(lines) + "\n"


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and (not value or any(c.isspace() for c in value)):
        return json.dumps(value)
    return str(value)


def _parameter_type(name: str) -> Any:
    if name not in Options.model_fields:
        raise KeyError(name)
    annotation = Options.model_fields[name].annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def _convert(name: str, raw: str) -> Any:
    kind = _parameter_type(name)
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = json.loads(text)
    if typing.get_origin(kind) is not None:  # Sequence[str]: "stop", repeatable
        return text
    if kind is bool:
        if text.lower() not in {"true", "false"}:
            raise ValueError(f"{name} must be true or false")
        return text.lower() == "true"
    if kind is int:
        return int(text)
    if kind is float:
        return float(text)
    return text


def parse_modelfile(text: str) -> Modelfile:
    """Parse FROM, SYSTEM (one line or triple-quoted) and PARAMETER lines; reject the rest."""
    from_: str | None = None
    system: str | None = None
    parameters: dict[str, Any] = {}
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        number = index + 1
        line = lines[index].strip()
        index += 1
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        rest = rest.strip()
        if rest.startswith('"""'):
            body = rest[3:]
            while '"""' not in body:
                if index >= len(lines):
                    raise ModelfileError(f'line {number}: unterminated """ string')
                body += "\n" + lines[index]
                index += 1
            body, _, trailing = body.partition('"""')
            if trailing.strip():
                raise ModelfileError(f'line {number}: text after the closing """')
            rest = body.strip("\n")
        if instruction == "FROM":
            if from_ is not None:
                raise ModelfileError(f"line {number}: FROM given twice")
            if not rest:
                raise ModelfileError(f"line {number}: FROM needs a model name")
            from_ = rest
        elif instruction == "SYSTEM":
            system = rest
        elif instruction == "PARAMETER":
            name, _, value = rest.partition(" ")
            try:
                converted = _convert(name, value)
            except KeyError:
                raise ModelfileError(f"line {number}: unknown parameter {name!r}") from None
            except ValueError as exc:
                raise ModelfileError(f"line {number}: bad value for {name}: {exc}") from None
            if name == "stop":
                parameters.setdefault("stop", []).append(converted)
            else:
                parameters[name] = converted
        elif instruction == "TEMPLATE":
            raise ModelfileError(
                f"line {number}: TEMPLATE is not allowed: replacing the chat template breaks "
                "gpt-oss's harmony format (tools go through the API, not the template)"
            )
        elif re.fullmatch(r"[A-Z]+", instruction):
            raise ModelfileError(
                f"line {number}: {instruction} is not supported here; use FROM, SYSTEM and "
                "PARAMETER only"
            )
        else:
            raise ModelfileError(f"line {number}: not a Modelfile instruction: {line[:40]!r}")
    if from_ is None:
        raise ModelfileError("no FROM line: say which model to build on, e.g. FROM gpt-oss:20b")
    return Modelfile(from_=from_, system=system, parameters=parameters)


def modelfile_from_settings(settings: LlmSettings) -> Modelfile:
    """The Modelfile for the ``llm`` config: its model, options and system prompt.

    A baked-in prompt cannot know the date, so the sentence with ``{date}`` is left out (the
    assistant sends its own dated system prompt on every turn anyway).
    """
    sentences = re.split(r"(?<=[.!?])\s+", settings.system_prompt.strip())
    system = " ".join(s for s in sentences if "{date}" not in s)
    parameters: dict[str, Any] = {}
    for name, value in settings.options.items():
        try:
            parameters[name] = _convert(name, _format_value(value))
        except (KeyError, ValueError):
            raise ModelfileError(f"llm.options.{name} is not a Modelfile parameter") from None
    return Modelfile(from_=settings.model, system=system or None, parameters=parameters)


def _show_progress(progress: Iterator[Any], base: str) -> None:
    """Ollama's create progress: each new status once, a pull as one progress bar.

    When the base model is not there, Ollama pulls it and reports every layer's download
    many times a second; those lines feed one tqdm bar over all layers.
    """
    from tqdm import tqdm

    bar: Any = None
    totals: dict[str, int] = {}
    done: dict[str, int] = {}
    last = None
    try:
        for update in progress:
            if update.digest and update.total:
                if bar is None:
                    bar = tqdm(
                        desc=f"pulling {base}",
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        file=sys.stderr,
                    )
                totals[update.digest] = update.total
                done[update.digest] = update.completed or 0
                bar.total = sum(totals.values())
                bar.update(sum(done.values()) - bar.n)
                continue
            if update.status and update.status != last:
                if bar is not None:
                    bar.close()
                    bar = None
                    totals.clear()
                    done.clear()
                last = update.status
                click.echo(update.status, err=True)
    finally:
        if bar is not None:
            bar.close()


@llm.command()
@click.argument("name", default=DEFAULT_NAME)
@click.option(
    "-f",
    "--file",
    "modelfile_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Modelfile (FROM, SYSTEM, PARAMETER only). Default: built from the llm config.",
)
@click.option("--host", help="Ollama server URL (default: llm.host, $OLLAMA_HOST).")
@click.option("--print", "print_only", is_flag=True, help="Print the Modelfile and exit.")
@click.pass_obj
def create(
    app: Any, name: str, modelfile_path: Path | None, host: str | None, print_only: bool
) -> None:
    """Create Ollama model NAME (default: voiced), like `ollama create NAME -f Modelfile`."""
    settings = app.settings(**{"llm.host": host}).llm
    try:
        if modelfile_path is not None:
            try:
                text = modelfile_path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                _fail(f"{modelfile_path}: cannot read: {exc}")
            spec = parse_modelfile(text)
        else:
            spec = modelfile_from_settings(settings)
    except ModelfileError as exc:
        _fail(f"{modelfile_path or 'llm config'}: {exc}")
    if print_only:
        click.echo(spec.render(), nl=False)
        return
    host_url = resolve_host(settings)
    client = make_client(settings)
    try:
        _show_progress(
            client.create(
                model=name,
                from_=spec.from_,
                system=spec.system,
                parameters=spec.parameters or None,
                stream=True,
            ),
            spec.from_,
        )
    except Exception as exc:
        if isinstance(exc, ollama.ResponseError) and "file does not exist" in exc.error:
            # Ollama pulls a base model it does not have; this means the registry has none.
            _fail(
                f"{spec.from_} is not on {host_url}, and Ollama's registry has no model of "
                "that name: check the FROM name (`ollama list` shows the models there)"
            )
        _fail(_explain(exc, spec.from_, host_url))
    click.echo(f"created {name} from {spec.from_}")
    click.echo(
        f"use it with `voiced chat --model {name}` or `llm: {{model: {name}}}` in the config"
    )
