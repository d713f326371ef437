"""parse: unverified SQL text to one SELECT tree, or a refusal that says why."""

from __future__ import annotations

import re
from typing import NoReturn

import sqlglot.expressions as exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

from dsbroker.guard._tree import refuse
from dsbroker.guard.literals import MAX_EXPONENT, MAX_NUMBER_CHARACTERS, number_in_range
from dsbroker.guard.internal_names import NODES_META, SOURCE_META

# Limits checked before anything else reads the query, on every path (a cached plan included): with
# them every rule's work is bounded by the size of its input, and no input is deep enough to exhaust
# the recursion that parsing and SQL generation use.
MAX_SQL_BYTES = 1024 * 1024
MAX_TOKENS = 20_000
MAX_NESTING = 32  # brackets within brackets
MAX_NODES = 10_000
MAX_DEPTH = 100  # of the parse tree; 1,000 ANDed conditions are 1,000 deep
# Statements that are not queries, by their first word: when sqlglot cannot parse one of these
# (EXPORT DATABASE, for example), the caller learns that the statement is not allowed, not that
# its syntax is wrong.
NOT_QUERIES = frozenset({
    "ALTER", "ANALYZE", "ATTACH", "BEGIN", "CALL", "CHECKPOINT", "COMMIT", "COPY", "CREATE", "DEALLOCATE", "DELETE",
    "DESCRIBE", "DETACH", "DROP", "EXECUTE", "EXPLAIN", "EXPORT", "GRANT", "IMPORT", "INSERT", "INSTALL", "LOAD",
    "MERGE", "PRAGMA", "PREPARE", "RESET", "REVOKE", "ROLLBACK", "SET", "SHOW", "SUMMARIZE", "TRUNCATE", "UPDATE",
    "USE", "VACUUM"})
_LEADING_COMMENTS = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
_FIRST_WORD = re.compile(r"[A-Za-z]+")
_NAME_BEFORE_ARGUMENTS = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(\s*(?:(?:DISTINCT|ALL)\s+)?$", re.IGNORECASE)
_IDENTIFIER = re.compile(r"[A-Z_][A-Z0-9_.]*")
_OPENING = frozenset({TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE})
_CLOSING = frozenset({TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE})
# The text of INTERVAL '...' that sqlglot reads whole: a number, or counts each with a unit. sqlglot reads
# '1 day ago' as INTERVAL '1' DAY, dropping the words its pattern does not match, where the engines read one
# day back; the tree would then say something other than the text (and expand_date_forms would fold it).
_INTERVAL_TEXT = re.compile(r"\s*-?[0-9]+(?:\.[0-9]+)?\s*|(?:\s*-?[0-9]+(?:\.[0-9]+)?\s*[a-zA-Z]{2,}\s*)+")
# A unit of one letter, or a quoted one, reads differently on each side: sqlglot takes INTERVAL '1' D for a
# day, '1 q' for a quarter and '1' "day" for a day, where DuckDB reads an interval of one second named D, and
# neither engine knows q. The guard reads units written as words.
_ONE_LETTER = re.compile(r"[A-Za-z]")
_INTERVAL_COUNTS = frozenset({TokenType.STRING, TokenType.NUMBER})


def admit(unverified_sql: str) -> None:
    """Refuse a query larger than :data:`MAX_SQL_BYTES`: checked before a cache or a parser reads it."""
    if len(unverified_sql) > MAX_SQL_BYTES or len(unverified_sql.encode("utf-8", "surrogatepass")) > MAX_SQL_BYTES:
        refuse("parse", "SQL_TOO_LARGE", f"the query is larger than {MAX_SQL_BYTES} bytes", limit=MAX_SQL_BYTES)


def parse(unverified_sql: str, read_dialect: str = "duckdb") -> exp.Select:
    """Parse exactly one SELECT statement; anything else is refused.

    Comments are dropped here: the SQL that runs is generated from the tree,
    so nothing smuggled in a comment reaches the engine.
    """
    admit(unverified_sql)
    dialect = Dialect.get_or_raise(read_dialect)
    try:
        tokens = dialect.tokenize(unverified_sql)
        _check_tokens(tokens)
        # A comment after the final ``;`` parses as a statement of its own (a Semicolon holding the comment):
        # it is no statement, and comments are dropped anyway.
        statements = [s for s in dialect.parser().parse(tokens, unverified_sql)
                      if s is not None and not isinstance(s, exp.Semicolon)]
    except RecursionError:
        _too_complex("it nests too deeply")
    except (ParseError, TokenError, ValueError, TypeError, AttributeError, IndexError) as error:
        # sqlglot's parser can fail inside itself on malformed input (``->`` alone raises TypeError): whatever it
        # raises while reading the caller's text, the text does not parse.
        _refuse_unparsed(unverified_sql, error)
    if not statements:
        refuse("parse", "EMPTY_QUERY", "the query is empty; send one SELECT statement")
    if len(statements) > 1:
        refuse("parse", "MULTIPLE_STATEMENTS", f"send one statement at a time, not {len(statements)}")
    statement = statements[0]
    if isinstance(statement, exp.SetOperation):
        kind = statement.key.upper()
        refuse("parse", "SET_OPERATION_NOT_ALLOWED", f"{kind} is not allowed; send one SELECT", statement=kind)
    if not isinstance(statement, exp.Select):
        kind = statement.key.upper() if not isinstance(statement, exp.Command) else str(statement.this).upper()
        refuse("parse", "STATEMENT_NOT_ALLOWED", f"only SELECT is allowed, not {kind}", statement=kind)
    statement.meta[NODES_META] = _check_tree(statement)
    statement.meta[SOURCE_META] = unverified_sql
    return statement


def written_name(function: exp.Func) -> str:
    """The function's name as the caller wrote it (read from the text the query was parsed from)."""
    source = function.root().meta.get(SOURCE_META)
    return _written_name(source, function) if source is not None else _sqlglot_name(function)


def _check_tokens(tokens: list) -> None:
    if len(tokens) > MAX_TOKENS:
        _too_complex(f"it has more than {MAX_TOKENS} tokens")
    depth = 0
    for index, token in enumerate(tokens):
        kind = token.token_type
        if index and tokens[index - 1].token_type == TokenType.INTERVAL and kind in _INTERVAL_COUNTS:
            unit = tokens[index + 1] if index + 1 < len(tokens) else None
            if (kind == TokenType.STRING and not _INTERVAL_TEXT.fullmatch(token.text)) or unit is not None and (
                    unit.token_type == TokenType.IDENTIFIER or _ONE_LETTER.fullmatch(unit.text)):
                refuse("parse", "CONSTRUCT_NOT_ALLOWED", "write an interval as INTERVAL 'n' UNIT, the unit a word "
                       "(DAY, MONTH, ...); its text holds something else", construct="INTERVAL")
        if kind in _OPENING:
            depth += 1
            if depth > MAX_NESTING:
                _too_complex(f"it nests brackets more than {MAX_NESTING} deep")
        elif kind in _CLOSING:
            depth -= 1


def _check_tree(statement: exp.Expr) -> int:
    """Count the tree's nodes and its depth without recursion (the tree may be deep), and on the way drop
    each node's comments; returns the number of nodes."""
    nodes, stack = 0, [(statement, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        nodes += 1
        if nodes > MAX_NODES:
            _too_complex(f"it has more than {MAX_NODES} parts")
        if depth > MAX_DEPTH:
            _too_complex(f"it nests more than {MAX_DEPTH} levels deep (long chains of AND or + count as nesting; "
                         "use IN (...) for alternatives)")
        if isinstance(node, exp.Literal) and not node.is_string and not number_in_range(node.name):
            refuse("parse", "NUMBER_OUT_OF_RANGE", f"a number has more than {MAX_NUMBER_CHARACTERS} characters or "
                   f"lies beyond ±1e{MAX_EXPONENT}; scale it, or the result", construct="NUMBER")
        node.comments = None
        depth += 1
        for child in node.iter_expressions():
            push((child, depth))
    return nodes


def _too_complex(why: str) -> NoReturn:
    refuse("parse", "QUERY_TOO_COMPLEX", f"the query is too complex to check: {why}")


def _written_name(unverified_sql: str, function: exp.Func) -> str:
    """The function's name as the caller wrote it, so messages say STRING_AGG and not GROUP_CONCAT.

    sqlglot normalises names (``list`` becomes ArrayAgg); the parser records the position of the
    name token for most functions, and for the rest the name is the word before the opening
    bracket of the first argument.
    """
    start, end = function.meta.get("start"), function.meta.get("end")
    if start is None or end is None:
        starts = [n.meta["start"] for n in function.walk() if n is not function and "start" in n.meta]
        offset = max(0, min(starts) - 200) if starts else 0  # a name and its bracket fit in 200 characters
        match = _NAME_BEFORE_ARGUMENTS.search(unverified_sql[offset:min(starts)]) if starts else None
        if match is None:
            return _sqlglot_name(function)
        start, end = offset + match.start(1), offset + match.end(1) - 1
    written = unverified_sql[start:end + 1].strip('"').upper()
    return written if _IDENTIFIER.fullmatch(written) else _sqlglot_name(function)


def _sqlglot_name(function: exp.Func) -> str:
    return str(function.this).upper() if isinstance(function, exp.Anonymous) else function.sql_name()


def _refuse_unparsed(unverified_sql: str, error: Exception) -> NoReturn:
    leading = _LEADING_COMMENTS.match(unverified_sql)
    assert leading is not None  # the pattern matches the empty string
    word = _FIRST_WORD.match(unverified_sql[leading.end():])
    if word and word.group().upper() in NOT_QUERIES:
        kind = word.group().upper()
        refuse("parse", "STATEMENT_NOT_ALLOWED", f"only SELECT is allowed, not {kind}", statement=kind)
    if isinstance(error, ParseError):
        first = error.errors[0] if error.errors else {}
        where = f" at line {first.get('line')}, column {first.get('col')}" if first.get("line") else ""
        refuse("parse", "SYNTAX_ERROR", f"the query does not parse{where}; check the SQL near that point",
               line=first.get("line"), col=first.get("col"))
    refuse("parse", "SYNTAX_ERROR", "the query does not parse; check quoting and brackets")
