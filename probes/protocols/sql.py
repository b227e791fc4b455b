"""SQL text as a record may carry it: every literal replaced by "?", plus what the query does.

normalize_query() gives the OpenTelemetry db.query.text, db.query.summary ("SELECT users"),
db.operation.name and db.collection.name of one SQL text. It runs once per captured exchange, so it
is built for speed: one regex pass (atomic groups, no backtracking) replaces literals and comments,
a few more collapse whitespace and lists, and the operation and table are read off the result with
a handful of anchored matches. Results are memoized, because applications send the same
statements over and over.

What counts as a literal depends on the dialect (`dialect=` is schema.PROTO_POSTGRESQL,
schema.PROTO_MYSQL, or "" for neither):
- PostgreSQL: '...' with '' inside (standard_conforming_strings, the default since 9.1),
  E'...' with backslash escapes, $$...$$ and $tag$...$tag$, B'...' and X'...'; "..." is a name.
- MySQL/MariaDB: '...' and "..." both with backslash escapes (the default sql_mode), X'...',
  0x.., b'...', _charset'...'; `...` is a name; # starts a comment like -- and /* */.
- Neither: '...' with backslash escapes too (a quote escaped MySQL-style must not end the
  string early and leak the rest), "..." and `...` are names.
Anything unterminated runs to the end of the text and becomes one "?": a capture cut in the middle
of a string never shows the part it has. Booleans and NULL are words and stay.

A host's redaction policy may keep the literals (probes.redact.Policy.sql_literals, "keep"): then
db.query.text is the statement as sent with its literals, comments dropped and whitespace collapsed,
and nothing else changed (lists and rows stay as they were). The summary, operation and table are
still read off the masked text, so they group as before; db.query.text then differs per value, so
anything grouping by it gets one group per literal.
"""

import re
from functools import lru_cache

from probes import schema
from probes.redact import CUT_MARKER, DEFAULT_POLICY, Policy, mask_connection_credentials, safe_text
from probes.schema import PROTO_MYSQL, PROTO_POSTGRESQL

MAX_QUERY_CHARS = 1024  # db.query.text as stored, the last one CUT_MARKER when cut
MAX_SCAN_CHARS = 16 * 1024  # longer texts are read this far: the kernel captures 1 KiB anyway
MAX_NAME_CHARS = 128  # db.collection.name
MAX_OPERATION_CHARS = 32
MEMO_SIZE = 4096  # distinct texts remembered
MEMO_MAX_CHARS = 4096  # longer texts are not remembered: they would pin memory for nothing

EMPTY = ("", "", "", "")

# --- literals and comments ------------------------------------------------------------------
#
# One match is: a run of text that holds no literal (`prefix`: words, names, operators, spaces,
# placeholders), then one literal, one comment or the end. So the per-match Python work happens
# once per literal, not once per token, and every match succeeds where it starts: no rescans.
# Repeated groups are atomic, (?>(?:...)*), not possessive, (?:...)*+: CPython 3.11.2 (Debian 12)
# wrongly fails `(?:a|-(?!-))*+--` on "a--", a possessive group holding a lookahead.

_WORDS = r"[^\W\d][\w$]*+"  # identifiers and keywords, digits inside them included
_PLAIN = r"[^'\"`$\d.\-/#\w]++"
_LONE = r"\$\d++|\$(?!(?:[^\W\d]\w*+)?\$)|\.(?!\d)|-(?!-)|/(?!\*)"  # $1, a.b, a - b, a / b
_DOUBLE_QUOTED_NAME = r'"(?>(?:[^"]++|"")*)"'
_BACKTICK_NAME = r"`(?>(?:[^`]++|``)*)`"

_QUOTED_STANDARD = r"'(?>(?:[^']++|'')*)'?"
_QUOTED_BACKSLASH = r"'(?>(?:[^'\\]++|\\.|'')*)'?"
_E_STRING = r"(?<=(?<![\w$])[Ee])" + _QUOTED_BACKSLASH  # PostgreSQL's E'...'
_DOUBLE_QUOTED_BACKSLASH = r'"(?>(?:[^"\\]++|\\.|"")*)"?'
_DOLLAR_QUOTED = r"\$(?P<tag>(?:[^\W\d]\w*+)?)\$[\s\S]*?(?:\$(?P=tag)\$|\Z)"
_NUMBER = r"0[xX][0-9A-Fa-f_]++|0[bB][01_]++|(?:\d[\d_]*+(?:\.[\d_]*+)?|\.\d[\d_]*+)(?:[eE][+-]?\d++)?"
_UNTERMINATED_NAME = r"[\"`][\s\S]*+"  # a name cut by the capture: fail closed, it becomes "?"
_COMMENTS = r"--[^\n]*+|/\*[\s\S]*?(?:\*/|\Z)"


def _lexer(prefix: list[str], literals: list[str], comments: str) -> re.Pattern:
    return re.compile(
        rf"(?P<prefix>(?>(?:{'|'.join(prefix)})*))"
        rf"(?:(?P<literal>{'|'.join(literals)})|(?P<comment>{comments})|\Z)"
    )


_LEXERS = {
    PROTO_POSTGRESQL: _lexer(
        [_PLAIN, _WORDS, _DOUBLE_QUOTED_NAME, _LONE, "#"],
        [_E_STRING, _QUOTED_STANDARD, _DOLLAR_QUOTED, _NUMBER, _UNTERMINATED_NAME],
        _COMMENTS,
    ),
    PROTO_MYSQL: _lexer(
        [_PLAIN, _WORDS, _BACKTICK_NAME, _LONE, r"\$"],
        [_QUOTED_BACKSLASH, _DOUBLE_QUOTED_BACKSLASH, _NUMBER, _UNTERMINATED_NAME],
        _COMMENTS + r"|\#[^\n]*+",
    ),
    "": _lexer(
        [_PLAIN, _WORDS, _DOUBLE_QUOTED_NAME, _BACKTICK_NAME, _LONE, "#"],
        [_QUOTED_BACKSLASH, _DOLLAR_QUOTED, _NUMBER, _UNTERMINATED_NAME],
        _COMMENTS,
    ),
}
# The letter before a quote that makes it a national, hex, bit or escape string: N'..', X'..'
_LITERAL_PREFIX = re.compile(r"(?<![\w$])[NnXxBbEe]\Z")
_PREFIX_LETTERS = frozenset("NnXxBbEe")

_SPACES = re.compile(r"[\s\x00-\x1f\x7f]++")  # control characters separate words too
# A sign before a number is part of the literal when it cannot be a binary operator: after an
# operator, an opening parenthesis, a comma or a keyword. "a - 1" keeps its minus.
_SIGNED = re.compile(
    r"((?:[=<>(,]|\b(?i:select|where|and|or|not|then|else|when|values|limit|offset|between|in|is"
    r"|like|return|returning|set|case|by|as|on)\b) ?)[-+](?=\?)"
)
_PLACEHOLDER = r"(?:\?|\$\d++)"
# A list the capture cut (no closing parenthesis before the end) collapses too, left open.
_IN_LIST = re.compile(rf"\b((?i:in)) ?\( ?{_PLACEHOLDER}(?>(?: ?, ?{_PLACEHOLDER})*)(?: ?(\))|(?: ?,)? ?\Z)")
_ARRAY_LIST = re.compile(r"\b((?i:array)) ?\[ ?\?(?>(?: ?, ?\?)*) ?\]")
# Bulk inserts differ only by their number of rows: identical rows after the first are dropped.
_REPEATED_ROWS = re.compile(r"\b((?i:values)) ?(\((?>(?:[^()]++|\([^()]*+\))*)\))(?>(?: ?, ?\2)+)")

# --- operation and table --------------------------------------------------------------------

_OPERATION = re.compile(rf"[\s(]*+([A-Za-z]{{1,{MAX_OPERATION_CHARS}}})(?![\w$])")
_WORD_AT = re.compile(r" ?([A-Za-z_]\w*+)")
_NAME_PART = r'"(?>(?:[^"]++|"")*)"|`(?>(?:[^`]++|``)*)`|[^\W\d][\w$]*+'
_NAME_AT = re.compile(rf" ?((?:{_NAME_PART})(?>(?: ?\. ?(?:{_NAME_PART}))*))( ?\()?")
_NAME_PARTS = re.compile(_NAME_PART)
_FROM = re.compile(r"\b(?i:from)\b")
_ON = re.compile(r"\b(?i:on)\b")
_MAIN_STATEMENT = re.compile(r"\b((?i:select|insert|update|delete|merge|replace|values|table))\b")

# Words that may stand between a statement's keyword and its table, per statement.
_BEFORE_TABLE = {
    "INSERT": {"LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "IGNORE", "INTO", "OR", "REPLACE", "ABORT"},
    "REPLACE": {"LOW_PRIORITY", "DELAYED", "INTO"},
    "UPDATE": {"LOW_PRIORITY", "IGNORE", "ONLY"},
    "DELETE": {"LOW_PRIORITY", "QUICK", "IGNORE", "FROM", "ONLY"},
    "MERGE": {"INTO"},
    "TRUNCATE": {"TABLE", "ONLY"},
    "COPY": set(),
    "LOCK": {"TABLE", "TABLES", "ONLY"},
    "DESCRIBE": set(),
    "DESC": set(),
    "VACUUM": {"FULL", "FREEZE", "VERBOSE", "ANALYZE"},
    "ANALYZE": {"VERBOSE", "TABLE", "NO_WRITE_TO_BINLOG", "LOCAL"},
    "OPTIMIZE": {"TABLE", "NO_WRITE_TO_BINLOG", "LOCAL"},
}
_DDL = {"CREATE", "DROP", "ALTER"}
_DDL_MODIFIERS = {
    "OR",
    "REPLACE",
    "TEMP",
    "TEMPORARY",
    "UNLOGGED",
    "GLOBAL",
    "LOCAL",
    "IF",
    "NOT",
    "EXISTS",
    "ONLY",
    "MATERIALIZED",
    "UNIQUE",
    "CONCURRENTLY",
    "ONLINE",
    "IGNORE",
}
_FROM_MODIFIERS = {"ONLY", "LATERAL"}
_WRAPPERS = {"WITH", "EXPLAIN"}  # the statement that matters comes later


def normalize_query(text: str, dialect: str = "", keep_literals: bool = False) -> tuple[str, str, str, str]:
    """(query text with literals as "?", summary, operation, table) of one SQL text.

    `SELECT * FROM users WHERE id IN (1, 2) AND name = 'x'` gives
    ("SELECT * FROM users WHERE id IN (?) AND name = ?", "SELECT users", "SELECT", "users").
    Whitespace runs become one space and comments go; IN (...) lists of literals or placeholders
    become IN (?), ARRAY[...] of literals ARRAY[?], and repeated VALUES rows one row, so texts
    that differ only by their values or list lengths normalize alike. WITH is resolved to the
    statement after its definitions. Never raises: anything that is not text gives empty strings.
    With `keep_literals`, the query text keeps its literals and is only cleaned of comments and
    runs of whitespace (see the module docstring); the rest is the same.
    """
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", errors="replace")
    if not isinstance(text, str) or dialect not in _LEXERS:
        return EMPTY
    keep_literals = keep_literals is True  # anything else masks
    if len(text) <= MEMO_MAX_CHARS:
        return _normalize_memoized(text, dialect, keep_literals)
    return _normalize(text, dialect, keep_literals)


@lru_cache(maxsize=MEMO_SIZE)
def _normalize_memoized(text: str, dialect: str, keep_literals: bool) -> tuple[str, str, str, str]:
    return _normalize(text, dialect, keep_literals)


def _normalize(text: str, dialect: str, keep_literals: bool) -> tuple[str, str, str, str]:
    was_cut = len(text) > MAX_SCAN_CHARS
    masked = _LEXERS[dialect].sub(_mask, text[:MAX_SCAN_CHARS])
    masked = _SPACES.sub(" ", masked).strip()
    # The substring tests skip passes that cannot apply: most texts need one or two of them.
    if "-?" in masked or "+?" in masked:
        masked = _SIGNED.sub(r"\1", masked)
    if "?" in masked or "$" in masked:
        masked = _IN_LIST.sub(_collapse_list, masked)
    if "[" in masked:
        masked = _ARRAY_LIST.sub(r"\1[?]", masked)
    if ")," in masked or ") ," in masked:
        masked = _REPEATED_ROWS.sub(r"\1 \2", masked)
    shown = _with_literals(text[:MAX_SCAN_CHARS], dialect) if keep_literals else masked
    query = safe_text(shown, limit=MAX_QUERY_CHARS)
    if was_cut and not query.endswith(CUT_MARKER):
        query = query[: MAX_QUERY_CHARS - 1] + CUT_MARKER
    operation, table = _operation_and_table(masked)
    summary = f"{operation} {table}" if operation and table else operation
    return query, summary, operation, table


def _mask(match: re.Match) -> str:
    prefix = match.group("prefix")
    if match.group("literal") is not None:
        if prefix[-1:] in _PREFIX_LETTERS and _LITERAL_PREFIX.search(prefix):
            prefix = prefix[:-1]
        return prefix + "?"
    if match.group("comment") is not None:
        return prefix + " "  # `SELECT/**/1` is two words
    return prefix


def _with_literals(text: str, dialect: str) -> str:
    """The text with comments dropped and whitespace collapsed outside its literals, which stay
    exactly as sent."""
    pieces, plain = [], []
    for match in _LEXERS[dialect].finditer(text):
        plain.append(match.group("prefix"))
        if match.group("comment") is not None:
            plain.append(" ")
        elif match.group("literal") is not None:
            pieces += [_SPACES.sub(" ", "".join(plain)), match.group("literal")]
            plain = []
    pieces.append(_SPACES.sub(" ", "".join(plain)))
    return "".join(pieces).strip()


def _collapse_list(match: re.Match) -> str:
    return f"{match.group(1)} (?{match.group(2) or ''}"


def _operation_and_table(masked: str) -> tuple[str, str]:
    """The statement's first keyword, upper-cased, and the table it works on (or "")."""
    match = _OPERATION.match(masked)
    if not match:
        return "", ""
    operation = match.group(1).upper()
    keyword, pos = operation, match.end()
    if operation in _WRAPPERS:
        main = _main_statement(masked, pos)
        if main is None:
            return operation, ""
        keyword, pos = main
        if operation == "WITH":
            operation = keyword
    return operation, _table(masked, keyword, pos)


def _main_statement(masked: str, start: int) -> tuple[str, int] | None:
    """The first statement keyword after `start` outside any parentheses opened after it:
    the SELECT of `WITH a AS (SELECT ...) SELECT ...`, the statement an EXPLAIN explains."""
    for match in _MAIN_STATEMENT.finditer(masked, start):
        if _depth(masked, start, match.start()) == 0:
            return match.group(1).upper(), match.end()
    return None


def _table(masked: str, keyword: str, pos: int) -> str:
    if keyword == "SELECT":
        return _from_table(masked, pos)
    if keyword in _DDL:
        return _ddl_table(masked, pos)
    skipped = _BEFORE_TABLE.get(keyword)
    if skipped is None:
        return ""
    name, _call = _name_at(masked, _skip_words(masked, pos, skipped))
    return name


def _from_table(masked: str, start: int) -> str:
    """The first table after a FROM of this SELECT, not of a subquery in its column list; for
    `FROM (SELECT ... FROM t)`, the subquery's table."""
    in_subquery = False
    for match in _FROM.finditer(masked, start):
        depth = _depth(masked, start, match.start())
        if depth < 0:
            return ""  # past the end of a parenthesized SELECT
        if depth > 0 and not in_subquery:
            continue
        pos = _skip_words(masked, match.end(), _FROM_MODIFIERS)
        if masked.startswith("(", pos) or masked.startswith(" (", pos):
            in_subquery = True
            continue
        name, is_call = _name_at(masked, pos)
        return "" if is_call else name  # FROM generate_series(...) reads no table
    return ""


def _ddl_table(masked: str, pos: int) -> str:
    pos = _skip_words(masked, pos, _DDL_MODIFIERS)
    match = _WORD_AT.match(masked, pos)
    if not match:
        return ""
    kind = match.group(1).upper()
    if kind in ("TABLE", "VIEW"):
        name, _call = _name_at(masked, _skip_words(masked, match.end(), _DDL_MODIFIERS))
        return name
    if kind == "INDEX":
        on = _ON.search(masked, match.end())
        if on:
            name, _call = _name_at(masked, _skip_words(masked, on.end(), {"ONLY"}))
            return name
    return ""


def _skip_words(masked: str, pos: int, words: set[str]) -> int:
    while (match := _WORD_AT.match(masked, pos)) and match.group(1).upper() in words:
        pos = match.end()
    return pos


def _name_at(masked: str, pos: int) -> tuple[str, bool]:
    """(the possibly qualified, possibly quoted name at `pos` without its quotes, whether a "("
    follows it), or ("", False)."""
    match = _NAME_AT.match(masked, pos)
    if not match:
        return "", False
    parts = [_unquote(part) for part in _NAME_PARTS.findall(match.group(1))]
    return safe_text(".".join(parts), limit=MAX_NAME_CHARS), match.group(2) is not None


def _unquote(part: str) -> str:
    if len(part) >= 2 and part[0] == part[-1] and part[0] in '"`':
        quote = part[0]
        return part[1:-1].replace(quote * 2, quote)
    return part


def _depth(masked: str, start: int, end: int) -> int:
    return masked.count("(", start, end) - masked.count(")", start, end)


OPERATION_PREPARE = "PREPARE"


def query_fields(
    raw: bytes, dialect: str, cut: bool, prepared_only: bool, policy: Policy = DEFAULT_POLICY
) -> dict:
    """The record fields of one SQL text from a capture: normalized (literals masked unless the
    policy keeps them), cut-marked, and named PREPARE when the statement was only prepared in this
    exchange (it runs in a later one)."""
    text = raw.decode("utf-8", errors="replace")
    query, summary, operation, table = normalize_query(text, dialect, policy.keeps_sql_literals)
    if policy.keeps_sql_literals:
        query = mask_connection_credentials(query)  # kept literals, but never a DSN's password
    if cut and query and not query.endswith(CUT_MARKER):
        query += CUT_MARKER
    if prepared_only:
        operation = OPERATION_PREPARE
        summary = f"{operation} {table}" if table else operation
    return {
        schema.DB_OPERATION: operation,
        schema.DB_COLLECTION: table,
        schema.DB_QUERY_TEXT: query,
        schema.DB_QUERY_SUMMARY: summary,
    }
