"""Arithmetic expressions from model text, parsed and evaluated safely (never `eval`-ed).

A small recursive-descent parser for non-negative integer literals, ``+ - * /`` and
parentheses, with caps (`MAX_EXPR_CHARS` characters, `MAX_LITERAL_DIGITS` digits per
literal, `MAX_DEPTH` nested parentheses): inputs beyond a cap parse to None, never a hang.
Values are exact (`fractions.Fraction`); division by zero evaluates to None.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any, no_type_check

from workbench.errors import WorkbenchError

__all__ = [
    "MAX_DEPTH",
    "MAX_EXPR_CHARS",
    "MAX_LITERAL_DIGITS",
    "Node",
    "evaluate_expression",
    "literals",
    "parse_expression",
]

MAX_EXPR_CHARS = 256
MAX_LITERAL_DIGITS = 6
MAX_DEPTH = 32

# A parsed expression: an int literal, or a tuple (op, left, right) of an operator in
# "+-*/" and two sub-expressions (kept as a plain `tuple` so runtime type checkers accept it).
Node = int | tuple

_TOKEN = re.compile(r"\s*(?:([0-9]+)|([-+*/()]))")


class _ParseError(Exception):
    pass


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise _ParseError(f"bad character at {pos}")
        literal, op = m.group(1), m.group(2)
        if literal is not None:
            if len(literal) > MAX_LITERAL_DIGITS:
                raise _ParseError("literal too long")
            tokens.append(literal)
        else:
            tokens.append(op)
        pos = m.end()
    return tokens


class _Parser:
    """expr := term (('+'|'-') term)* ; term := factor (('*'|'/') factor)* ;
    factor := INT | '(' expr ')'."""

    def __init__(self, tokens: list[str]):
        self.tokens = tokens
        self.i = 0

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise _ParseError("unexpected end")
        self.i += 1
        return tok

    def expr(self, depth: int) -> Node:
        node = self.term(depth)
        while self.peek() in ("+", "-"):
            op = self.take()
            node = (op, node, self.term(depth))
        return node

    def term(self, depth: int) -> Node:
        node = self.factor(depth)
        while self.peek() in ("*", "/"):
            op = self.take()
            node = (op, node, self.factor(depth))
        return node

    def factor(self, depth: int) -> Node:
        tok = self.take()
        if tok == "(":
            if depth >= MAX_DEPTH:
                raise _ParseError("too deep")
            node = self.expr(depth + 1)
            if self.take() != ")":
                raise _ParseError("expected )")
            return node
        if tok.isdigit():
            return int(tok)
        raise _ParseError(f"unexpected {tok!r}")


def parse_expression(text: Any) -> Node | None:
    """Parse an arithmetic expression safely (never `eval`).

    Args:
        text: e.g. ``"(50+25)-3"``. Allowed: non-negative int literals (at most
            `MAX_LITERAL_DIGITS` digits), ``+ - * /``, parentheses, whitespace.

    Returns:
        The expression tree (an int, or ``(op, left, right)`` tuples), or None when `text` is
        not a string, is empty, longer than `MAX_EXPR_CHARS`, nested deeper than `MAX_DEPTH`,
        or malformed in any way.
    """
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_EXPR_CHARS:
        return None
    try:
        parser = _Parser(_tokenize(text))
        node = parser.expr(0)
        if parser.peek() is not None:
            return None
        return node
    except (_ParseError, RecursionError):
        return None


def literals(node: Node) -> list[int]:
    out: list[int] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, int):
            out.append(n)
        else:
            stack.extend((n[1], n[2]))
    return out


@no_type_check  # checks its argument itself, with a message that names the fix
def evaluate_expression(node: Node | None) -> Fraction | None:
    """Exact value of a parsed expression.

    Args:
        node: a tree from `parse_expression` (None, its result for text that does not
            parse, gives None).

    Returns:
        The value as a `Fraction`, or None on division by zero or for None.

    Raises:
        WorkbenchError: `node` is text (parse it first) or no expression tree.
    """
    if node is None:
        return None
    if isinstance(node, str | bytes):
        raise WorkbenchError(
            f"evaluate_expression takes a parsed expression, got the text {node!r}"[:200],
            "parse it first: evaluate_expression(parse_expression(text))",
        )
    if not _is_tree(node):
        raise WorkbenchError(
            f"evaluate_expression takes a tree from parse_expression, got {node!r}"[:200],
            "pass parse_expression(text)",
        )
    return _evaluate(node)


def _is_tree(node: Any) -> bool:
    if isinstance(node, int) and not isinstance(node, bool):
        return True
    return (
        isinstance(node, tuple)
        and len(node) == 3
        and node[0] in ("+", "-", "*", "/")
        and _is_tree(node[1])
        and _is_tree(node[2])
    )


def _evaluate(node: Node) -> Fraction | None:
    if isinstance(node, int):
        return Fraction(node)
    op, left, right = node
    a = _evaluate(left)
    b = _evaluate(right)
    if a is None or b is None:
        return None
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        return None
    return a / b
