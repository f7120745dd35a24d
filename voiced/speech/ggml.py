"""Convert a CTranslate2 Whisper model into a whisper.cpp ggml file, with numpy only.

The source is a folder as faster-whisper uses it (``model.bin``, ``vocabulary.txt``); the output is
whisper.cpp's legacy ggml layout, the one ``models/convert-pt-to-ggml.py`` writes:

1. magic and eleven int32 hyper-parameters,
2. the mel filterbank (float32),
3. the text tokens as raw bytes (whisper.cpp adds the special tokens itself),
4. the tensors, under openai-whisper's names and in its state-dict order.

Matrices are stored as float16 (or q8_0 / q4_0 blocks, as whisper.cpp's ``quantize`` example
would write them); norms, biases and positional tables as float32. The output only depends on
the source files, so converting twice gives the same bytes.
"""

from __future__ import annotations

import logging
import math
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np

log = logging.getLogger(__name__)

FType = Literal["f16", "q8_0", "q4_0"]

GGML_MAGIC = 0x67676D6C
GGML_QNT_VERSION = 2
GGML_QNT_VERSION_FACTOR = 1000

# ggml_type ids of the tensor payloads and ggml_ftype ids of the whole file.
_GGML_TYPE_F32 = 0
_GGML_TYPE_F16 = 1
_GGML_TYPE_Q4_0 = 2
_GGML_TYPE_Q8_0 = 8
_FILE_FTYPES = {"f16": 1, "q4_0": 2, "q8_0": 7}
_TENSOR_TYPES = {"f16": _GGML_TYPE_F16, "q4_0": _GGML_TYPE_Q4_0, "q8_0": _GGML_TYPE_Q8_0}
_QUANT_BLOCK = 32

CT2_BINARY_VERSION = 6
CT2_SPEC_NAME = "WhisperSpec"
# CTranslate2's DataType enum, in order; only the float types can be converted.
_CT2_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_CT2_GELU = 3

SAMPLE_RATE = 16000
N_FFT = 400

# whisper.cpp hard-codes the special token ids: <|endoftext|> is 50256 for English-only
# vocabularies (51864 tokens) and one further for multilingual ones (51865 and more).
_EOT_ENGLISH = 50256
_N_VOCAB_ENGLISH = 51864
_N_VOCAB_MULTILINGUAL = 51865


class ConversionError(Exception):
    """The source model is missing, damaged or of a kind this converter does not handle."""


@dataclass(frozen=True)
class _Variable:
    name: str
    shape: tuple[int, ...]
    dtype: str
    offset: int
    nbytes: int


@dataclass(frozen=True)
class HParams:
    n_vocab: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int
    n_mels: int

    def as_tuple(self) -> tuple[int, ...]:
        return (
            self.n_vocab,
            self.n_audio_ctx,
            self.n_audio_state,
            self.n_audio_head,
            self.n_audio_layer,
            self.n_text_ctx,
            self.n_text_state,
            self.n_text_head,
            self.n_text_layer,
            self.n_mels,
        )


class _CT2Reader:
    """Index of a CTranslate2 ``model.bin``; tensor data is read on demand, one at a time."""

    def __init__(self, path: Path, file: BinaryIO) -> None:
        self.path = path
        self._file = file
        self._size = path.stat().st_size
        self.variables: dict[str, _Variable] = {}
        self.aliases: dict[str, str] = {}
        self._parse()

    # --- header parsing -------------------------------------------------------------------
    def error(self, reason: str) -> ConversionError:
        return ConversionError(f"{self.path}: not a usable CTranslate2 Whisper model: {reason}")

    def _take(self, n: int, what: str) -> bytes:
        data = self._file.read(n)
        if len(data) != n:
            raise self.error(f"file ends early (truncated?) while reading {what}")
        return data

    def _unpack(self, fmt: str, what: str) -> int:
        return struct.unpack(fmt, self._take(struct.calcsize(fmt), what))[0]

    def _string(self, what: str) -> str:
        length = self._unpack("<H", what)
        raw = self._take(length, what)
        if length == 0 or raw[-1] != 0:
            raise self.error(f"malformed string in {what}")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.error(f"malformed string in {what}") from exc

    def _parse(self) -> None:
        version = self._unpack("<I", "the format version")
        if version != CT2_BINARY_VERSION:
            raise self.error(
                f"unsupported CTranslate2 binary version {version} "
                f"(supported: {CT2_BINARY_VERSION})"
            )
        spec = self._string("the model spec name")
        if spec != CT2_SPEC_NAME:
            raise self.error(f"model spec is {spec!r}, expected {CT2_SPEC_NAME!r}")
        self.revision = self._unpack("<I", "the spec revision")
        count = self._unpack("<I", "the variable count")
        if count == 0 or count > 100_000:
            raise self.error(f"implausible variable count {count}")
        for index in range(count):
            what = f"variable {index + 1} of {count}"
            name = self._string(what)
            rank = self._unpack("<B", what)
            if rank > 8:
                raise self.error(f"variable {name!r} has implausible rank {rank}")
            shape = tuple(self._unpack("<I", what) for _ in range(rank))
            type_id = self._unpack("<B", what)
            if type_id >= len(_CT2_DTYPES):
                raise self.error(f"variable {name!r} has unknown data type id {type_id}")
            dtype = _CT2_DTYPES[type_id]
            nbytes = self._unpack("<I", what)
            expected = math.prod(shape) * np.dtype(_np_dtype(dtype)).itemsize
            if nbytes != expected:
                raise self.error(
                    f"variable {name!r} {list(shape)} {dtype} declares {nbytes} bytes, "
                    f"expected {expected}"
                )
            offset = self._file.tell()
            if offset + nbytes > self._size:
                raise self.error(f"file ends inside variable {name!r} (truncated?)")
            self._file.seek(nbytes, 1)
            self.variables[name] = _Variable(name, shape, dtype, offset, nbytes)
        alias_count = self._unpack("<I", "the alias count")
        for index in range(alias_count):
            what = f"alias {index + 1} of {alias_count}"
            alias, target = self._string(what), self._string(what)
            if target not in self.variables:
                raise self.error(f"alias {alias!r} points to missing variable {target!r}")
            self.aliases[alias] = target
        if self._file.tell() != self._size:
            raise self.error(f"{self._size - self._file.tell()} unexpected bytes after the end")

    # --- access -----------------------------------------------------------------------------
    def variable(self, name: str) -> _Variable:
        name = self.aliases.get(name, name)
        try:
            return self.variables[name]
        except KeyError:
            raise self.error(f"missing variable {name!r}") from None

    def has(self, name: str) -> bool:
        return self.aliases.get(name, name) in self.variables

    def shape(
        self, name: str, expected: tuple[int, ...] | None = None, *, rank: int | None = None
    ) -> tuple[int, ...]:
        var = self.variable(name)
        if rank is not None and len(var.shape) != rank:
            raise self.error(f"variable {name!r} has shape {list(var.shape)}, expected rank {rank}")
        if expected is not None and var.shape != expected:
            raise self.error(
                f"variable {name!r} has shape {list(var.shape)}, expected {list(expected)}"
            )
        return var.shape

    def array(self, name: str, expected: tuple[int, ...]) -> np.ndarray:
        """Read a float tensor of the given shape, as float16 or float32 (whichever is stored)."""
        var = self.variable(name)
        self.shape(name, expected)
        if var.dtype not in ("float16", "float32"):
            raise self.error(
                f"variable {name!r} is {var.dtype}; only float16/float32 models can be converted "
                "(quantized CTranslate2 models are not supported)"
            )
        self._file.seek(var.offset)
        data = self._take(var.nbytes, f"variable {name!r}")
        return np.frombuffer(data, dtype=_np_dtype(var.dtype)).reshape(var.shape)

    def scalar(self, name: str) -> int:
        var = self.variable(name)
        if var.shape != () or var.dtype not in ("int8", "int16", "int32"):
            raise self.error(f"variable {name!r} should be an integer scalar")
        self._file.seek(var.offset)
        data = self._take(var.nbytes, f"variable {name!r}")
        return int(np.frombuffer(data, dtype=_np_dtype(var.dtype))[0])


def _np_dtype(ct2_dtype: str) -> np.dtype:
    if ct2_dtype == "bfloat16":
        return np.dtype("<u2")  # only used for sizes; bfloat16 data is refused on read
    return np.dtype(ct2_dtype).newbyteorder("<")


# --- hyper-parameters ------------------------------------------------------------------------


def _count_layers(reader: _CT2Reader, prefix: str) -> int:
    pattern = re.compile(rf"^{prefix}/layer_(\d+)/")
    indices = {int(m.group(1)) for name in reader.variables if (m := pattern.match(name))}
    if not indices:
        raise reader.error(f"no {prefix} layers found")
    if indices != set(range(len(indices))):
        raise reader.error(f"{prefix} layers are not numbered 0..{len(indices) - 1}")
    return len(indices)


def _read_hparams(reader: _CT2Reader) -> HParams:
    n_vocab, n_text_state = reader.shape("decoder/embeddings/weight", rank=2)
    n_text_ctx, _ = reader.shape("decoder/position_encodings/encodings", rank=2)
    n_audio_ctx, n_audio_state = reader.shape("encoder/position_encodings/encodings", rank=2)
    conv1 = reader.shape("encoder/conv1/weight", rank=3)
    if conv1[0] != n_audio_state or conv1[2] != 3:
        raise reader.error(f"encoder/conv1/weight has unexpected shape {list(conv1)}")
    hparams = HParams(
        n_vocab=n_vocab,
        n_audio_ctx=n_audio_ctx,
        n_audio_state=n_audio_state,
        n_audio_head=reader.scalar("encoder/num_heads"),
        n_audio_layer=_count_layers(reader, "encoder"),
        n_text_ctx=n_text_ctx,
        n_text_state=n_text_state,
        n_text_head=reader.scalar("decoder/num_heads"),
        n_text_layer=_count_layers(reader, "decoder"),
        n_mels=conv1[1],
    )
    if hparams.n_audio_state != hparams.n_text_state:
        raise reader.error("encoder and decoder widths differ; whisper.cpp requires them equal")
    for heads in (hparams.n_audio_head, hparams.n_text_head):
        if heads <= 0 or hparams.n_audio_state % heads:
            raise reader.error(f"{heads} attention heads do not divide width {n_audio_state}")
    if n_vocab < _N_VOCAB_ENGLISH:
        raise reader.error(f"vocabulary of {n_vocab} tokens is not a Whisper vocabulary")
    # Architecture switches of CTranslate2's Whisper spec; anything else would convert into a
    # file that loads but computes something different.
    expected_flags = {
        "decoder/activation": _CT2_GELU,
        "decoder/pre_norm": 1,
        "decoder/scale_embeddings": 0,
        "decoder/alibi": 0,
        "decoder/start_from_zero_embedding": 0,
    }
    for name, value in expected_flags.items():
        if reader.has(name) and (found := reader.scalar(name)) != value:
            raise reader.error(f"{name} is {found}, whisper.cpp supports only {value}")
    return hparams


# --- mel filterbank --------------------------------------------------------------------------

_MEL_F_SP = 200.0 / 3
_MEL_MIN_LOG_HZ = 1000.0
_MEL_MIN_LOG_MEL = _MEL_MIN_LOG_HZ / _MEL_F_SP
_MEL_LOGSTEP = math.log(6.4) / 27.0


def _hz_to_mel(hz: float) -> float:
    if hz >= _MEL_MIN_LOG_HZ:
        return _MEL_MIN_LOG_MEL + math.log(hz / _MEL_MIN_LOG_HZ) / _MEL_LOGSTEP
    return hz / _MEL_F_SP


def _mel_to_hz(mel: float) -> float:
    if mel >= _MEL_MIN_LOG_MEL:
        return _MEL_MIN_LOG_HZ * math.exp(_MEL_LOGSTEP * (mel - _MEL_MIN_LOG_MEL))
    return _MEL_F_SP * mel


def mel_filters(n_mels: int, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """Slaney-style mel filterbank as librosa.filters.mel builds it (openai's mel_filters.npz).

    Returns float32 [n_mels, n_fft // 2 + 1]. The logarithms and exponentials are taken with
    ``math`` on the few band edges, so the result does not depend on numpy's SIMD kernels.
    """
    fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    mels = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2)
    band_edges = np.array([_mel_to_hz(float(m)) for m in mels])
    widths = np.diff(band_edges)
    ramps = np.subtract.outer(band_edges, fft_freqs)
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    # librosa rounds the triangles to float32 before scaling them, and so does this.
    weights = np.maximum(0.0, np.minimum(lower, upper)).astype(np.float32)
    enorm = 2.0 / (band_edges[2 : n_mels + 2] - band_edges[:n_mels])
    return (weights * enorm[:, None]).astype(np.float32)


# --- vocabulary ------------------------------------------------------------------------------


def _byte_decoder() -> dict[str, int]:
    """GPT-2's reversible byte <-> printable character table, inverted."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def _read_text_tokens(vocabulary: Path, n_vocab: int) -> list[bytes]:
    """The regular (non-special) tokens of vocabulary.txt as raw bytes, in id order."""
    try:
        text = vocabulary.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConversionError(f"{vocabulary}: missing vocabulary file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConversionError(f"{vocabulary}: cannot read vocabulary: {exc}") from None
    tokens = text.split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    if len(tokens) != n_vocab:
        raise ConversionError(
            f"{vocabulary}: {len(tokens)} tokens, but the model has {n_vocab} embeddings"
        )
    eot = _EOT_ENGLISH + (1 if n_vocab >= _N_VOCAB_MULTILINGUAL else 0)
    if tokens[eot] != "<|endoftext|>":
        raise ConversionError(
            f"{vocabulary}: token {eot} is {tokens[eot]!r}, expected '<|endoftext|>' "
            "(not a Whisper vocabulary whisper.cpp understands)"
        )
    decoder = _byte_decoder()
    text_tokens = tokens[:eot]
    unknown = set("".join(text_tokens)) - decoder.keys()
    if unknown:
        raise ConversionError(
            f"{vocabulary}: characters outside GPT-2's byte alphabet: {sorted(unknown)[:5]}"
        )
    table = str.maketrans({c: chr(b) for c, b in decoder.items()})
    return [token.translate(table).encode("latin-1") for token in text_tokens]


# --- quantization (ggml's reference quantize_row_*_ref, bit for bit) -------------------------


_Q8_0_BLOCK = np.dtype([("d", "<f2"), ("qs", "i1", _QUANT_BLOCK)])
_Q4_0_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", _QUANT_BLOCK // 2)])
_QUANT_CHUNK_BLOCKS = 32768  # blocks quantized at a time: keeps the temporaries in cache


def _inverse(d: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)


def _quantize_q8_0(x: np.ndarray, blocks: np.ndarray) -> None:
    """quantize_row_q8_0_ref: d = absmax / 127, q = roundf(x / d)."""
    d = np.abs(x).max(axis=1) / np.float32(127)
    scaled = x * _inverse(d)[:, None]
    # C's roundf (halves away from zero), exactly: trunc(s) + trunc(2 * fraction(s)).
    whole = np.trunc(scaled)
    scaled -= whole
    scaled *= np.float32(2)
    np.trunc(scaled, out=scaled)
    whole += scaled
    blocks["d"] = d.astype(np.float16)
    blocks["qs"] = whole.astype(np.int8)


def _quantize_q4_0(x: np.ndarray, blocks: np.ndarray) -> None:
    """quantize_row_q4_0_ref: d = -peak / 8, q = min(15, (int)(x / d + 8.5)), two per byte."""
    # the signed value of largest magnitude, the first one on ties
    peak = x[np.arange(len(x)), np.abs(x).argmax(axis=1)]
    d = peak / np.float32(-8)
    shifted = x * _inverse(d)[:, None] + np.float32(8.5)
    q = np.minimum(15, np.trunc(shifted)).astype(np.uint8)
    half = _QUANT_BLOCK // 2
    blocks["d"] = d.astype(np.float16)
    blocks["qs"] = q[:, :half] | (q[:, half:] << 4)


def quantize(matrix: np.ndarray, ftype: Literal["q8_0", "q4_0"]) -> bytes:
    """ggml q8_0 / q4_0 blocks for a matrix whose rows split into blocks of 32 values.

    Bit for bit what ggml's reference quantizers (``quantize_row_*_ref``), and so whisper.cpp's
    ``quantize`` example, write: the same float32 arithmetic in the same order.
    """
    if matrix.shape[-1] % _QUANT_BLOCK:
        raise ValueError(f"rows of {matrix.shape[-1]} values do not split into blocks of 32")
    quantize_blocks, block_dtype = {
        "q8_0": (_quantize_q8_0, _Q8_0_BLOCK),
        "q4_0": (_quantize_q4_0, _Q4_0_BLOCK),
    }[ftype]
    values = matrix.reshape(-1, _QUANT_BLOCK)
    blocks = np.empty(len(values), dtype=block_dtype)
    for start in range(0, len(values), _QUANT_CHUNK_BLOCKS):
        chunk = slice(start, start + _QUANT_CHUNK_BLOCKS)
        quantize_blocks(values[chunk].astype(np.float32), blocks[chunk])
    return blocks.tobytes()


# --- tensors ---------------------------------------------------------------------------------

# Tensors that stay float32 even though they are matrices (whisper.cpp reads them as such).
_F32_MATRICES = {
    "encoder.conv1.bias",
    "encoder.conv2.bias",
    "encoder.positional_embedding",
    "decoder.positional_embedding",
}


def _tensors(reader: _CT2Reader, hp: HParams) -> Iterator[tuple[str, np.ndarray]]:
    """(name, array) in openai-whisper's state-dict order, arrays in openai's shapes."""
    n = hp.n_audio_state

    def linear(src: str, dst: str, rows: int, cols: int) -> Iterator[tuple[str, np.ndarray]]:
        yield f"{dst}.weight", reader.array(f"{src}/weight", (rows, cols))
        yield f"{dst}.bias", reader.array(f"{src}/bias", (rows,))

    def norm(src: str, dst: str) -> Iterator[tuple[str, np.ndarray]]:
        yield f"{dst}.weight", reader.array(f"{src}/gamma", (n,))
        yield f"{dst}.bias", reader.array(f"{src}/beta", (n,))

    def split_qkv(src: str, dst: str, parts: str) -> Iterator[tuple[str, np.ndarray]]:
        weight = reader.array(f"{src}/weight", (len(parts) * n, n))
        bias = reader.array(f"{src}/bias", (len(parts) * n,))
        for i, part in enumerate(parts):
            rows = slice(i * n, (i + 1) * n)
            yield f"{dst}.{part}.weight", weight[rows]
            if part != "key":
                yield f"{dst}.{part}.bias", bias[rows]

    def self_attention(src: str, dst: str) -> Iterator[tuple[str, np.ndarray]]:
        yield from split_qkv(f"{src}/linear_0", dst, ("query", "key", "value"))
        yield from linear(f"{src}/linear_1", f"{dst}.out", n, n)

    def mlp(src: str, dst: str) -> Iterator[tuple[str, np.ndarray]]:
        yield from linear(f"{src}/linear_0", f"{dst}.mlp.0", 4 * n, n)
        yield from linear(f"{src}/linear_1", f"{dst}.mlp.2", n, 4 * n)
        yield from norm(f"{src}/layer_norm", f"{dst}.mlp_ln")

    yield (
        "encoder.positional_embedding",
        reader.array("encoder/position_encodings/encodings", (hp.n_audio_ctx, n)),
    )
    for conv, channels in (("conv1", hp.n_mels), ("conv2", n)):
        yield f"encoder.{conv}.weight", reader.array(f"encoder/{conv}/weight", (n, channels, 3))
        yield f"encoder.{conv}.bias", reader.array(f"encoder/{conv}/bias", (n,)).reshape(n, 1)
    for i in range(hp.n_audio_layer):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        yield from self_attention(f"{src}/self_attention", f"{dst}.attn")
        yield from norm(f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
        yield from mlp(f"{src}/ffn", dst)
    yield from norm("encoder/layer_norm", "encoder.ln_post")

    yield (
        "decoder.positional_embedding",
        reader.array("decoder/position_encodings/encodings", (hp.n_text_ctx, n)),
    )
    yield (
        "decoder.token_embedding.weight",
        reader.array("decoder/embeddings/weight", (hp.n_vocab, n)),
    )
    for i in range(hp.n_text_layer):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        yield from self_attention(f"{src}/self_attention", f"{dst}.attn")
        yield from norm(f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
        yield from linear(f"{src}/attention/linear_0", f"{dst}.cross_attn.query", n, n)
        yield from split_qkv(f"{src}/attention/linear_1", f"{dst}.cross_attn", ("key", "value"))
        yield from linear(f"{src}/attention/linear_2", f"{dst}.cross_attn.out", n, n)
        yield from norm(f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln")
        yield from mlp(f"{src}/ffn", dst)
    yield from norm("decoder/layer_norm", "decoder.ln")


def _as_bytes(array: np.ndarray, dtype: str) -> memoryview:
    """The array's bytes in ``dtype``, without a copy when it is stored that way already."""
    return memoryview(np.ascontiguousarray(array, dtype=dtype)).cast("B")


def _encode_tensor(name: str, array: np.ndarray, ftype: FType) -> tuple[int, bytes | memoryview]:
    """The ggml type id and payload bytes for one tensor."""
    if array.ndim < 2 or name in _F32_MATRICES:
        return _GGML_TYPE_F32, _as_bytes(array, "<f4")
    # Like whisper.cpp's quantize example: only 2-D matrices are quantized; the convolutions
    # stay f16 (whisper.cpp's loader expects exactly that split).
    if ftype != "f16" and array.ndim == 2:
        try:
            return _TENSOR_TYPES[ftype], quantize(array, ftype)
        except ValueError as exc:
            raise ConversionError(f"cannot quantize {name} to {ftype}: {exc}") from None
    return _GGML_TYPE_F16, _as_bytes(array, "<f2")


def _tensor_header(name: str, shape: tuple[int, ...], ggml_type: int) -> bytes:
    encoded = name.encode("utf-8")
    # ggml lists dimensions fastest-varying first, the reverse of numpy's order.
    dims = struct.pack(f"<{len(shape)}i", *reversed(shape))
    return struct.pack("<iii", len(shape), len(encoded), ggml_type) + dims + encoded


# --- entry point -----------------------------------------------------------------------------


def convert_ct2_whisper(source_dir: Path, out: BinaryIO, ftype: FType = "f16") -> None:
    """Write to ``out`` a whisper.cpp ggml model converted from the CT2 Whisper in ``source_dir``.

    ``ftype`` picks the matrix encoding: "f16" (exact), "q8_0" or "q4_0" (ggml block
    quantization). Raises ConversionError, with the file and the reason, when the source is
    missing, truncated, corrupt or not a Whisper model this converter can handle; in that case
    ``out`` may hold a partial file, which the caller must discard.
    """
    if ftype not in _FILE_FTYPES:
        raise ValueError(f"ftype must be one of {sorted(_FILE_FTYPES)}, not {ftype!r}")
    source_dir = Path(source_dir)
    model_path = source_dir / "model.bin"
    if not source_dir.is_dir():
        raise ConversionError(f"{source_dir}: model folder not found")
    try:
        model_file = model_path.open("rb")
    except FileNotFoundError:
        raise ConversionError(f"{model_path}: missing model file") from None
    except OSError as exc:
        raise ConversionError(f"{model_path}: cannot open: {exc.strerror}") from None

    with model_file:
        reader = _CT2Reader(model_path, model_file)
        hp = _read_hparams(reader)
        text_tokens = _read_text_tokens(source_dir / "vocabulary.txt", hp.n_vocab)
        log.info(
            "converting %s (WhisperSpec revision %d: %d+%d layers, width %d, %d tokens) to ggml %s",
            source_dir,
            reader.revision,
            hp.n_audio_layer,
            hp.n_text_layer,
            hp.n_audio_state,
            hp.n_vocab,
            ftype,
        )

        file_ftype = _FILE_FTYPES[ftype]
        if ftype != "f16":
            file_ftype += GGML_QNT_VERSION * GGML_QNT_VERSION_FACTOR
        out.write(struct.pack("<I", GGML_MAGIC))
        out.write(struct.pack("<11i", *hp.as_tuple(), file_ftype))

        filters = mel_filters(hp.n_mels)
        out.write(struct.pack("<ii", *filters.shape))
        out.write(filters.astype("<f4").tobytes())

        out.write(struct.pack("<i", len(text_tokens)))
        out.write(b"".join(struct.pack("<i", len(t)) + t for t in text_tokens))

        count = 0
        for name, array in _tensors(reader, hp):
            ggml_type, payload = _encode_tensor(name, array, ftype)
            out.write(_tensor_header(name, array.shape, ggml_type))
            out.write(payload)
            count += 1
    log.debug("wrote %d tensors", count)
