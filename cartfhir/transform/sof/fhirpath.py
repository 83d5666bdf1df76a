"""Tokenizer and recursive-descent parser for FHIRPath, producing a small AST.

The parser accepts the full FHIRPath expression grammar (so a bad path fails
here, with its position); which constructs can be *compiled* is decided later
in ``compile.py``, which raises ``UnsupportedFhirPath`` for the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cartfhir.transform.sof.errors import ViewDefinitionError


@dataclass(frozen=True)
class Literal:
    """A literal: kind is string, integer, decimal, boolean, empty, date, time or quantity."""

    kind: str
    value: object


@dataclass(frozen=True)
class Identifier:
    """A bare name: a member of the focus, or a type name where a type is expected."""

    name: str


@dataclass(frozen=True)
class Variable:
    """``$this``, ``$index`` or ``$total`` (name without the dollar)."""

    name: str


@dataclass(frozen=True)
class External:
    """``%name``: a view constant or an environment variable such as ``%rowIndex``."""

    name: str


@dataclass(frozen=True)
class Member:
    """``base.name``: child elements named ``name`` of every item of ``base``."""

    base: Node
    name: str


@dataclass(frozen=True)
class Call:
    """``base.name(args)``, or ``name(args)`` on the focus when base is None."""

    base: Node | None
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Index:
    """``base[index]``: the item at a 0-based position."""

    base: Node
    index: Node


@dataclass(frozen=True)
class Binary:
    """An infix operator such as ``=``, ``and``, ``+`` or ``is``."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Unary:
    """A prefix ``+`` or ``-``."""

    op: str
    operand: Node


Node = Literal | Identifier | Variable | External | Member | Call | Index | Binary | Unary


@dataclass(frozen=True)
class _Token:
    kind: str  # string, ident, number, datetime, external, variable, op, end
    text: str
    pos: int


_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+|//[^\n]*|/\*.*?\*/)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<delimited>`(?:[^`\\]|\\.)*`)
  | (?P<datetime>@[0-9T][0-9T:.+\-Z]*)
  | (?P<number>\d+(?:\.\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<external>%(?:[A-Za-z_][A-Za-z0-9_]*|'(?:[^'\\]|\\.)*'|`(?:[^`\\]|\\.)*`))
  | (?P<variable>\$(?:this|index|total))
  | (?P<op><=|>=|!=|!~|[-+*/&|=~<>()\[\].,{}])
    """,
    re.VERBOSE | re.DOTALL,
)

_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n",
            "r": "\r", "t": "\t"}


def _unescape(body: str, path: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt == "u":
            out.append(chr(int(body[i + 2:i + 6], 16)))
            i += 6
        elif nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        else:
            raise ViewDefinitionError(f"FHIRPath {path!r}: unknown escape \\{nxt}")
    return "".join(out)


def tokenize(path: str) -> list[_Token]:
    """Split a FHIRPath expression into tokens; fail on any character it cannot use."""
    tokens: list[_Token] = []
    pos = 0
    while pos < len(path):
        m = _TOKEN_RE.match(path, pos)
        if m is None:
            raise ViewDefinitionError(
                f"FHIRPath {path!r}: unexpected character {path[pos]!r} at position {pos}"
            )
        kind = m.lastgroup or ""
        text = m.group()
        if kind == "string":
            tokens.append(_Token("string", _unescape(text[1:-1], path), pos))
        elif kind == "delimited":
            tokens.append(_Token("ident", _unescape(text[1:-1], path), pos))
        elif kind == "external":
            name = text[1:]
            if name[0] in "'`":
                name = _unescape(name[1:-1], path)
            tokens.append(_Token("external", name, pos))
        elif kind != "ws":
            tokens.append(_Token(kind, text, pos))
        pos = m.end()
    tokens.append(_Token("end", "", len(path)))
    return tokens


# Binary operators by precedence, loosest first (FHIRPath spec, section 6).
_LEVELS: tuple[tuple[str, ...], ...] = (
    ("implies",),
    ("or", "xor"),
    ("and",),
    ("in", "contains"),
    ("=", "~", "!=", "!~"),
    ("<=", "<", ">", ">="),
    ("|",),
    ("is", "as"),
    ("+", "-", "&"),
    ("*", "/", "div", "mod"),
)
_WORD_OPS = {"implies", "or", "xor", "and", "in", "contains", "is", "as", "div", "mod"}


class _Parser:
    def __init__(self, path: str) -> None:
        self.path = path
        self.tokens = tokenize(path)
        self.i = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def fail(self, what: str) -> ViewDefinitionError:
        tok = self.peek()
        found = repr(tok.text) if tok.kind != "end" else "end of path"
        return ViewDefinitionError(
            f"FHIRPath {self.path!r}: expected {what}, found {found} at position {tok.pos}"
        )

    def expect(self, text: str) -> None:
        tok = self.peek()
        if tok.kind != "op" or tok.text != text:
            raise self.fail(repr(text))
        self.take()

    def at_op(self, ops: tuple[str, ...]) -> str | None:
        tok = self.peek()
        if tok.kind == "op" and tok.text in ops:
            return tok.text
        if tok.kind == "ident" and tok.text in _WORD_OPS and tok.text in ops:
            return tok.text
        return None

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise self.fail("an expression")
        node = self.expression(0)
        if self.peek().kind != "end":
            raise self.fail("an operator or end of path")
        return node

    def expression(self, level: int) -> Node:
        if level == len(_LEVELS):
            return self.unary()
        left = self.expression(level + 1)
        while (op := self.at_op(_LEVELS[level])) is not None:
            self.take()
            right = self.type_specifier() if op in ("is", "as") else self.expression(level + 1)
            left = Binary(op, left, right)
        return left

    def type_specifier(self) -> Node:
        tok = self.take()
        if tok.kind != "ident":
            raise self.fail("a type name")
        node: Node = Identifier(tok.text)
        while self.at_op((".",)):
            self.take()
            node = Member(node, self.take().text)
        return node

    def unary(self) -> Node:
        op = self.at_op(("+", "-"))
        if op is None:
            return self.postfix(self.term())
        self.take()
        operand = self.unary()
        if op == "-" and isinstance(operand, Literal) and operand.kind in ("integer", "decimal"):
            return Literal(operand.kind, "-" + str(operand.value))
        return Unary(op, operand)

    def postfix(self, node: Node) -> Node:
        while True:
            if self.at_op((".",)):
                self.take()
                tok = self.take()
                if tok.kind != "ident":
                    self.i -= 1
                    raise self.fail("a name after '.'")
                node = self.invocation(tok.text, node)
            elif self.at_op(("[",)):
                self.take()
                index = self.expression(0)
                self.expect("]")
                node = Index(node, index)
            else:
                return node

    def invocation(self, name: str, base: Node | None) -> Node:
        if not self.at_op(("(",)):
            return Identifier(name) if base is None else Member(base, name)
        self.take()
        args: list[Node] = []
        if not self.at_op((")",)):
            args.append(self.expression(0))
            while self.at_op((",",)):
                self.take()
                args.append(self.expression(0))
        self.expect(")")
        return Call(base, name, tuple(args))

    def term(self) -> Node:
        tok = self.peek()
        if tok.kind == "number":
            self.take()
            if self.peek().kind == "string":  # a quantity such as 5 'mg'
                return Literal("quantity", (tok.text, self.take().text))
            return Literal("decimal" if "." in tok.text else "integer", tok.text)
        if tok.kind == "string":
            self.take()
            return Literal("string", tok.text)
        if tok.kind == "datetime":
            self.take()
            return Literal("time" if tok.text.startswith("@T") else "date", tok.text[1:])
        if tok.kind == "external":
            self.take()
            return External(tok.text)
        if tok.kind == "variable":
            self.take()
            return Variable(tok.text[1:])
        if tok.kind == "ident" and tok.text in ("true", "false"):
            self.take()
            return Literal("boolean", tok.text == "true")
        if tok.kind == "ident":
            self.take()
            return self.invocation(tok.text, None)
        if self.at_op(("(",)):
            self.take()
            node = self.expression(0)
            self.expect(")")
            return node
        if self.at_op(("{",)):
            self.take()
            self.expect("}")
            return Literal("empty", None)
        raise self.fail("a term")


def parse(path: str) -> Node:
    """Parse a FHIRPath expression; raise ``ViewDefinitionError`` naming the position."""
    if not isinstance(path, str):
        raise ViewDefinitionError(f"FHIRPath must be a string, got {path!r}")
    return _Parser(path).parse()
