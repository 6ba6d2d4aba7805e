"""Training data as rows, streamed: JSONL, JSON arrays, CSV/TSV, Parquet, Arrow (a `datasets`
`save_to_disk` folder or loose `.arrow` files), plain text lines, and gzip of the text formats.

`discover(path)` finds the data files under a path (and a `datasets` folder's manifest);
`iter_rows(file)` yields every row with its line number, or the reason it cannot be read;
`count_file(file)` counts rows at disk speed (Parquet and Arrow from metadata; JSONL in
chunks, parsed a chunk at a time). Memory stays bounded by the chunk size, never the file size.
Problems with a file (truncated gzip, not Parquet, UTF-16) are recorded on its `FileCount`,
never raised: bad data is a finding, not a crash.
"""

from __future__ import annotations

import codecs
import csv
import functools
import gzip
import io
import json
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

try:  # orjson parses JSON 3-5x faster than the standard library; both give the same values
    import orjson

    _loads: Callable[[bytes], Any] = orjson.loads
except ImportError:  # pragma: no cover - orjson is a dependency; stay usable without it
    _loads = json.loads

CHUNK_BYTES = 4 << 20
MAX_LINE_BYTES = 64 << 20  # a "line" longer than this is garbage (binary data without newlines)
MAX_EXAMPLES = 5  # line numbers kept per kind of problem

TEXT_FORMATS = ("jsonl", "json", "csv", "tsv", "text")
EXTENSIONS = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
    ".parquet": "parquet", ".pq": "parquet", ".arrow": "arrow", ".txt": "text", ".text": "text",
}
# files found next to data that are not data
NOT_DATA = {"dataset_info.json", "state.json", "dataset_dict.json", "README.md", ".gitattributes"}
TEXT_FIELD_GUESSES = ("text", "messages", "conversations")
SHARD_NAME = re.compile(r"^(?P<prefix>.*?)(?P<index>\d+)-of-(?P<total>\d+)(?P<suffix>\..*)?$")


class DataError(Exception):
    """A data path that cannot be read at all (the message says why)."""


@dataclass
class DataFile:
    path: Path
    format: str  # one of TEXT_FORMATS, "parquet" or "arrow"
    gzip: bool = False

    @property
    def size(self) -> int:
        return self.path.stat().st_size


@dataclass
class DataSource:
    """The data files under a path, plus what a `datasets` manifest says about them."""

    root: Path
    files: list[DataFile]
    ignored: list[str] = field(default_factory=list)  # files under root that are not data
    manifest_rows: int | None = None  # rows a `datasets` dataset_info.json says the split has
    manifest_file: str | None = None
    problems: list[str] = field(default_factory=list)  # missing shards, files a manifest lists but lacks
    split: str | None = None

    def relative(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root)) if self.root.is_dir() else path.name
        except ValueError:
            return str(path)


@dataclass
class Row:
    """One row of a data file: its value, or why it cannot be read."""

    line: int  # line number (text formats) or row index + 1 (Parquet, Arrow)
    value: dict[str, Any] | None
    error: str | None = None


@dataclass
class FileCount:
    """What one file holds."""

    file: str
    format: str
    bytes: int
    present: int = 0  # records on disk (non-blank lines, array elements, table rows)
    parseable: int = 0
    blank: int = 0  # blank lines: not records, skipped by most loaders
    unparsable: list[dict[str, Any]] = field(default_factory=list)  # first few {line, reason, text}
    unparsable_count: int = 0
    problems: list[str] = field(default_factory=list)  # notes: encoding, an empty file
    lost: list[str] = field(default_factory=list)  # what made rows unreadable: truncation, not Parquet
    encoding: str = "utf-8"
    field_checked: str | None = None
    missing_field: int = 0
    missing_field_lines: list[int] = field(default_factory=list)
    empty: int = 0
    empty_lines: list[int] = field(default_factory=list)
    key_sets: Counter = field(default_factory=Counter)  # keys of rows (when no text field is named)
    sampled: int = 0  # rows parsed in full (all of them unless checked by structure)

    def add_unparsable(self, line: int, reason: str, raw: bytes | str = b"") -> None:
        self.unparsable_count += 1
        if len(self.unparsable) < MAX_EXAMPLES:
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
            self.unparsable.append({"line": line, "reason": reason, "text": _preview(text)})


def _preview(text: str, limit: int = 80) -> str:
    text = text.replace("\x00", "\\0").strip()
    return text if len(text) <= limit else text[:limit] + "..."


# ---- finding the files ------------------------------------------------------------------------


def format_of(path: Path) -> tuple[str | None, bool]:
    """(format, gzipped) from the file name; None when the name says nothing."""
    name = path.name.lower()
    gz = name.endswith(".gz")
    if gz:
        name = name[:-3]
    suffix = Path(name).suffix
    fmt = EXTENSIONS.get(suffix)
    if gz and fmt in ("parquet", "arrow"):
        return None, gz
    return fmt, gz


def _sniff(path: Path) -> tuple[str | None, bool]:
    """The format of a file whose name does not say, from its first bytes."""
    with path.open("rb") as handle:
        head = handle.read(4096)
    gz = head[:2] == b"\x1f\x8b"
    if gz:
        try:
            head = gzip.GzipFile(fileobj=io.BytesIO(head)).read(4096)
        except (OSError, EOFError, zlib.error):
            head = b""
    if head[:4] == b"PAR1" and not gz:
        return "parquet", False
    if head[:6] == b"ARROW1" or head[:4] == b"\xff\xff\xff\xff":
        return ("arrow", False) if not gz else (None, gz)
    stripped = head.lstrip()
    if stripped[:1] == b"[":
        return "json", gz
    if stripped[:1] == b"{":
        return "jsonl", gz
    return None, gz


def discover(path: str | Path) -> DataSource:
    """The data files at `path` (a file, a folder of shards, or a `datasets` folder)."""
    root = Path(path)
    if not root.exists():
        raise DataError(f"{root} does not exist")
    if root.is_file():
        fmt, gz = format_of(root)
        if fmt is None or fmt == "json":
            fmt, gz = _sniff(root) if root.stat().st_size else (fmt or "text", gz)
        return DataSource(root=root, files=[DataFile(root, fmt or "text", gz)])
    return _discover_folder(root)


def _discover_folder(root: Path) -> DataSource:
    split = None
    dict_file = root / "dataset_dict.json"
    if dict_file.is_file():  # a `datasets` DatasetDict: use the train split (or the only one)
        splits = _read_json(dict_file).get("splits") or [p.name for p in root.iterdir() if p.is_dir()]
        split = "train" if "train" in splits else (splits[0] if splits else None)
        if split is None or not (root / split).is_dir():
            raise DataError(f"{dict_file} names splits {splits} but no split folder exists")
        source = _discover_folder(root / split)
        source.root, source.split = root, split
        return source
    files, ignored = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or path.name in NOT_DATA:
            continue
        fmt, gz = format_of(path)
        if fmt is None and path.suffix.lower() in ("", ".gz", ".data", ".dat"):
            fmt, gz = _sniff(path)
        if fmt is None:
            ignored.append(str(relative))
        else:
            files.append(DataFile(path, fmt, gz))
    source = DataSource(root=root, files=files, ignored=ignored)
    _read_datasets_manifest(source)
    source.problems.extend(missing_shards([f.path.name for f in files]))
    return source


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _read_datasets_manifest(source: DataSource) -> None:
    """A `save_to_disk` folder: state.json lists its arrow files; dataset_info.json its row count."""
    state = _read_json(source.root / "state.json")
    listed = [entry.get("filename") for entry in state.get("_data_files", []) if isinstance(entry, dict)]
    present = {f.path.name for f in source.files}
    for name in listed:
        if name and name not in present:
            source.problems.append(f"state.json lists {name}, which is missing")
    info = _read_json(source.root / "dataset_info.json")
    splits = info.get("splits") or {}
    split_name = state.get("_split") or source.split
    if isinstance(splits, dict) and splits:
        entry = splits.get(split_name) if split_name in splits else (
            next(iter(splits.values())) if len(splits) == 1 else None)
        if isinstance(entry, dict) and isinstance(entry.get("num_examples"), int):
            source.manifest_rows = entry["num_examples"]
            source.manifest_file = "dataset_info.json"


def missing_shards(names: list[str]) -> list[str]:
    """Shards named `...-00003-of-00010...` whose siblings are missing."""
    groups: dict[tuple[str, str, str], set[int]] = {}
    for name in names:
        match = SHARD_NAME.match(name)
        if match:
            key = (match["prefix"], match["total"], match["suffix"] or "")
            groups.setdefault(key, set()).add(int(match["index"]))
    problems = []
    for (prefix, total_text, suffix), indices in sorted(groups.items()):
        total = int(total_text)
        lacking = sorted(set(range(total)) - indices)
        if lacking:
            shown = ", ".join(str(i) for i in lacking[:8]) + (" ..." if len(lacking) > 8 else "")
            problems.append(f"{len(indices)} of {total} shards {prefix}*-of-{total_text}{suffix} present; "
                            f"missing index {shown}")
    return problems


# ---- reading bytes ------------------------------------------------------------------------------


def _open(file: DataFile):
    raw = file.path.open("rb")
    return gzip.GzipFile(fileobj=raw, mode="rb") if file.gzip else raw


def _utf8_chunks(file: DataFile, count: FileCount) -> Iterator[bytes]:
    """The file's bytes as UTF-8, in chunks; a BOM of another encoding is transcoded (and noted)."""
    size = CHUNK_BYTES if not file.gzip else CHUNK_BYTES // 16  # a truncated gzip loses only its last read
    with _open(file) as handle:
        try:
            first = handle.read(size)
            encoding = None
            if first.startswith(codecs.BOM_UTF8):
                first, count.encoding = first[3:], "utf-8-sig"
            elif first.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
                encoding = "utf-32"
            elif first.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                encoding = "utf-16"
            if encoding:
                count.encoding = encoding
                count.problems.append(f"encoded as {encoding.upper()}, not UTF-8: many loaders cannot read it")
                decoder = codecs.getincrementaldecoder(encoding)("replace")
                while first:
                    yield decoder.decode(first).encode("utf-8")
                    first = handle.read(size)
                yield decoder.decode(b"", final=True).encode("utf-8")
                return
            while first:
                yield first
                first = handle.read(size)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            count.lost.append(f"gzip stream broken ({exc}): rows after this point are lost")


class LineChunk(bytes):
    """Bytes of whole lines; a reader that counted the newlines stores them so they are not counted twice."""

    newlines: int | None = None


def _line_chunks(file: DataFile, count: FileCount) -> Iterator[tuple[int, bytes]]:
    """(number of the first line, bytes of whole lines) in chunks of about CHUNK_BYTES."""
    pending = b""
    line_no = 1
    for chunk in _utf8_chunks(file, count):
        data = pending + chunk if pending else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            pending = data
            if len(pending) > MAX_LINE_BYTES:  # no newline for 64 MB: not line-oriented text
                yield line_no, pending
                pending = b""
            continue
        pending = data[cut + 1:]
        body = LineChunk(data[:cut + 1])
        yield line_no, body
        line_no += body.newlines if body.newlines is not None else data.count(b"\n", 0, cut + 1)
    if pending:
        yield line_no, pending


# ---- JSON lines ---------------------------------------------------------------------------------


def _reason(exc: Exception, line: bytes) -> str:
    if isinstance(exc, UnicodeDecodeError) or "utf-8" in str(exc).lower():
        return "not valid UTF-8"
    if b"\x00" in line:
        return "binary data"
    message = str(exc).split(":")[0]
    return f"not JSON ({message})"


@dataclass
class _Chunk:
    values: list[Any]
    lines: list[int] | None  # None: values[i] is on line first + i
    first: int


def _parse_jsonl_chunk(body: bytes, first: int, count: FileCount) -> _Chunk:
    """Every line of `body` parsed. Fast path: the whole chunk as one JSON array (one C call);
    if that fails or a line holds more than one value, line by line to find the bad ones."""
    body = body[:-1] if body.endswith(b"\n") else body
    if not body:
        return _Chunk([], None, first)
    n_lines = body.count(b"\n") + 1
    try:
        values = _loads(b"[" + body.replace(b"\n", b",") + b"]")
    except ValueError:
        values = None
    if values is not None and len(values) == n_lines and all(type(v) is dict for v in values):
        count.present += n_lines
        count.parseable += n_lines
        return _Chunk(values, None, first)
    values, lines = [], []
    for offset, line in enumerate(body.split(b"\n")):
        number = first + offset
        if not line.strip():
            count.blank += 1
            continue
        count.present += 1
        try:
            value = _loads(line)
        except ValueError as exc:
            count.add_unparsable(number, _reason(exc, line), line)
            continue
        if type(value) is not dict:
            count.add_unparsable(number, f"a JSON {type(value).__name__}, not an object", line)
            continue
        count.parseable += 1
        values.append(value)
        lines.append(number)
    return _Chunk(values, lines, first)


SAMPLE_LINES = 64  # lines per chunk parsed in full when a chunk is checked by structure


def _sound_structure(body: bytes, field: str | None) -> int | None:
    """The number of lines when every line is `{...}` in valid UTF-8 without NUL bytes and, with
    `field`, the field's key occurs at least once per line and never with an empty or null value;
    else None. One vectorised pass finds the newlines (a raw newline cannot occur inside JSON, so
    each one separates two lines); the bytes around them are gathered, not scanned."""
    import numpy as np

    if not body.startswith(b"{") or b"\x00" in body:
        return None
    data = np.frombuffer(body, dtype=np.uint8)
    newlines = np.flatnonzero(data == 10)
    n_lines = len(newlines) + 1
    before = data[newlines - 1]
    crlf = before == 13
    if crlf.any():
        before = np.where(crlf, data[np.maximum(newlines - 2, 0)], before)
    last = body.rstrip(b"\r")[-1:]
    if last != b"}" or not (before == 125).all() or not (data[newlines + 1] == 123).all():
        return None
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if field is not None:
        key, empty = _field_patterns(field)
        if body.count(key) < n_lines or empty.search(body):
            return None
    return n_lines


@functools.lru_cache(maxsize=8)
def _field_patterns(field: str) -> tuple[bytes, re.Pattern]:
    """The field's JSON key, and a pattern for it holding an empty value ("", null, [], {})."""
    key = json.dumps(field).encode() + b":"
    return key, re.compile(re.escape(key) + rb'\s*(?:""|null|\[\s*\]|\{\s*\})')


def _sampled_lines(body: bytes, k: int) -> list[bytes]:
    """About k lines spread evenly through `body`."""
    step = max(1, len(body) // k)
    out, seen = [], -1
    for offset in range(0, len(body), step):
        start = body.rfind(b"\n", 0, offset) + 1
        if start <= seen:
            continue
        end = body.find(b"\n", start)
        end = len(body) if end < 0 else end
        out.append(body[start:end])
        seen = start
    return out


def _check_chunk_by_structure(body: bytes, first: int, count: FileCount, field: str | None) -> _Chunk | None:
    """Count a chunk without parsing every line: structure checked on bytes, a sample parsed.
    None when the chunk looks wrong anywhere: the caller then parses it line by line."""
    whole = body
    body = body[:-1] if body.endswith(b"\n") else body
    if not body:
        return _Chunk([], None, first)
    n_lines = _sound_structure(body, field)
    if n_lines is None:
        return None
    if isinstance(whole, LineChunk):
        whole.newlines = n_lines if whole.endswith(b"\n") else n_lines - 1
    sample = []
    for line in _sampled_lines(body, SAMPLE_LINES):
        try:
            value = _loads(line)
        except ValueError:
            return None
        if type(value) is not dict:
            return None
        sample.append(value)
    count.present += n_lines
    count.parseable += n_lines
    count.sampled += len(sample)
    return _Chunk(sample, None, first)


def _jsonl_chunks(file: DataFile, count: FileCount) -> Iterator[_Chunk]:
    for first, body in _line_chunks(file, count):
        yield _parse_jsonl_chunk(body, first, count)


# ---- JSON arrays ----------------------------------------------------------------------------------


def _json_array_rows(file: DataFile, count: FileCount) -> Iterator[Row]:
    """Elements of a top-level JSON array, decoded one at a time from a sliding buffer."""
    decoder = json.JSONDecoder()
    chunks = _utf8_chunks(file, count)
    buffer, position, line, eof = "", 0, 1, False
    decode_errors = 0

    def more(at_least: int) -> bool:
        nonlocal buffer, position, eof, decode_errors
        added = 0
        while added < at_least:
            chunk = next(chunks, None)
            if chunk is None:
                eof = True
                return added > 0
            text = chunk.decode("utf-8", "replace")
            decode_errors += text.count("\ufffd")
            buffer = buffer[position:] + text
            position = 0
            added += len(text)
        return True

    def skip_space() -> None:
        nonlocal position, line
        while True:
            while position < len(buffer) and buffer[position] in " \t\r\n":
                if buffer[position] == "\n":
                    line += 1
                position += 1
            if position < len(buffer) or eof or not more(CHUNK_BYTES):
                return

    skip_space()
    if position >= len(buffer) or buffer[position] != "[":
        count.lost.append("not a JSON array (it does not start with '[')")
        return
    position += 1
    index = 0
    while True:
        skip_space()
        if position >= len(buffer):
            count.lost.append("the JSON array is cut off: no closing ']'")
            return
        if buffer[position] == "]":
            break
        if index and buffer[position] == ",":
            position += 1
            skip_space()
        want = CHUNK_BYTES
        while True:
            try:
                value, end = decoder.raw_decode(buffer, position)
                break
            except ValueError as exc:
                if eof or len(buffer) - position > MAX_LINE_BYTES or not more(max(want, len(buffer))):
                    count.present += 1
                    count.add_unparsable(line, f"not JSON ({str(exc).split(':')[0]}); the rest of the array is lost",
                                         buffer[position:position + 80])
                    return
                want *= 2
        count.present += 1
        index += 1
        element_line = line
        line += buffer.count("\n", position, end)
        position = end
        if type(value) is not dict:
            count.add_unparsable(element_line, f"a JSON {type(value).__name__}, not an object", json.dumps(value)[:80])
            continue
        count.parseable += 1
        yield Row(element_line, value)
    if decode_errors:
        count.problems.append(f"{decode_errors} bytes are not valid UTF-8 (read as U+FFFD)")


# ---- CSV, TSV, text -------------------------------------------------------------------------------


def _text_lines(file: DataFile, count: FileCount) -> Iterator[str]:
    for _, body in _line_chunks(file, count):
        yield from body.decode("utf-8", "replace").splitlines(keepends=True)


def _csv_rows(file: DataFile, count: FileCount) -> Iterator[Row]:
    csv.field_size_limit(MAX_LINE_BYTES)
    reader = csv.reader(_text_lines(file, count), delimiter="\t" if file.format == "tsv" else ",")
    header: list[str] | None = None
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            count.present += 1
            count.add_unparsable(reader.line_num, f"not CSV ({exc})")
            continue
        if not cells or all(not c.strip() for c in cells):
            count.blank += 1
            continue
        if header is None:
            header = cells
            continue
        count.present += 1
        text = "\t".join(cells)
        if "\ufffd" in text:
            count.add_unparsable(reader.line_num, "not valid UTF-8", text)
        elif len(cells) != len(header):
            count.add_unparsable(reader.line_num, f"{len(cells)} fields, the header has {len(header)}", text)
        else:
            count.parseable += 1
            yield Row(reader.line_num, dict(zip(header, cells)))


def _text_rows(file: DataFile, count: FileCount) -> Iterator[Row]:
    for first, body in _line_chunks(file, count):
        body = body[:-1] if body.endswith(b"\n") else body
        for offset, raw in enumerate(body.split(b"\n")):
            if not raw.strip():
                count.blank += 1
                continue
            count.present += 1
            try:
                text = raw.decode("utf-8").rstrip("\r")
            except UnicodeDecodeError:
                count.add_unparsable(first + offset, "not valid UTF-8", raw)
                continue
            if "\x00" in text:
                count.add_unparsable(first + offset, "binary data", raw)
                continue
            count.parseable += 1
            yield Row(first + offset, {"text": text})


# ---- Parquet and Arrow ------------------------------------------------------------------------------


def _arrow_reader(file: DataFile):
    """An Arrow IPC reader over a memory map: file format, else stream format (what `datasets` writes)."""
    import pyarrow as pa

    source = pa.memory_map(str(file.path))
    try:
        return pa.ipc.open_file(source)
    except pa.ArrowInvalid:
        source.seek(0)
        return pa.ipc.open_stream(source)


def _arrow_batches(file: DataFile):
    import pyarrow as pa

    reader = _arrow_reader(file)
    if isinstance(reader, pa.ipc.RecordBatchFileReader):
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)
    else:
        yield from reader


def _table_rows(file: DataFile, count: FileCount) -> Iterator[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    index = 0
    try:
        batches = (pq.ParquetFile(str(file.path)).iter_batches(batch_size=2048) if file.format == "parquet"
                   else _arrow_batches(file))
        for batch in batches:
            count.present += batch.num_rows
            count.parseable += batch.num_rows
            for value in batch.to_pylist():
                index += 1
                yield Row(index, value)
    except (pa.ArrowException, OSError) as exc:
        count.lost.append(_table_problem(file, exc))


def _table_problem(file: DataFile, exc: Exception) -> str:
    kind = "Parquet" if file.format == "parquet" else "Arrow"
    return f"cannot read as {kind}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"


def _table_count(file: DataFile, count: FileCount, text_field: str | None) -> None:
    """Row counts from metadata; null counts of the text field from column statistics."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if file.format == "parquet":
            meta = pq.ParquetFile(str(file.path)).metadata
            rows, names = meta.num_rows, meta.schema.to_arrow_schema().names
            nulls = _parquet_nulls(meta, text_field) if text_field in names else None
        else:
            reader = _arrow_reader(file)
            names = reader.schema.names
            rows, nulls = 0, 0
            for batch in _batches_of(reader):
                rows += batch.num_rows
                if text_field in names:
                    nulls += batch.column(text_field).null_count
    except (pa.ArrowException, OSError) as exc:
        count.lost.append(_table_problem(file, exc))
        return
    count.present = count.parseable = rows
    count.key_sets[tuple(names)] = rows
    if text_field:
        count.field_checked = text_field
        if text_field not in names:
            count.missing_field = rows
        elif nulls:
            count.empty = nulls


def _batches_of(reader):
    import pyarrow as pa

    if isinstance(reader, pa.ipc.RecordBatchFileReader):
        return (reader.get_batch(i) for i in range(reader.num_record_batches))
    return reader


def _parquet_nulls(meta, name: str) -> int | None:
    column = meta.schema.to_arrow_schema().names.index(name)
    nulls = 0
    for group in range(meta.num_row_groups):
        stats = meta.row_group(group).column(column).statistics
        if stats is None or not stats.has_null_count:
            return None
        nulls += stats.null_count
    return nulls


# ---- the public readers ---------------------------------------------------------------------------


def iter_rows(file: DataFile, count: FileCount | None = None) -> Iterator[Row]:
    """Every readable row of `file`, in order. Unreadable rows and file problems go to `count`."""
    count = count if count is not None else new_count(file)
    if file.format == "jsonl":
        for chunk in _jsonl_chunks(file, count):
            lines = chunk.lines or range(chunk.first, chunk.first + len(chunk.values))
            for line, value in zip(lines, chunk.values):
                yield Row(line, value)
    elif file.format == "json":
        yield from _json_array_rows(file, count)
    elif file.format in ("csv", "tsv"):
        yield from _csv_rows(file, count)
    elif file.format == "text":
        yield from _text_rows(file, count)
    else:
        yield from _table_rows(file, count)


def new_count(file: DataFile, name: str | None = None) -> FileCount:
    return FileCount(file=name or str(file.path), format=file.format + (".gz" if file.gzip else ""),
                     bytes=file.size)


def count_file(file: DataFile, text_field: str | None = None, name: str | None = None,
               progress: Callable[[int], None] | None = None, full_parse: bool = True) -> FileCount:
    """Count and check every row of `file`. With `text_field`, rows lacking it or with it empty are
    counted; without, the key sets of rows are tallied so rows lacking a common field show up.

    With `full_parse=False`, JSONL is checked by structure (every line `{...}`, valid UTF-8, the
    text field's key once per line and never empty) with a sample of lines parsed per chunk; a
    chunk that fails any of it is parsed line by line, so bad lines are still found and numbered."""
    count = new_count(file, name)
    if file.format in ("parquet", "arrow"):
        _table_count(file, count, text_field)
        return count
    if count.bytes == 0:
        count.problems.append("the file is empty")
        return count
    count.field_checked = text_field
    if file.format == "jsonl":
        for first, body in _line_chunks(file, count):
            chunk = None if full_parse else _check_chunk_by_structure(body, first, count, text_field)
            if chunk is not None:
                if text_field is None:
                    count.key_sets.update(map(tuple, chunk.values))
            else:
                chunk = _parse_jsonl_chunk(body, first, count)
                _check_values(count, chunk.values, chunk.lines, chunk.first, text_field)
                count.sampled += len(chunk.values)
            if progress:
                progress(count.present)
        return count
    batch: list[Row] = []
    for row in iter_rows(file, count):
        batch.append(row)
        if len(batch) == 4096:
            _check_values(count, [r.value for r in batch], [r.line for r in batch], 0, text_field)
            batch.clear()
    _check_values(count, [r.value for r in batch], [r.line for r in batch], 0, text_field)
    return count


_MISSING = object()


def _check_values(count: FileCount, values: list[dict], lines: list[int] | None, first: int,
                  text_field: str | None) -> None:
    if not values:
        return
    if text_field is None:
        count.key_sets.update(map(tuple, values))
        return
    for index, value in enumerate(values):
        got = value.get(text_field, _MISSING)
        if got is _MISSING or got is None:
            count.missing_field += 1
            if len(count.missing_field_lines) < MAX_EXAMPLES:
                count.missing_field_lines.append(lines[index] if lines else first + index)
        elif not got or (type(got) is str and got.isspace()):
            count.empty += 1
            if len(count.empty_lines) < MAX_EXAMPLES:
                count.empty_lines.append(lines[index] if lines else first + index)


def guess_text_field(source: DataSource) -> str | None:
    """The conventional text field (`text`, `messages`, `conversations`) the first rows carry, if any."""
    for file in source.files[:1]:
        keys: Counter = Counter()
        for n, row in enumerate(iter_rows(file)):
            keys.update(row.value or {})
            if n >= 50:
                break
        for name in TEXT_FIELD_GUESSES:
            if name in keys:
                return name
    return None


def read_rows(source: DataSource, limit: int | None = None) -> Iterator[tuple[str, Row]]:
    """(file name, row) for the readable rows of every file of `source`, at most `limit`."""
    seen = 0
    for file in source.files:
        for row in iter_rows(file):
            yield source.relative(file.path), row
            seen += 1
            if limit is not None and seen >= limit:
                return
