"""A fake Telegram Bot API server for tests: real HTTP on 127.0.0.1, answering as Telegram does.

python-telegram-bot talks to it exactly as it talks to api.telegram.org, through
``Bot(token, base_url=fake.api_url + "/bot")``. The fake answers with the Bot API's JSON envelopes,
status codes, descriptions and ``parameters``; it validates HTML the way Telegram's parser does;
it records every request (``attempts``) and every successful send or edit (``messages``); and it
misbehaves on demand: 5xx pages, outages (502, hanging, reset connections), 429 with retry_after,
403, chat migration, chat not found, entity errors, and Telegram's flood limits.

It runs in threads (stdlib ``ThreadingHTTPServer``), so the daemon under test may be a coroutine
in the test's event loop or a separate process.

Methods: getMe, sendMessage, editMessageText, deleteMessage, getUpdates (long polling),
deleteWebhook, setMyCommands, getMyCommands, getChat, close, logOut. Anything else is 404 like
Telegram's answer to an unknown method.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import json
import math
import re
import select
import socket
import socketserver
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, cast
from urllib.parse import parse_qsl, urlsplit

DEFAULT_TOKEN = "123456:TEST-token"
MAX_MESSAGE_UTF16 = 4096
# Methods that Telegram's flood control counts; edits count too, in practice.
RATE_LIMITED_METHODS = frozenset({"sendMessage", "editMessageText"})

OutageMode = Literal["502", "timeout", "reset"]
FailureBody = Literal["html", "json"]
ChatId = int | str

_OUTAGE_MODES: frozenset[str] = frozenset({"502", "timeout", "reset"})
_CHAT_TYPES = frozenset({"private", "group", "supergroup", "channel"})
_TOKEN_SHAPE = re.compile(r"\d+:[A-Za-z0-9_-]+")
_API_PATH = re.compile(r"/bot([^/]*)/([^/]*)")
_INT_CHAT = re.compile(r"-?[0-9]+")
_USERNAME_CHAT = re.compile(r"@[A-Za-z][A-Za-z0-9_]{3,31}")
_COMMAND_NAME = re.compile(r"[a-z0-9_]{1,32}")
_LEADING_COMMAND = re.compile(r"/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?")
_MAX_BODY_BYTES = 10 * 1024 * 1024
_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)
_CONFLICT = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
_MIGRATED = "Bad Request: group chat was upgraded to a supergroup chat"


# ---------------------------------------------------------------------------------------------
# Telegram HTML
# ---------------------------------------------------------------------------------------------

_SPACE = frozenset(" \t\r\n\f\v")
_TAG_ENTITY_TYPES: Mapping[str, str] = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "span": "spoiler",
    "tg-spoiler": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
_NAMED_ENTITIES: Mapping[str, str] = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
# Telegram's decoder takes at most 10 bytes for "&#...", i.e. 7 decimal or 6 hex digits.
_ENTITY = re.compile(r"&(?:(lt|gt|amp|quot)|#([0-9]{1,7})|#x([0-9a-fA-F]{1,6}));")
_SPECIAL = re.compile(r"[<&]")


def utf16_length(text: str) -> int:
    """Return the length of ``text`` in UTF-16 code units, the unit of Telegram's limits."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def parse_telegram_html(text: str) -> str:
    """Return the plain text Telegram shows for ``text`` sent with parse_mode=HTML.

    Raises ValueError with a Telegram-like reason (byte offsets are UTF-8, as Telegram reports
    them) when Telegram would answer "Bad Request: can't parse entities".
    """
    return _HtmlParser(text).run()[0]


class _ByteOffset:
    """A str index that formats as its UTF-8 byte offset, computed only if an error is shown."""

    def __init__(self, text: str, index: int) -> None:
        self.text = text
        self.index = index

    def __format__(self, spec: str) -> str:
        return format(len(self.text[: self.index].encode("utf-8", "surrogatepass")), spec)


def _unclosed(offset: _ByteOffset) -> ValueError:
    return ValueError(f"Unclosed start tag at byte offset {offset}")


@dataclass
class _OpenTag:
    name: str
    argument: str
    begin_utf16: int


class _HtmlParser:
    """Telegram's HTML dialect, after tdlib's parser, made strict where the Bot API docs are.

    tdlib copies a bare "&", an unknown entity and an entity without ";" through as text; the
    Bot API docs say every "&" that is not part of an entity must be escaped, so the fake refuses
    them to keep the product from relying on leniency. A bare ">" is accepted, as Telegram does.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.out: list[str] = []
        self.utf16 = 0
        self.stack: list[_OpenTag] = []
        self.entities: list[dict[str, Any]] = []

    def run(self) -> tuple[str, list[dict[str, Any]]]:
        text = self.text
        i = 0
        while i < len(text):
            special = _SPECIAL.search(text, i)
            if special is None:
                self._emit(text[i:])
                break
            self._emit(text[i : special.start()])
            i = special.start()
            if text[i] == "&":
                char, i = self._entity(i)
                self._emit(char)
            elif text.startswith("</", i):
                i = self._end_tag(i)
            else:
                i = self._start_tag(i)
        if self.stack:
            raise ValueError(
                f'Can\'t find end tag corresponding to start tag "{self.stack[-1].name}"'
            )
        self.entities.sort(key=lambda entity: (entity["offset"], -entity["length"]))
        return "".join(self.out), self.entities

    def _emit(self, chunk: str) -> None:
        if chunk:
            self.out.append(chunk)
            self.utf16 += utf16_length(chunk)

    def _byte_offset(self, index: int) -> int:
        return len(self.text[:index].encode("utf-8", "surrogatepass"))

    def _entity(self, begin: int) -> tuple[str, int]:
        match = _ENTITY.match(self.text, begin)
        if match is None:
            raise ValueError(
                f'Unescaped "&" at byte offset {self._byte_offset(begin)}: only &lt; &gt; &amp; '
                "&quot; and numeric character references are supported"
            )
        named, decimal, hexadecimal = match.groups()
        if named is not None:
            return _NAMED_ENTITIES[named], match.end()
        code = int(decimal) if decimal is not None else int(hexadecimal, 16)
        if code == 0 or code >= 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            raise ValueError(
                f"Invalid character reference {match.group(0)} at byte offset "
                f"{self._byte_offset(begin)}"
            )
        return chr(code), match.end()

    def _skip_space(self, i: int) -> int:
        while i < len(self.text) and self.text[i] in _SPACE:
            i += 1
        return i

    def _start_tag(self, begin: int) -> int:
        text = self.text
        offset = _ByteOffset(text, begin)
        i = begin + 1
        while i < len(text) and text[i] not in _SPACE and text[i] != ">":
            i += 1
        if i >= len(text):
            raise _unclosed(offset)
        name = text[begin + 1 : i].lower()
        if name not in _TAG_ENTITY_TYPES:
            raise ValueError(f'Unsupported start tag "{name}" at byte offset {offset}')
        argument = ""
        while True:
            i = self._skip_space(i)
            if i >= len(text):
                raise _unclosed(offset)
            if text[i] == ">":
                break
            attribute_begin = i
            while i < len(text) and text[i] not in _SPACE and text[i] not in "=>":
                i += 1
            attribute = text[attribute_begin:i].lower()
            if not attribute:
                raise ValueError(
                    f'Empty attribute name in the tag "{name}" at byte offset {offset}'
                )
            i = self._skip_space(i)
            if i >= len(text):
                raise _unclosed(offset)
            if text[i] != "=":
                if name == "blockquote" and attribute == "expandable":
                    argument = "expandable"
                    continue
                raise ValueError(
                    "Expected equal sign in declaration of an attribute of the tag "
                    f'"{name}" at byte offset {offset}'
                )
            i = self._skip_space(i + 1)
            if i >= len(text):
                raise _unclosed(offset)
            value, i = self._attribute_value(i, offset)
            if (
                (name == "a" and attribute == "href")
                or (name == "span" and attribute == "class")
                or (name == "tg-emoji" and attribute == "emoji-id")
            ):
                argument = value
            elif name == "code" and attribute == "class" and value.startswith("language-"):
                argument = value.removeprefix("language-")
        if name == "span" and argument != "tg-spoiler":
            raise ValueError(f'Tag "span" must have class "tg-spoiler" at byte offset {offset}')
        if name == "tg-emoji" and not argument.isdigit():
            raise ValueError(
                f'Tag "tg-emoji" must have a numeric "emoji-id" attribute at byte offset {offset}'
            )
        self.stack.append(_OpenTag(name, argument, self.utf16))
        return i + 1

    def _attribute_value(self, i: int, offset: _ByteOffset) -> tuple[str, int]:
        text = self.text
        if text[i] in "'\"":
            quote = text[i]
            i += 1
            parts: list[str] = []
            while i < len(text) and text[i] != quote:
                if text[i] == "&":
                    char, i = self._entity(i)
                    parts.append(char)
                else:
                    parts.append(text[i])
                    i += 1
            if i >= len(text):
                raise _unclosed(offset)
            return "".join(parts), i + 1
        # An unquoted value is an HTML "name token": letters, digits, periods and hyphens.
        token_begin = i
        while i < len(text) and ((text[i].isascii() and text[i].isalnum()) or text[i] in ".-"):
            i += 1
        if i >= len(text):
            raise _unclosed(offset)
        if text[i] not in _SPACE and text[i] != ">":
            raise ValueError(
                f"Unexpected end of name token at byte offset {_ByteOffset(text, token_begin)}"
            )
        return text[token_begin:i].lower(), i

    def _end_tag(self, begin: int) -> int:
        text = self.text
        offset = _ByteOffset(text, begin)
        if not self.stack:
            raise ValueError(f"Unexpected end tag at byte offset {offset}")
        i = begin + 2
        while i < len(text) and text[i] not in _SPACE and text[i] != ">":
            i += 1
        end_name = text[begin + 2 : i].lower()
        i = self._skip_space(i)
        if i >= len(text) or text[i] != ">":
            raise ValueError(f"Unclosed end tag at byte offset {offset}")
        open_tag = self.stack[-1]
        if end_name and end_name != open_tag.name:
            raise ValueError(
                f'Unmatched end tag at byte offset {offset}, expected "</{open_tag.name}>", '
                f'found "</{end_name}>"'
            )
        self.stack.pop()
        self._add_entity(open_tag)
        return i + 1

    def _add_entity(self, tag: _OpenTag) -> None:
        length = self.utf16 - tag.begin_utf16
        if length == 0:
            return
        entity: dict[str, Any] = {
            "type": _TAG_ENTITY_TYPES[tag.name],
            "offset": tag.begin_utf16,
            "length": length,
        }
        if tag.name == "a":
            if not tag.argument:
                return
            entity["url"] = tag.argument
        elif tag.name == "tg-emoji":
            entity["custom_emoji_id"] = tag.argument
        elif tag.name == "blockquote" and tag.argument == "expandable":
            entity["type"] = "expandable_blockquote"
        elif tag.name == "code" and tag.argument and self.stack and self.stack[-1].name == "pre":
            # <pre><code class="language-x"> is one pre entity with a language, as in Telegram.
            self.stack[-1].argument = tag.argument
            return
        elif tag.name == "pre" and tag.argument:
            entity["language"] = tag.argument
        self.entities.append(entity)


def _strip_message(plain: str, entities: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Trim surrounding whitespace as Telegram does, moving entities with the text."""
    stripped = plain.strip()
    if stripped == plain:
        return plain, entities
    shift = utf16_length(plain[: len(plain) - len(plain.lstrip())])
    end = utf16_length(stripped)
    moved: list[dict[str, Any]] = []
    for entity in entities:
        start = max(entity["offset"] - shift, 0)
        stop = min(entity["offset"] + entity["length"] - shift, end)
        if stop > start:
            moved.append({**entity, "offset": start, "length": stop - start})
    return stripped, moved


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SentMessage:
    """One successful sendMessage or editMessageText, as the fake received it."""

    chat_id: str  # as sent: "123", "-100123" or "@channel"
    text: str  # as sent, markup included
    plain_text: str  # what Telegram shows: tags removed, entities decoded, trimmed
    parse_mode: str | None
    link_preview_disabled: bool
    message_id: int
    method: str  # "sendMessage" or "editMessageText"
    reply_markup: dict[str, Any] | None
    received_at: datetime
    params: Mapping[str, str] = field(repr=False)  # every form field, as sent


@dataclass(frozen=True)
class Attempt:
    """One HTTP request the fake received, with the answer it gave."""

    method: str  # canonical name when known, else as requested ("" if the path is not the API's)
    chat_id: str | None
    params: Mapping[str, str]
    status: int | None  # None: no HTTP answer (the connection hung or was reset)
    description: str | None  # Telegram's "description" for errors
    received_at: datetime


@dataclass(frozen=True)
class FakeTelegramStats:
    """Counters since start: requests per method, answers per status, faults served."""

    requests_by_method: Mapping[str, int]
    responses_by_status: Mapping[int, int]
    retry_after_sent: int  # every 429 with retry_after, injected or from flood limits
    flood_limited: int  # 429s caused by enforce_limits
    dropped: int  # requests answered by hanging or resetting the connection

    @property
    def total_requests(self) -> int:
        """Return how many requests the fake received in all."""
        return sum(self.requests_by_method.values())


@dataclass(frozen=True)
class TelegramLimits:
    """Telegram's flood limits as sliding windows: at most N messages in any window of S seconds.

    ``slack_s`` shortens each window a little, so that a client pacing at exactly the limit is not
    refused because of scheduling jitter between its clock and the server's.
    """

    private_messages: int = 1
    private_window_s: float = 1.0
    group_messages: int = 20
    group_window_s: float = 60.0
    overall_messages: int = 30
    overall_window_s: float = 1.0
    slack_s: float = 0.05

    def __post_init__(self) -> None:
        for name in ("private_messages", "group_messages", "overall_messages"):
            if getattr(self, name) < 1:
                raise ValueError(f"TelegramLimits.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("private_window_s", "group_window_s", "overall_window_s"):
            if getattr(self, name) <= self.slack_s:
                raise ValueError(
                    f"TelegramLimits.{name} must be > slack_s ({self.slack_s}), "
                    f"got {getattr(self, name)}"
                )
        if self.slack_s < 0:
            raise ValueError(f"TelegramLimits.slack_s must be >= 0, got {self.slack_s}")


# ---------------------------------------------------------------------------------------------
# Internal plumbing
# ---------------------------------------------------------------------------------------------


class _ApiError(Exception):
    """A Bot API error answer: {"ok": false, "error_code": ..., "description": ...}."""

    def __init__(
        self, status: int, description: str, parameters: dict[str, Any] | None = None
    ) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters


@dataclass(frozen=True)
class _Reply:
    status: int | None
    body: bytes = b""
    content_type: str = "application/json"
    description: str | None = None
    drop: Literal["timeout", "reset"] | None = None
    epoch: int = 0


class _RawReply(Exception):
    """Ends a request with a reply that is not a Bot API JSON answer (5xx page, dropped link)."""

    def __init__(self, reply: _Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


@dataclass
class _Context:
    received_at: datetime
    method: str = ""
    params: dict[str, str] = field(default_factory=dict)
    chat_id: str | None = None


@dataclass
class _FailRule:
    remaining: int
    status: int
    body: FailureBody
    method: str | None
    chat_id: str | None


@dataclass
class _ChatRule:
    remaining: int
    chat_id: str | None
    seconds: int = 0


@dataclass
class _StoredMessage:
    plain_text: str
    entities: list[dict[str, Any]]
    reply_markup: dict[str, Any] | None
    from_bot: bool
    date: int
    deleted: bool = False


def _json_reply(status: int, payload: dict[str, Any], description: str | None = None) -> _Reply:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return _Reply(status=status, body=body, description=description)


def _error_page(status: int, body: FailureBody) -> _Reply:
    phrase = HTTPStatus(status).phrase
    if body == "json":
        return _json_reply(
            status, {"ok": False, "error_code": status, "description": phrase}, phrase
        )
    # What Telegram's nginx front end serves when the Bot API server behind it is unavailable.
    page = (
        f"<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {phrase}</h1></center>\r\n<hr><center>nginx/1.18.0</center>\r\n"
        "</body>\r\n</html>\r\n"
    )
    return _Reply(status=status, body=page.encode(), content_type="text/html", description=phrase)


def chat_key(chat_id: ChatId) -> str:
    """Return the string form of a chat id as PTB sends it ("123", "-100123", "@channel")."""
    if isinstance(chat_id, bool) or not isinstance(chat_id, int | str):
        raise TypeError(f"chat_id must be an int or an '@username' str, got {chat_id!r}")
    if isinstance(chat_id, int):
        return str(chat_id)
    if _INT_CHAT.fullmatch(chat_id):
        return str(int(chat_id))
    if _USERNAME_CHAT.fullmatch(chat_id):
        return chat_id
    raise ValueError(f"chat_id must be an integer or an '@username', got {chat_id!r}")


def _is_private(chat: str) -> bool:
    return not chat.startswith(("-", "@"))


def _decode_params(query: str, content_type: str, body: bytes) -> dict[str, str]:
    """Decode request parameters the ways Telegram accepts: query, form, JSON, multipart."""
    try:
        params = dict(parse_qsl(query, keep_blank_values=True, errors="strict"))
        media_type = content_type.split(";", 1)[0].strip().lower()
        if not body:
            return params
        if media_type == "application/x-www-form-urlencoded":
            params.update(parse_qsl(body.decode("ascii"), keep_blank_values=True, errors="strict"))
        elif media_type == "application/json":
            decoded = json.loads(body.decode("utf-8"))
            if not isinstance(decoded, dict):
                raise _ApiError(400, "Bad Request: the JSON body must be an object")
            for name, value in decoded.items():
                params[name] = value if isinstance(value, str) else json.dumps(value)
        elif media_type == "multipart/form-data":
            params.update(_decode_multipart(content_type, body))
        else:
            raise _ApiError(400, f"Bad Request: unsupported Content-Type {media_type!r}")
    except UnicodeDecodeError as exc:
        raise _ApiError(400, "Bad Request: strings must be encoded in UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise _ApiError(400, f"Bad Request: can't parse JSON body: {exc}") from exc
    return params


def _decode_multipart(content_type: str, body: bytes) -> dict[str, str]:
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise _ApiError(400, "Bad Request: can't parse multipart/form-data body")
    params: dict[str, str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        # Uploaded files are summarized: no method the fake implements reads file contents.
        params[name] = (
            f"<file {filename!r}, {len(data)} bytes>" if filename else data.decode("utf-8")
        )
    return params


def _int_param(params: Mapping[str, str], name: str) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise _ApiError(
            400, f'Bad Request: field "{name}" must be an integer, got {value!r}'
        ) from None


def _float_param(params: Mapping[str, str], name: str) -> float | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise _ApiError(
            400, f'Bad Request: field "{name}" must be a number, got {value!r}'
        ) from None


def _bool_param(params: Mapping[str, str], name: str) -> bool:
    value = params.get(name, "").strip().lower()
    if value in ("", "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise _ApiError(400, f'Bad Request: field "{name}" must be a Boolean, got {value!r}')


def _json_param(params: Mapping[str, str], name: str) -> Any:
    value = params.get(name)
    if value is None or value == "":
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise _ApiError(400, f'Bad Request: can\'t parse "{name}" JSON: {value!r}') from None


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], fake: FakeTelegram) -> None:
        self.fake = fake
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall on a bad resolver.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hang up mid-answer all the time (timeouts, shutdown); that is not a fake bug.
        pass


# The connection of the request a server thread is handling, for long polls to notice a
# client that went away (killed, or gave up) as Telegram does, instead of holding the thread.
_current = threading.local()


def _client_gone() -> bool:
    """True when the peer of the current request closed its connection."""
    sock: socket.socket | None = getattr(_current, "connection", None)
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nginx/1.18.0"
    sys_version = ""

    @property
    def fake(self) -> FakeTelegram:
        return cast(_Server, self.server).fake

    def setup(self) -> None:
        super().setup()
        # Without NODELAY, Nagle and delayed ACKs add ~40 ms to every small answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.fake._track_connection(self.connection, threading.current_thread())

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.fake._untrack_connection(self.connection)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > _MAX_BODY_BYTES:
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > _MAX_BODY_BYTES:
            return None
        return self.rfile.read(length)

    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except ValueError:
            self._send(_error_page(400, "html"))
            self.close_connection = True
            return
        if body is None:
            self._send(_error_page(413, "html"))
            self.close_connection = True
            return
        url = urlsplit(self.path)
        _current.connection = self.connection
        with self.fake._answering():
            self._answer(url.path, url.query, body)

    def _answer(self, path: str, query: str, body: bytes) -> None:
        reply = self.fake._handle(path, query, self.headers.get("Content-Type", ""), body)
        if reply.drop == "reset":
            # SO_LINGER 0 makes close() send RST: the client sees "connection reset by peer".
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # The socket closes for real only once its file objects are closed too.
            self.rfile.close()
            self.wfile.close()
            self.connection.close()
            self.close_connection = True
            return
        if reply.drop == "timeout":
            self.fake._hang(reply.epoch)
            self.close_connection = True
            return
        self.fake._answer_late(path)
        self._send(reply)

    def _send(self, reply: _Reply) -> None:
        self.send_response(reply.status or 500)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        self.wfile.write(reply.body)


# ---------------------------------------------------------------------------------------------
# The fake
# ---------------------------------------------------------------------------------------------


class FakeTelegram:
    """A Bot API server on 127.0.0.1 that answers like Telegram and misbehaves on demand."""

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        enforce_limits: bool = False,
        limits: TelegramLimits | None = None,
    ) -> None:
        if not _TOKEN_SHAPE.fullmatch(token):
            raise ValueError(f"token must look like Telegram's '<digits>:<secret>', got {token!r}")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {port}")
        self.token = token
        self.host = host
        self.port = port
        self.enforce_limits = enforce_limits
        self.limits = limits or TelegramLimits()
        self.bot_user: dict[str, Any] = {
            "id": int(token.split(":", 1)[0]),
            "is_bot": True,
            "first_name": "Fake Bot",
            "username": "fake_test_bot",
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }
        self._cond = threading.Condition(threading.RLock())
        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._started = False
        self._stopping = False
        self._connections: dict[socket.socket, threading.Thread] = {}
        # Records.
        self._messages: list[SentMessage] = []
        self._attempts: list[Attempt] = []
        self._deletions: list[tuple[str, int]] = []
        self._commands: list[dict[str, str]] = []
        self._server_errors: list[str] = []
        self._requests_by_method: Counter[str] = Counter()
        self._responses_by_status: Counter[int] = Counter()
        self._retry_after_sent = 0
        self._flood_limited = 0
        self._dropped = 0
        # Chat state.
        self._last_message_id: Counter[str] = Counter()
        self._stored: dict[tuple[str, int], _StoredMessage] = {}
        self._username_ids: dict[str, int] = {}
        # Updates.
        self._updates: list[dict[str, Any]] = []
        self._next_update_id = 100_001
        self._poll_generation = 0
        self._pollers_waiting = 0
        self._answers = 0  # requests being answered (stop waits for them)
        # Faults.
        self._down_mode: OutageMode | None = None
        self._down_chats: dict[str, OutageMode] = {}
        self._outage_epoch = 0
        self._fail_rules: list[_FailRule] = []
        self._retry_rules: list[_ChatRule] = []
        self._entity_rules: list[_ChatRule] = []
        self._forbidden: dict[str, str] = {}
        self._migrated: dict[str, int] = {}
        self._not_found: set[str] = set()
        self._slow_answers: dict[str, float] = {}  # method -> seconds its answers are late
        # Flood control: send times (monotonic) per chat and overall.
        self._chat_sends: dict[str, deque[float]] = {}
        self._overall_sends: deque[float] = deque()
        handlers: dict[str, Callable[[_Context], Any]] = {
            "getMe": self._get_me,
            "sendMessage": self._send_message,
            "editMessageText": self._edit_message_text,
            "deleteMessage": self._delete_message,
            "getUpdates": self._get_updates,
            "deleteWebhook": self._delete_webhook,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "getChat": self._get_chat,
            "close": self._ok,
            "logOut": self._ok,
        }
        # Telegram's method names are case-insensitive: key by lower case, keep the real name.
        self._methods = {name.lower(): (name, handler) for name, handler in handlers.items()}

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> FakeTelegram:
        """Bind and serve in a background thread; return self."""
        with self._cond:
            if self._started:
                raise RuntimeError("FakeTelegram can be started only once")
            self._started = True
        self._server = _Server((self.host, self.port), self)
        self.port = int(self._server.server_address[1])
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-telegram:{self.port}",
            daemon=True,
        )
        self._serve_thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: release long polls and hung requests, close every connection."""
        with self._cond:
            if self._stopping or self._server is None:
                return
            self._stopping = True
            self._cond.notify_all()
            # Released long polls and hung requests answer first: closing their sockets under
            # them would reset the connection before the answer is written.
            self._cond.wait_for(lambda: self._answers == 0, timeout=5.0)
        server = self._server
        server.shutdown()
        server.server_close()
        with self._cond:
            connections = list(self._connections.items())
        for sock, _ in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + 5.0
        for _, thread in connections:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._serve_thread is not None:
            self._serve_thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> FakeTelegram:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def api_url(self) -> str:
        """Root URL of the API, e.g. "http://127.0.0.1:PORT"; PTB appends "/bot<token>"."""
        if self._server is None:
            raise RuntimeError("FakeTelegram is not started; call start() or use it as a context")
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The value for PTB's ``Bot(base_url=...)``: api_url + "/bot"."""
        return f"{self.api_url}/bot"

    # -- records ----------------------------------------------------------------------------

    @property
    def messages(self) -> list[SentMessage]:
        """Every successful send and edit, in the order the fake accepted them."""
        with self._cond:
            return list(self._messages)

    @property
    def attempts(self) -> list[Attempt]:
        """Every request received, successful or not, in arrival order of their answers."""
        with self._cond:
            return list(self._attempts)

    @property
    def deletions(self) -> list[tuple[str, int]]:
        """(chat_id, message_id) of every successful deleteMessage."""
        with self._cond:
            return list(self._deletions)

    @property
    def commands(self) -> list[dict[str, str]]:
        """The bot commands from the last successful setMyCommands."""
        with self._cond:
            return [dict(command) for command in self._commands]

    @property
    def server_errors(self) -> list[str]:
        """Bugs inside the fake itself (answered as 500); tests should assert this is empty."""
        with self._cond:
            return list(self._server_errors)

    @property
    def stats(self) -> FakeTelegramStats:
        """A snapshot of the counters."""
        with self._cond:
            return FakeTelegramStats(
                requests_by_method=dict(self._requests_by_method),
                responses_by_status=dict(self._responses_by_status),
                retry_after_sent=self._retry_after_sent,
                flood_limited=self._flood_limited,
                dropped=self._dropped,
            )

    def sent_to(self, chat_id: ChatId) -> list[SentMessage]:
        """Successful sends and edits to one chat."""
        key = chat_key(chat_id)
        with self._cond:
            return [message for message in self._messages if message.chat_id == key]

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` is true, re-checked after every request; False on timeout."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def wait_for_messages(self, n: int, timeout: float, *, chat_id: ChatId | None = None) -> bool:
        """Wait until at least ``n`` messages were recorded (to ``chat_id`` if given)."""
        if chat_id is None:
            return self.wait_until(lambda: len(self._messages) >= n, timeout)
        key = chat_key(chat_id)
        return self.wait_until(
            lambda: sum(message.chat_id == key for message in self._messages) >= n, timeout
        )

    def wait_for_poller(self, timeout: float) -> bool:
        """Wait until a getUpdates long poll is waiting for updates."""
        return self.wait_until(lambda: self._pollers_waiting > 0, timeout)

    # -- updates ----------------------------------------------------------------------------

    def push_update(
        self,
        *,
        text: str,
        chat_id: int,
        user_id: int,
        chat_type: str = "private",
        username: str | None = None,
        first_name: str = "Tester",
    ) -> dict[str, Any]:
        """Queue a message update for getUpdates, as Telegram sends it; return the Update JSON."""
        if chat_type not in _CHAT_TYPES:
            raise ValueError(f"chat_type must be one of {sorted(_CHAT_TYPES)}, got {chat_type!r}")
        if chat_type == "private" and chat_id <= 0:
            raise ValueError(f"a private chat's id is the user's id (> 0), got {chat_id}")
        if chat_type != "private" and chat_id >= 0:
            raise ValueError(f"a {chat_type}'s chat_id must be negative, got {chat_id}")
        if not text:
            raise ValueError("text must not be empty")
        key = str(chat_id)
        with self._cond:
            message_id = self._new_message_id(key)
            now = int(time.time())
            chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
            if chat_type == "private":
                chat["first_name"] = first_name
                if username:
                    chat["username"] = username
            else:
                chat["title"] = f"Chat {chat_id}"
            message: dict[str, Any] = {"message_id": message_id, "date": now, "chat": chat}
            if chat_type == "channel":
                message["sender_chat"] = chat
            else:
                sender: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
                if username:
                    sender["username"] = username
                message["from"] = sender
            message["text"] = text
            command = _LEADING_COMMAND.match(text)
            if command:
                message["entities"] = [
                    {"type": "bot_command", "offset": 0, "length": utf16_length(command.group())}
                ]
            kind = "channel_post" if chat_type == "channel" else "message"
            update = {"update_id": self._next_update_id, kind: message}
            self._next_update_id += 1
            self._updates.append(update)
            self._stored[(key, message_id)] = _StoredMessage(
                text, list(message.get("entities", [])), None, from_bot=False, date=now
            )
            self._cond.notify_all()
            return update

    # -- faults -----------------------------------------------------------------------------

    def fail_next(
        self,
        n: int,
        *,
        status: int = 502,
        method: str | None = None,
        chat_id: ChatId | None = None,
        body: FailureBody = "html",
    ) -> None:
        """Answer the next ``n`` matching requests with a raw error page (nginx HTML or JSON)."""
        _check_count(n)
        if not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error status (400-599), got {status}")
        if body not in ("html", "json"):
            raise ValueError(f"body must be 'html' or 'json', got {body!r}")
        key = None if chat_id is None else chat_key(chat_id)
        if method is not None and method.lower() in self._methods:
            method = self._methods[method.lower()][0]
        with self._cond:
            self._fail_rules.append(_FailRule(n, status, body, method, key))

    def set_down(
        self, down: bool, *, mode: OutageMode = "502", chat_id: ChatId | None = None
    ) -> None:
        """Start or end an outage of every request (or of requests for one chat).

        mode "502": nginx's Bad Gateway page; "timeout": never answer (until the outage ends or
        the fake stops, then close the connection); "reset": drop the connection with a RST.
        """
        if mode not in _OUTAGE_MODES:
            raise ValueError(f"mode must be one of {sorted(_OUTAGE_MODES)}, got {mode!r}")
        key = None if chat_id is None else chat_key(chat_id)
        with self._cond:
            if key is None:
                self._down_mode = mode if down else None
            elif down:
                self._down_chats[key] = mode
            else:
                self._down_chats.pop(key, None)
            self._outage_epoch += 1
            self._cond.notify_all()

    def retry_after_next(self, chat_id: ChatId | None, seconds: int, n: int = 1) -> None:
        """Answer the next ``n`` requests for the chat (any chat if None) with 429 retry_after."""
        _check_count(n)
        if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 1:
            raise ValueError(f"seconds must be an int >= 1 (Telegram's unit), got {seconds!r}")
        key = None if chat_id is None else chat_key(chat_id)
        with self._cond:
            self._retry_rules.append(_ChatRule(n, key, seconds))

    def forbid(
        self, chat_id: ChatId, description: str = "Forbidden: bot was blocked by the user"
    ) -> None:
        """Answer 403 to every request for the chat from now on."""
        if not description.startswith("Forbidden: "):
            raise ValueError(
                f"Telegram's 403 descriptions start with 'Forbidden: ', got {description!r}"
            )
        with self._cond:
            self._forbidden[chat_key(chat_id)] = description

    def migrate(self, chat_id: ChatId, new_chat_id: int) -> None:
        """Upgrade a group: its old id answers 400 with migrate_to_chat_id from now on."""
        old = chat_key(chat_id)
        if not str(new_chat_id).startswith("-100") or old == str(new_chat_id):
            raise ValueError(
                f"new_chat_id must be a different supergroup id (-100...), got {new_chat_id!r}"
            )
        with self._cond:
            self._migrated[old] = new_chat_id

    def chat_not_found(self, chat_id: ChatId) -> None:
        """Answer 400 "chat not found" for the chat from now on (bot never was in it)."""
        with self._cond:
            self._not_found.add(chat_key(chat_id))

    def reject_entities_next(self, n: int = 1, *, chat_id: ChatId | None = None) -> None:
        """Refuse the next ``n`` sends/edits with "can't parse entities", even valid ones."""
        _check_count(n)
        key = None if chat_id is None else chat_key(chat_id)
        with self._cond:
            self._entity_rules.append(_ChatRule(n, key))

    def slow_answers(self, seconds: float, *, method: str = "sendMessage") -> None:
        """Carry out each ``method`` request at once but answer it ``seconds`` late (0: on
        time again), as Telegram does under load: a client that times out has sent anyway."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        name = self._methods[method.lower()][0] if method.lower() in self._methods else method
        with self._cond:
            if seconds:
                self._slow_answers[name] = seconds
            else:
                self._slow_answers.pop(name, None)

    def _answer_late(self, path: str) -> None:
        """Hold an answer back as slow_answers says (cut short when the fake stops)."""
        found = _API_PATH.fullmatch(path)
        method = found.group(2) if found else ""
        with self._cond:
            delay = self._slow_answers.get(self._methods.get(method.lower(), (method,))[0], 0.0)
            if delay:
                self._cond.wait_for(lambda: self._stopping, timeout=delay)

    def clear_faults(self) -> None:
        """Lift every injected fault and outage (records and message ids are kept)."""
        with self._cond:
            self._down_mode = None
            self._down_chats.clear()
            self._outage_epoch += 1
            self._fail_rules.clear()
            self._retry_rules.clear()
            self._entity_rules.clear()
            self._forbidden.clear()
            self._migrated.clear()
            self._not_found.clear()
            self._slow_answers.clear()
            self._cond.notify_all()

    # -- request handling (server threads) ------------------------------------------------

    @contextlib.contextmanager
    def _answering(self) -> Iterator[None]:
        """Count a request from its dispatch until its answer is written."""
        with self._cond:
            self._answers += 1
        try:
            yield
        finally:
            with self._cond:
                self._answers -= 1
                self._cond.notify_all()

    def _track_connection(self, sock: socket.socket, thread: threading.Thread) -> None:
        with self._cond:
            self._connections[sock] = thread

    def _untrack_connection(self, sock: socket.socket) -> None:
        with self._cond:
            self._connections.pop(sock, None)

    def _hang(self, epoch: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._stopping or self._outage_epoch != epoch)

    def _handle(self, path: str, query: str, content_type: str, body: bytes) -> _Reply:
        context = _Context(received_at=datetime.now(UTC))
        try:
            result = self._answer(context, path, query, content_type, body)
            reply = _json_reply(200, {"ok": True, "result": result})
        except _ApiError as err:
            payload: dict[str, Any] = {
                "ok": False,
                "error_code": err.status,
                "description": err.description,
            }
            if err.parameters:
                payload["parameters"] = err.parameters
            reply = _json_reply(err.status, payload, err.description)
        except _RawReply as raw:
            reply = raw.reply
        except Exception as exc:  # a bug in the fake: answer, and keep it for the test to see
            with self._cond:
                self._server_errors.append(f"{context.method}: {exc!r}")
            reply = _json_reply(
                500,
                {"ok": False, "error_code": 500, "description": f"Internal Server Error: {exc!r}"},
            )
        self._log(context, reply)
        return reply

    def _log(self, context: _Context, reply: _Reply) -> None:
        with self._cond:
            self._attempts.append(
                Attempt(
                    method=context.method,
                    chat_id=context.chat_id,
                    params=dict(context.params),
                    status=reply.status,
                    description=reply.description,
                    received_at=context.received_at,
                )
            )
            self._requests_by_method[context.method] += 1
            if reply.status is None:
                self._dropped += 1
            else:
                self._responses_by_status[reply.status] += 1
            if reply.status == 429:
                self._retry_after_sent += 1
            self._cond.notify_all()

    def _outage(self, mode: OutageMode) -> _RawReply:
        if mode == "502":
            return _RawReply(_error_page(502, "html"))
        return _RawReply(_Reply(status=None, drop=mode, epoch=self._outage_epoch))

    def _answer(
        self, context: _Context, path: str, query: str, content_type: str, body: bytes
    ) -> Any:
        match = _API_PATH.fullmatch(path)
        if match is not None:
            token, requested = match.groups()
            known = self._methods.get(requested.lower())
            context.method = requested if known is None else known[0]
        with self._cond:
            if self._down_mode is not None:
                raise self._outage(self._down_mode)
        if match is None:
            raise _ApiError(404, "Not Found")
        if token != self.token:
            # Telegram: 401 for a well-formed token it does not know, 404 for a malformed one.
            if _TOKEN_SHAPE.fullmatch(token):
                raise _ApiError(401, "Unauthorized")
            raise _ApiError(404, "Not Found")
        context.params = _decode_params(query, content_type, body)
        if known is None:
            raise _ApiError(404, "Not Found")
        raw_chat = context.params.get("chat_id")
        if raw_chat:
            with contextlib.suppress(ValueError):
                context.chat_id = chat_key(raw_chat)
        with self._cond:
            self._check_faults(context)
        return known[1](context)

    def _check_faults(self, context: _Context) -> None:
        chat = context.chat_id
        if chat is not None and chat in self._down_chats:
            raise self._outage(self._down_chats[chat])
        for rule in self._fail_rules:
            if rule.method in (None, context.method) and rule.chat_id in (None, chat):
                _consume(self._fail_rules, rule)
                raise _RawReply(_error_page(rule.status, rule.body))
        if chat is None:
            return
        if chat in self._forbidden:
            raise _ApiError(403, self._forbidden[chat])
        if chat in self._migrated:
            raise _ApiError(400, _MIGRATED, {"migrate_to_chat_id": self._migrated[chat]})
        if chat in self._not_found:
            raise _ApiError(400, "Bad Request: chat not found")
        for retry in self._retry_rules:
            if retry.chat_id in (None, chat):
                _consume(self._retry_rules, retry)
                raise _retry_after(retry.seconds)

    def _check_flood(self, method: str, chat: str) -> None:
        """Refuse with 429 a send that would break Telegram's limits; else count it."""
        if not self.enforce_limits or method not in RATE_LIMITED_METHODS:
            return
        limits = self.limits
        now = time.monotonic()
        sends = self._chat_sends.setdefault(chat, deque())
        if _is_private(chat):
            chat_limit = (sends, limits.private_messages, limits.private_window_s)
        else:
            chat_limit = (sends, limits.group_messages, limits.group_window_s)
        overall = (self._overall_sends, limits.overall_messages, limits.overall_window_s)
        for times, allowed, window_s in (chat_limit, overall):
            window = window_s - limits.slack_s
            while times and times[0] <= now - window:
                times.popleft()
            if len(times) >= allowed:
                free_at = times[len(times) - allowed] + window
                self._flood_limited += 1
                raise _retry_after(max(1, math.ceil(free_at - now)))
        sends.append(now)
        self._overall_sends.append(now)

    def _new_message_id(self, chat: str) -> int:
        self._last_message_id[chat] += 1
        return self._last_message_id[chat]

    def _chat_json(self, chat: str) -> dict[str, Any]:
        if chat.startswith("@"):
            chat_id = self._username_ids.setdefault(
                chat.lower(), -1_001_000_000_001 - len(self._username_ids)
            )
            return {
                "id": chat_id,
                "type": "channel",
                "title": f"Channel {chat}",
                "username": chat[1:],
            }
        chat_id = int(chat)
        if chat_id > 0:
            return {"id": chat_id, "type": "private", "first_name": f"User {chat_id}"}
        kind = "supergroup" if chat.startswith("-100") else "group"
        return {"id": chat_id, "type": kind, "title": f"Chat {chat_id}"}

    def _message_json(self, chat: str, message_id: int, stored: _StoredMessage) -> dict[str, Any]:
        message: dict[str, Any] = {
            "message_id": message_id,
            "from": self.bot_user,
            "chat": self._chat_json(chat),
            "date": stored.date,
            "text": stored.plain_text,
        }
        if stored.entities:
            message["entities"] = stored.entities
        if stored.reply_markup is not None:
            message["reply_markup"] = stored.reply_markup
        return message

    # -- methods ----------------------------------------------------------------------------

    def _ok(self, context: _Context) -> bool:
        return True

    def _get_me(self, context: _Context) -> dict[str, Any]:
        return self.bot_user

    def _require_chat(self, context: _Context) -> str:
        raw = context.params.get("chat_id")
        if not raw:
            raise _ApiError(400, "Bad Request: chat_id is empty")
        if context.chat_id is None:
            raise _ApiError(400, "Bad Request: chat not found")
        return context.chat_id

    def _require_message_id(self, context: _Context) -> int:
        message_id = _int_param(context.params, "message_id")
        if message_id is None:
            raise _ApiError(400, "Bad Request: message identifier is not specified")
        return message_id

    def _message_text(self, context: _Context) -> tuple[str, list[dict[str, Any]], str | None]:
        """Validate text and parse_mode like Telegram; return (plain text, entities, mode)."""
        text = context.params.get("text", "")
        if not text:
            raise _ApiError(400, "Bad Request: message text is empty")
        parse_mode = context.params.get("parse_mode") or None
        mode = (parse_mode or "").lower()
        if mode == "html":
            try:
                plain, entities = _HtmlParser(text).run()
            except ValueError as exc:
                raise _ApiError(400, f"Bad Request: can't parse entities: {exc}") from None
        elif mode in ("", "markdown", "markdownv2"):
            # Markdown is not validated by the fake; its length is counted on the raw text.
            plain, entities = text, []
        else:
            raise _ApiError(400, "Bad Request: unsupported parse_mode")
        plain, entities = _strip_message(plain, entities)
        if not plain:
            raise _ApiError(400, "Bad Request: message text is empty")
        if utf16_length(plain) > MAX_MESSAGE_UTF16:
            raise _ApiError(400, "Bad Request: message is too long")
        return plain, entities, parse_mode

    def _reply_markup(self, context: _Context) -> dict[str, Any] | None:
        value = context.params.get("reply_markup")
        if not value:
            return None
        try:
            markup = json.loads(value)
        except json.JSONDecodeError:
            markup = None
        if not isinstance(markup, dict):
            raise _ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
        return markup

    def _link_preview_disabled(self, context: _Context) -> bool:
        options = _json_param(context.params, "link_preview_options")
        if options is not None and not isinstance(options, dict):
            raise _ApiError(400, "Bad Request: can't parse link preview options JSON object")
        if options and options.get("is_disabled") is True:
            return True
        return _bool_param(context.params, "disable_web_page_preview")

    def _check_entity_rules(self, chat: str) -> None:
        for rule in self._entity_rules:
            if rule.chat_id in (None, chat):
                _consume(self._entity_rules, rule)
                raise _ApiError(
                    400,
                    "Bad Request: can't parse entities: Can't find end of the entity starting "
                    "at byte offset 0",
                )

    def _record(
        self,
        context: _Context,
        chat: str,
        message_id: int,
        plain: str,
        parse_mode: str | None,
        reply_markup: dict[str, Any] | None,
        link_preview_disabled: bool,
    ) -> None:
        self._messages.append(
            SentMessage(
                chat_id=chat,
                text=context.params["text"],
                plain_text=plain,
                parse_mode=parse_mode,
                link_preview_disabled=link_preview_disabled,
                message_id=message_id,
                method=context.method,
                reply_markup=reply_markup,
                received_at=context.received_at,
                params=dict(context.params),
            )
        )
        self._cond.notify_all()

    def _send_message(self, context: _Context) -> dict[str, Any]:
        chat = self._require_chat(context)
        with self._cond:
            self._check_entity_rules(chat)
        plain, entities, parse_mode = self._message_text(context)
        reply_markup = self._reply_markup(context)
        preview_disabled = self._link_preview_disabled(context)
        with self._cond:
            self._check_flood(context.method, chat)
            message_id = self._new_message_id(chat)
            stored = _StoredMessage(
                plain, entities, reply_markup, from_bot=True, date=int(time.time())
            )
            self._stored[(chat, message_id)] = stored
            self._record(
                context, chat, message_id, plain, parse_mode, reply_markup, preview_disabled
            )
            message = self._message_json(chat, message_id, stored)
        if preview_disabled:
            message["link_preview_options"] = {"is_disabled": True}
        return message

    def _edit_message_text(self, context: _Context) -> dict[str, Any]:
        if context.params.get("inline_message_id"):
            raise _ApiError(400, "Bad Request: the fake does not support inline messages")
        chat = self._require_chat(context)
        message_id = self._require_message_id(context)
        with self._cond:
            self._check_entity_rules(chat)
        plain, entities, parse_mode = self._message_text(context)
        reply_markup = self._reply_markup(context)
        preview_disabled = self._link_preview_disabled(context)
        with self._cond:
            stored = self._stored.get((chat, message_id))
            if stored is None or stored.deleted:
                raise _ApiError(400, "Bad Request: message to edit not found")
            if not stored.from_bot:
                raise _ApiError(400, "Bad Request: message can't be edited")
            if (stored.plain_text, stored.entities, stored.reply_markup) == (
                plain,
                entities,
                reply_markup,
            ):
                raise _ApiError(400, _NOT_MODIFIED)
            self._check_flood(context.method, chat)
            stored.plain_text, stored.entities, stored.reply_markup = plain, entities, reply_markup
            self._record(
                context, chat, message_id, plain, parse_mode, reply_markup, preview_disabled
            )
            message = self._message_json(chat, message_id, stored)
        message["edit_date"] = int(time.time())
        return message

    def _delete_message(self, context: _Context) -> bool:
        chat = self._require_chat(context)
        message_id = self._require_message_id(context)
        with self._cond:
            stored = self._stored.get((chat, message_id))
            if stored is None or stored.deleted:
                raise _ApiError(400, "Bad Request: message to delete not found")
            stored.deleted = True
            self._deletions.append((chat, message_id))
        return True

    def _get_updates(self, context: _Context) -> list[dict[str, Any]]:
        offset = _int_param(context.params, "offset")
        limit = _int_param(context.params, "limit") or 100
        limit = min(max(limit, 1), 100)
        timeout = max(_float_param(context.params, "timeout") or 0.0, 0.0)
        deadline = time.monotonic() + timeout
        with self._cond:
            self._poll_generation += 1
            generation = self._poll_generation
            self._confirm_updates(offset)
            self._pollers_waiting += 1
            self._cond.notify_all()
            try:
                while not self._updates and not self._stopping:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or _client_gone():
                        break
                    self._cond.wait(min(remaining, 0.1))
                    if self._poll_generation != generation:
                        # Telegram ends the older of two concurrent long polls with 409.
                        raise _ApiError(409, _CONFLICT)
            finally:
                self._pollers_waiting -= 1
            return [dict(update) for update in self._updates[:limit]]

    def _confirm_updates(self, offset: int | None) -> None:
        """Forget updates as Telegram does: below a positive offset, or all but the last -N."""
        if offset is None or offset == 0:
            return
        if offset > 0:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        else:
            self._updates = self._updates[offset:]

    def _delete_webhook(self, context: _Context) -> bool:
        if _bool_param(context.params, "drop_pending_updates"):
            with self._cond:
                self._updates.clear()
        return True

    def _set_my_commands(self, context: _Context) -> bool:
        commands = _json_param(context.params, "commands")
        if not isinstance(commands, list):
            raise _ApiError(400, "Bad Request: can't parse commands JSON array")
        parsed: list[dict[str, str]] = []
        for entry in commands:
            if not isinstance(entry, dict):
                raise _ApiError(400, "Bad Request: can't parse BotCommand JSON object")
            command, description = entry.get("command"), entry.get("description")
            if not isinstance(command, str) or not _COMMAND_NAME.fullmatch(command):
                raise _ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not isinstance(description, str) or not 1 <= len(description) <= 256:
                raise _ApiError(400, "Bad Request: command description is invalid")
            parsed.append({"command": command, "description": description})
        if len(parsed) > 100:
            raise _ApiError(400, "Bad Request: too many commands")
        with self._cond:
            self._commands = parsed
        return True

    def _get_my_commands(self, context: _Context) -> list[dict[str, str]]:
        return self.commands

    def _get_chat(self, context: _Context) -> dict[str, Any]:
        chat = self._require_chat(context)
        with self._cond:
            info = self._chat_json(chat)
        info.update(
            accent_color_id=0,
            max_reaction_count=11,
            accepted_gift_types={
                "unlimited_gifts": False,
                "limited_gifts": False,
                "unique_gifts": False,
                "premium_subscription": False,
                "gifts_from_channels": False,
            },
        )
        return info


def _check_count(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")


def _consume(rules: list[Any], rule: _FailRule | _ChatRule) -> None:
    rule.remaining -= 1
    if rule.remaining <= 0:
        rules.remove(rule)


def _retry_after(seconds: int) -> _ApiError:
    return _ApiError(429, f"Too Many Requests: retry after {seconds}", {"retry_after": seconds})
