#!/usr/bin/env python3
"""TEST INFRASTRUCTURE ONLY: the real ClickHouse engine behind a small HTTP front.

ClickHouse's server cannot be had on these machines (Debian's is from 2018), but its
engine can: PyPI `chdb-core` embeds ClickHouse 26.9 in one library. This front
speaks enough of ClickHouse's HTTP interface for the Rust `clickhouse` crate and
for curl, so the project's code and tests talk to it as to a server:

- `/ping` and `GET /` answer `Ok.`; any other path is 404;
- the query comes from the `query` URL parameter, the body, or multipart fields;
  with both a query parameter and a body, the body is INSERT data (or, for other
  statements, the rest of the SQL);
- chunked and gzip request bodies, and ClickHouse native compressed blocks
  (`decompress=1`, LZ4/ZSTD) as the crate sends inserts;
- `database`, `default_format`, `param_*` and any other URL key as a setting, reset
  after each request so nothing leaks between requests;
- errors as ClickHouse sends them: `Code: N. DB::Exception: …` with
  `X-ClickHouse-Exception-Code` and the status ClickHouse would use.

What it cannot do (see tests/README.md): ON CLUSTER, Distributed and Replicated
engines, users and roles, HTTP sessions; requests run one at a time.

Pitfall handled here: `import chdb` runs the package's __init__, which opens and
closes a connection and so shuts down ClickHouse's Kafka machinery for the whole
process. The engine library is therefore loaded directly, with the package stubbed.
"""

import argparse
import ctypes
import gzip
import importlib.util
import json
import os
import re
import shutil
import signal
import struct
import sys
import threading
import types
import uuid
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

ENGINE_VERSION = "26.9.2.1"

# URL keys that are about HTTP, not settings.
HTTP_ONLY_KEYS = {
    "query", "database", "default_format", "query_id", "session_id", "session_timeout",
    "session_check", "compress", "decompress", "wait_end_of_query", "user", "password",
    "quota_key", "enable_http_compression", "http_headers_progress_interval_ms",
    "send_progress_in_http_headers", "buffer_size", "role", "stacktrace",
}

RTLD_DEEPBIND = 0x8


def load_engine(site_packages):
    """Loads chdb's `_chdb` extension without running `chdb/__init__.py`."""
    package = os.path.join(site_packages, "chdb")
    stub = types.ModuleType("chdb")
    stub.__path__ = [package]
    sys.modules["chdb"] = stub
    library = os.path.join(package, "_chdb.abi3.so")
    cwd = os.getcwd()
    os.chdir(package)  # its DT_NEEDED stubs resolve from the package folder
    try:
        ctypes.CDLL(library, mode=sys.getdlopenflags() | RTLD_DEEPBIND)
        spec = importlib.util.spec_from_file_location("chdb._chdb", library)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        os.chdir(cwd)
    return module


class ClickHouseError(Exception):
    """An error to send as ClickHouse would."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def engine_error(error):
    text = str(error)
    match = re.match(r"Code: (\d+)\.", text)
    code = int(match.group(1)) if match else 1000
    if not text.startswith("Code:"):
        text = f"Code: {code}. DB::Exception: {text}"
    return ClickHouseError(code, text)


def http_status(message):
    """The status ClickHouse's exceptionCodeToHTTPStatus gives, by error name."""
    match = re.search(r"\(([A-Z_0-9]+)\)\s*(\(version [^)]*\))?\s*$", message)
    name = match.group(1) if match else ""
    if name in {"ACCESS_DENIED", "UNKNOWN_USER", "WRONG_PASSWORD", "REQUIRED_PASSWORD",
                "AUTHENTICATION_FAILED"}:
        return 403
    if name.startswith("CANNOT_PARSE") or name in {
            "SYNTAX_ERROR", "INCORRECT_DATA", "TYPE_MISMATCH", "TOO_DEEP_AST", "TOO_BIG_AST",
            "UNEXPECTED_AST_STRUCTURE", "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
            "MULTIPLE_EXPRESSIONS_FOR_ALIAS"}:
        return 400
    if name.startswith("UNKNOWN_"):
        return 404
    return 500


def decode_native_blocks(data):
    """Unpacks ClickHouse's compressed native blocks: checksum(16) method(1) size(4) raw(4) payload."""
    import pyarrow  # bundled with chdb-core's dependencies

    out = bytearray()
    pos = 0
    while pos < len(data):
        if len(data) - pos < 25:
            raise ClickHouseError(432, "Code: 432. DB::Exception: Truncated compressed block. (UNKNOWN_CODEC)")
        method = data[pos + 16]
        compressed, raw = struct.unpack_from("<II", data, pos + 17)
        payload = data[pos + 25:pos + 16 + compressed]
        if len(payload) != compressed - 9:
            raise ClickHouseError(432, "Code: 432. DB::Exception: Truncated compressed block. (UNKNOWN_CODEC)")
        if method == 0x02:
            out += payload
        elif method in (0x82, 0x90):
            codec = "lz4_raw" if method == 0x82 else "zstd"
            out += pyarrow.decompress(payload, decompressed_size=raw, codec=codec).to_pybytes()
        else:
            raise ClickHouseError(432, f"Code: 432. DB::Exception: Unknown codec 0x{method:02x}. (UNKNOWN_CODEC)")
        pos += 16 + compressed
    return bytes(out)


def quote_literal(value):
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_identifier(name):
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


INSERT_WITH_FORMAT = re.compile(r"(?is)^\s*(INSERT\s+INTO\s+.*?)\s+FORMAT\s+([A-Za-z0-9_]+)\s*$")
INSERT_HEAD_IN_BODY = re.compile(r"(?is)^\s*(INSERT\s+INTO\s+.*?)\s+FORMAT\s+([A-Za-z0-9_]+)[ \t]*\r?\n")


class Engine:
    """One chDB connection, used one request at a time."""

    def __init__(self, module, data_dir, overrides):
        suffix = "&".join(f"{k}={v}" for k, v in overrides)
        self.conn = module.connect(f"file:{data_dir}" + (f"?{suffix}" if suffix else ""))
        self.lock = threading.Lock()

    def run(self, sql, fmt, params, database, settings, insert_data):
        with self.lock:
            applied = []
            try:
                if database:
                    self.query(f"USE {quote_identifier(database)}")
                for key, value in settings:
                    if not re.fullmatch(r"[A-Za-z0-9_.]+", key):
                        raise ClickHouseError(115, f"Code: 115. DB::Exception: Unknown setting '{key}'. (UNKNOWN_SETTING)")
                    self.query(f"SET {key} = {quote_literal(value)}")
                    applied.append(key)
                if insert_data is not None:
                    prefix, insert_format, data = insert_data
                    return self.insert(prefix, insert_format, data)
                self.refuse_multiple_statements(sql)
                result = self.query(sql, fmt, params)
                return result.bytes(), result.rows_written()
            finally:
                for key in applied:
                    try:
                        self.query(f"SET {key} = DEFAULT")
                    except ClickHouseError:
                        pass
                if database:
                    self.query("USE default")

    def refuse_multiple_statements(self, sql):
        try:
            count = self.conn.classify_query(sql)["statement_count"]
        except RuntimeError:
            return  # let the engine report the syntax error itself
        if count > 1:
            raise ClickHouseError(62, "Code: 62. DB::Exception: Syntax error (Multi-statements are not allowed). (SYNTAX_ERROR)")

    def query(self, sql, fmt="TabSeparated", params=None):
        try:
            return self.conn.query(sql, fmt, params=params or {})
        except RuntimeError as error:
            raise engine_error(error) from None

    def insert(self, prefix, fmt, data):
        try:
            handle = self.conn.send_insert(prefix, fmt)
        except RuntimeError as error:
            raise engine_error(error) from None
        try:
            self.conn.insert_append(handle, data)
            result = self.conn.insert_done(handle)
        except RuntimeError as error:
            try:
                self.conn.insert_cancel(handle)
            except RuntimeError:
                pass
            raise engine_error(error) from None
        return b"", result.rows_written()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "clickhouse-front"
    engine = None  # set by main()

    def log_message(self, fmt, *args):  # quiet unless asked
        if os.environ.get("CH_FRONT_LOG"):
            super().log_message(fmt, *args)

    def do_GET(self):
        self.handle_request()

    def do_POST(self):
        self.handle_request()

    def do_HEAD(self):
        self.handle_request(head=True)

    def read_body(self):
        """The request body, and whether it arrived whole."""
        if self.headers.get("Expect", "").lower() == "100-continue":
            self.send_response_only(100)
            self.end_headers()
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = bytearray()
            while True:
                line = self.rfile.readline()
                if not line:
                    return bytes(body), False  # the client gave up: an aborted insert
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body), True
                chunk = self.rfile.read(size)
                self.rfile.readline()
                if len(chunk) < size:
                    return bytes(body), False
                body += chunk
        length = int(self.headers.get("Content-Length", "0") or 0)
        body = self.rfile.read(length) if length else b""
        return body, len(body) == length

    def handle_request(self, head=False):
        url = urlsplit(self.path)
        if url.path == "/ping" or (url.path == "/" and not url.query and self.command in ("GET", "HEAD")
                                   and not self.headers.get("Content-Length")
                                   and not self.headers.get("Transfer-Encoding")):
            return self.reply(200, b"Ok.\n", {}, head)
        if url.path != "/":
            self.read_body()
            return self.reply(404, b"There is no handle " + url.path.encode() + b"\n", {}, head)
        body, whole = self.read_body()
        if not whole:
            self.close_connection = True
            return
        try:
            status, payload, headers = self.run_query(url, body)
        except ClickHouseError as error:
            message = error.message.rstrip()
            if "(version " not in message:
                message += f" (version {ENGINE_VERSION})"
            return self.reply(http_status(message), (message + "\n").encode(),
                              {"X-ClickHouse-Exception-Code": str(error.code)}, head)
        self.reply(status, payload, headers, head)

    def run_query(self, url, body):
        params = parse_qsl(url.query, keep_blank_values=True)
        fields = dict(params)
        content_type = self.headers.get("Content-Type", "")
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        if content_type.startswith("multipart/form-data"):
            message = BytesParser(policy=HTTP).parsebytes(
                b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                fields[name] = part.get_content() if isinstance(part.get_content(), str) \
                    else part.get_content().decode()
                params.append((name, fields[name]))
            body = b""
        if fields.get("decompress") == "1" and body:
            body = decode_native_blocks(body)
        database = fields.get("database") or self.headers.get("X-ClickHouse-Database")
        fmt = fields.get("default_format") or self.headers.get("X-ClickHouse-Format") or "TabSeparated"
        query_params = {k[len("param_"):]: v for k, v in params if k.startswith("param_")}
        settings = [(k, v) for k, v in params
                    if k not in HTTP_ONLY_KEYS and not k.startswith("param_")]

        sql, insert_data = self.split_insert(fields.get("query"), body)
        result, written = self.engine.run(sql, fmt, query_params, database, settings, insert_data)
        summary = {"read_rows": "0", "read_bytes": "0", "written_rows": str(written),
                   "written_bytes": "0", "total_rows_to_read": "0", "result_rows": "0",
                   "result_bytes": str(len(result))}
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "X-ClickHouse-Format": fmt,
            "X-ClickHouse-Query-Id": fields.get("query_id") or str(uuid.uuid4()),
            "X-ClickHouse-Timezone": "UTC",
            "X-ClickHouse-Server-Display-Name": "clickhouse-front",
            "X-ClickHouse-Summary": json.dumps(summary),
        }
        return 200, result, headers

    @staticmethod
    def split_insert(query, body):
        """Returns (sql, None) for a statement, or (None, (prefix, format, data)) for an INSERT with data."""
        if query is not None:
            match = INSERT_WITH_FORMAT.match(query)
            if match and body:
                return None, (match.group(1), match.group(2), body)
            if body:
                return query + "\n" + body.decode(), None
            return query, None
        text = body
        match = INSERT_HEAD_IN_BODY.match(text.decode("utf-8", "replace")[:4096])
        if match:
            head_len = len(match.group(0).encode())
            return None, (match.group(1), match.group(2), text[head_len:])
        return text.decode(), None

    def reply(self, status, payload, headers, head):
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if "Content-Type" not in headers:
            self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Keep-Alive", "timeout=10")
        self.end_headers()
        if not head:
            self.wfile.write(payload)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data", required=True, help="the engine's data directory")
    parser.add_argument("--schemas", required=True,
                        help="format_schemas directory; relative schema names resolve against it")
    parser.add_argument("--fresh", action="store_true", help="wipe the data directory first")
    parser.add_argument("--setting", action="append", default=[],
                        help="engine configuration override KEY=VALUE, e.g. kafka.session_timeout_ms=6000")
    args = parser.parse_args()

    if args.fresh and os.path.isdir(args.data):
        shutil.rmtree(args.data)
    os.makedirs(args.data, exist_ok=True)
    os.makedirs(args.schemas, exist_ok=True)
    site_packages = next(p for p in sys.path if os.path.isdir(os.path.join(p, "chdb")))
    module = load_engine(site_packages)
    data_dir = os.path.abspath(args.data)
    # chDB runs as clickhouse-local: schema names resolve against the working directory.
    os.chdir(args.schemas)
    overrides = [tuple(s.split("=", 1)) for s in args.setting]
    Handler.engine = Engine(module, data_dir, overrides)

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True

    def stop(_signum, _frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"clickhouse-front listening on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()
    with Handler.engine.lock:
        Handler.engine.conn.close()


if __name__ == "__main__":
    main()
