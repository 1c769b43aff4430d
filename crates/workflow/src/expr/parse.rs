//! Lexing and parsing of expressions, with GitHub's grammar, limits and error messages.
//!
//! Precedence, loosest first: `||`, `&&`, `==` `!=`, `<` `<=` `>` `>=`, `!`, then property access
//! (`a.b`, `a['b']`, `a.*`, `a[*]`) on named values, function calls and parenthesised groups.
//! Nesting deeper than [`MAX_DEPTH`] and sources longer than [`MAX_LENGTH`] are errors, so no
//! input can exhaust the stack. Positions in messages count characters from 1 over the whole
//! source, as GitHub's runner reports them.

use super::value::{Value, parse_js_number};
use super::{ErrorKind, ExprError};

/// Deepest nesting an expression may have (GitHub's limit).
pub const MAX_DEPTH: usize = 50;
/// Longest expression source, in characters (GitHub's limit).
pub const MAX_LENGTH: usize = 21_000;

/// A parsed expression.
#[derive(Debug, Clone)]
pub enum Expr {
    Literal(Value),
    /// A named value such as `github` or `matrix`; the name as written.
    NamedValue(String),
    Index(Box<Expr>, Index),
    Not(Box<Expr>),
    Compare(Box<Expr>, CompareOp, Box<Expr>),
    /// `a && b && c` or `a || b || c`, evaluated left to right with short-circuit.
    Logical(LogicalOp, Vec<Expr>),
    /// A function call; `name` is lower-cased (function names ignore case).
    Call(String, Vec<Expr>),
}

#[derive(Debug, Clone)]
pub enum Index {
    Star,
    Expr(Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogicalOp {
    And,
    Or,
}

/// A function the parser accepts, with its arity.
#[derive(Debug, Clone, Copy)]
pub struct FunctionSig {
    pub name: &'static str,
    pub min_args: usize,
    pub max_args: usize,
}

/// The functions every expression may call.
pub const BUILTIN_FUNCTIONS: &[FunctionSig] = &[
    FunctionSig { name: "contains", min_args: 2, max_args: 2 },
    FunctionSig { name: "startswith", min_args: 2, max_args: 2 },
    FunctionSig { name: "endswith", min_args: 2, max_args: 2 },
    FunctionSig { name: "format", min_args: 1, max_args: 255 },
    FunctionSig { name: "join", min_args: 1, max_args: 2 },
    FunctionSig { name: "tojson", min_args: 1, max_args: 1 },
    FunctionSig { name: "fromjson", min_args: 1, max_args: 1 },
    FunctionSig { name: "case", min_args: 3, max_args: 255 },
];

/// What a place in a workflow allows: which named values, and which functions beyond the
/// built-ins (`success()`, `hashFiles()`, …). Names compare ignoring case.
#[derive(Debug, Clone, Copy, Default)]
pub struct ParseOptions<'a> {
    pub named_values: &'a [&'a str],
    pub extra_functions: &'a [FunctionSig],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    LeftParen,
    RightParen,
    LeftBracket,
    RightBracket,
    Comma,
    Dot,
    Bang,
    BangEqual,
    EqualEqual,
    Greater,
    GreaterEqual,
    Less,
    LessEqual,
    And,
    Or,
    Star,
    Number,
    String,
    Identifier,
    True,
    False,
    Null,
    Eof,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    /// The source text of the token (for strings, the unescaped value).
    text: String,
    number: f64,
    /// Character offset from the start of the source.
    start: usize,
}

fn is_boundary(c: char) -> bool {
    matches!(c, '(' | '[' | ')' | ']' | ',' | '.' | '!' | '>' | '<' | '=' | '&' | '|') || c.is_whitespace()
}

fn is_legal_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {
            chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        }
        _ => false,
    }
}

struct Lexer<'s> {
    source: &'s str,
    chars: Vec<char>,
    offset: usize,
    tokens: Vec<Token>,
}

impl<'s> Lexer<'s> {
    fn error(&self, lexeme: &str, start: usize) -> ExprError {
        ExprError::new(
            ErrorKind::Lexing,
            format!(
                "Unexpected symbol: '{lexeme}'. Located at position {} within expression: {}",
                start + 1,
                self.source
            ),
        )
    }

    fn previous(&self) -> Tok {
        self.tokens.last().map_or(Tok::Eof, |t| t.tok)
    }

    fn push(&mut self, tok: Tok, start: usize) {
        let text: String = self.chars[start..self.offset].iter().collect();
        self.tokens.push(Token { tok, text, number: 0.0, start });
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.offset).copied()
    }

    fn matches(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.offset += 1;
            true
        } else {
            false
        }
    }

    fn lex(mut self) -> Result<Vec<Token>, ExprError> {
        if self.chars.len() > MAX_LENGTH {
            return Err(ExprError::new(ErrorKind::Lexing, format!("Exceeded max expression length {MAX_LENGTH}")));
        }
        while let Some(c) = self.peek() {
            let start = self.offset;
            self.offset += 1;
            match c {
                '(' => self.push(Tok::LeftParen, start),
                ')' => self.push(Tok::RightParen, start),
                '[' => self.push(Tok::LeftBracket, start),
                ']' => self.push(Tok::RightBracket, start),
                ',' => self.push(Tok::Comma, start),
                '*' => self.push(Tok::Star, start),
                '.' => {
                    // After something that can be indexed, a dot is property access; elsewhere it
                    // starts a number like `.5`.
                    if matches!(self.previous(), Tok::Identifier | Tok::RightBracket | Tok::RightParen | Tok::Star) {
                        self.push(Tok::Dot, start);
                    } else {
                        self.number(start)?;
                    }
                }
                '-' | '+' => self.number(start)?,
                '!' => {
                    let tok = if self.matches('=') { Tok::BangEqual } else { Tok::Bang };
                    self.push(tok, start);
                }
                '=' | '&' | '|' => {
                    let tok = match c {
                        '=' => Tok::EqualEqual,
                        '&' => Tok::And,
                        _ => Tok::Or,
                    };
                    if self.matches(c) {
                        self.push(tok, start);
                    } else {
                        // A lone `=`, `&` or `|`: report it with whatever follows up to a boundary.
                        self.word(start)?;
                    }
                }
                '<' => {
                    let tok = if self.matches('=') { Tok::LessEqual } else { Tok::Less };
                    self.push(tok, start);
                }
                '>' => {
                    let tok = if self.matches('=') { Tok::GreaterEqual } else { Tok::Greater };
                    self.push(tok, start);
                }
                '\'' => self.string(start)?,
                c if c.is_whitespace() => {}
                c if c.is_ascii_digit() => self.number(start)?,
                _ => self.word(start)?,
            }
        }
        self.tokens.push(Token { tok: Tok::Eof, text: String::new(), number: 0.0, start: self.chars.len() });
        Ok(self.tokens)
    }

    fn number(&mut self, start: usize) -> Result<(), ExprError> {
        while let Some(c) = self.peek() {
            if is_boundary(c) && c != '.' {
                break;
            }
            self.offset += 1;
        }
        let lexeme: String = self.chars[start..self.offset].iter().collect();
        let value = parse_js_number(&lexeme);
        if value.is_nan() {
            return Err(self.error(&lexeme, start));
        }
        self.tokens.push(Token { tok: Tok::Number, text: lexeme, number: value, start });
        Ok(())
    }

    fn string(&mut self, start: usize) -> Result<(), ExprError> {
        let mut value = String::new();
        loop {
            match self.peek() {
                None => {
                    let rest: String = self.chars[start..].iter().collect();
                    return Err(self.error(&rest, start));
                }
                Some('\'') if self.chars.get(self.offset + 1) == Some(&'\'') => {
                    value.push('\'');
                    self.offset += 2;
                }
                Some('\'') => {
                    self.offset += 1;
                    break;
                }
                Some(c) => {
                    value.push(c);
                    self.offset += 1;
                }
            }
        }
        self.tokens.push(Token { tok: Tok::String, text: value, number: 0.0, start });
        Ok(())
    }

    fn word(&mut self, start: usize) -> Result<(), ExprError> {
        while self.peek().is_some_and(|c| !is_boundary(c)) {
            self.offset += 1;
        }
        let lexeme: String = self.chars[start..self.offset].iter().collect();
        let mut tok = Tok::Identifier;
        let mut number = 0.0;
        // After a dot every word is a property name, keywords included (`foo.true`).
        if self.previous() != Tok::Dot {
            match lexeme.as_str() {
                "true" => tok = Tok::True,
                "false" => tok = Tok::False,
                "null" => tok = Tok::Null,
                "NaN" => (tok, number) = (Tok::Number, f64::NAN),
                "Infinity" => (tok, number) = (Tok::Number, f64::INFINITY),
                _ => {}
            }
        }
        if !is_legal_identifier(&lexeme) {
            return Err(self.error(&lexeme, start));
        }
        self.tokens.push(Token { tok, text: lexeme, number, start });
        Ok(())
    }
}

struct Parser<'a> {
    source: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
    options: &'a ParseOptions<'a>,
}

enum ParseFail {
    UnexpectedSymbol,
    UnexpectedEnd,
    UnrecognizedNamedValue,
    UnrecognizedFunction,
    TooFewParameters,
    TooManyParameters,
    EvenParameters,
    MaxDepth,
}

impl Parser<'_> {
    fn error(&self, fail: ParseFail, token: &Token) -> ExprError {
        let description = match fail {
            ParseFail::UnexpectedSymbol => "Unexpected symbol".to_owned(),
            ParseFail::UnexpectedEnd => "Unexpected end of expression".to_owned(),
            ParseFail::UnrecognizedNamedValue => "Unrecognized named-value".to_owned(),
            ParseFail::UnrecognizedFunction => "Unrecognized function".to_owned(),
            ParseFail::TooFewParameters => "Too few parameters supplied".to_owned(),
            ParseFail::TooManyParameters => "Too many parameters supplied".to_owned(),
            ParseFail::EvenParameters => {
                "Even number of parameters supplied, requires an odd number of parameters".to_owned()
            }
            ParseFail::MaxDepth => format!("Exceeded max expression depth {MAX_DEPTH}"),
        };
        let shown = if token.tok == Tok::Eof { "EOF" } else { token.text.as_str() };
        ExprError::new(
            ErrorKind::Parsing,
            format!(
                "{description}: '{shown}'. Located at position {} within expression: {}",
                token.start + 1,
                self.source
            ),
        )
    }

    fn peek(&self) -> &Token {
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn previous(&self) -> &Token {
        &self.tokens[self.pos.saturating_sub(1)]
    }

    fn at_end(&self) -> bool {
        self.peek().tok == Tok::Eof
    }

    fn check(&self, tok: Tok) -> bool {
        !self.at_end() && self.peek().tok == tok
    }

    fn eat(&mut self, tok: Tok) -> bool {
        if self.check(tok) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, tok: Tok) -> Result<(), ExprError> {
        if self.eat(tok) { Ok(()) } else { Err(self.error(ParseFail::UnexpectedSymbol, self.peek())) }
    }

    fn enter(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH { Err(self.error(ParseFail::MaxDepth, self.peek())) } else { Ok(()) }
    }

    fn leave(&mut self, levels: usize) {
        self.depth -= levels;
    }

    fn expression(&mut self) -> Result<Expr, ExprError> {
        self.enter()?;
        let expr = self.logical(LogicalOp::Or)?;
        self.leave(1);
        Ok(expr)
    }

    /// `a || b …` (whose operands are `&&` chains) or `a && b …` (whose operands are equalities).
    fn logical(&mut self, op: LogicalOp) -> Result<Expr, ExprError> {
        let tok = match op {
            LogicalOp::Or => Tok::Or,
            LogicalOp::And => Tok::And,
        };
        let first = self.logical_operand(op)?;
        if !self.check(tok) {
            return Ok(first);
        }
        self.enter()?;
        let mut args = vec![first];
        while self.eat(tok) {
            args.push(self.logical_operand(op)?);
        }
        self.leave(1);
        Ok(Expr::Logical(op, args))
    }

    fn logical_operand(&mut self, op: LogicalOp) -> Result<Expr, ExprError> {
        match op {
            LogicalOp::Or => self.logical(LogicalOp::And),
            LogicalOp::And => self.equality(),
        }
    }

    fn equality(&mut self) -> Result<Expr, ExprError> {
        let mut expr = self.comparison()?;
        loop {
            let op = if self.eat(Tok::EqualEqual) {
                CompareOp::Eq
            } else if self.eat(Tok::BangEqual) {
                CompareOp::Ne
            } else {
                return Ok(expr);
            };
            expr = Expr::Compare(Box::new(expr), op, Box::new(self.comparison()?));
        }
    }

    fn comparison(&mut self) -> Result<Expr, ExprError> {
        let mut expr = self.unary()?;
        loop {
            let op = [
                (Tok::Greater, CompareOp::Gt),
                (Tok::GreaterEqual, CompareOp::Ge),
                (Tok::Less, CompareOp::Lt),
                (Tok::LessEqual, CompareOp::Le),
            ]
            .into_iter()
            .find(|(tok, _)| self.check(*tok));
            let Some((_, op)) = op else { return Ok(expr) };
            self.pos += 1;
            expr = Expr::Compare(Box::new(expr), op, Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        if self.eat(Tok::Bang) {
            self.enter()?;
            let inner = self.unary()?;
            self.leave(1);
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.index()
    }

    fn index(&mut self) -> Result<Expr, ExprError> {
        let (mut expr, indexable) = self.call()?;
        if !indexable {
            return Ok(expr);
        }
        let mut levels = 0;
        loop {
            if self.eat(Tok::LeftBracket) {
                let index = if self.eat(Tok::Star) { Index::Star } else { Index::Expr(Box::new(self.expression()?)) };
                self.expect(Tok::RightBracket)?;
                self.enter()?;
                levels += 1;
                expr = Expr::Index(Box::new(expr), index);
            } else if self.eat(Tok::Dot) {
                self.enter()?;
                levels += 1;
                if self.eat(Tok::Identifier) {
                    let name = self.previous().text.clone();
                    expr = Expr::Index(Box::new(expr), Index::Expr(Box::new(Expr::Literal(Value::String(name)))));
                } else if self.eat(Tok::Star) {
                    expr = Expr::Index(Box::new(expr), Index::Star);
                } else {
                    return Err(self.error(ParseFail::UnexpectedSymbol, self.peek()));
                }
            } else {
                break;
            }
        }
        self.leave(levels);
        Ok(expr)
    }

    /// A named value, a call or a primary; the flag says whether property access may follow.
    fn call(&mut self) -> Result<(Expr, bool), ExprError> {
        if !self.check(Tok::Identifier) {
            return self.primary();
        }
        let identifier = self.peek().clone();
        self.pos += 1;
        if !self.eat(Tok::LeftParen) {
            if !self.options.named_values.iter().any(|n| n.eq_ignore_ascii_case(&identifier.text)) {
                return Err(self.error(ParseFail::UnrecognizedNamedValue, &identifier));
            }
            return Ok((Expr::NamedValue(identifier.text), true));
        }
        let mut args = Vec::new();
        while !self.eat(Tok::RightParen) {
            if self.at_end() {
                return Err(self.error(ParseFail::UnexpectedEnd, self.previous()));
            }
            args.push(self.expression()?);
            if !self.check(Tok::RightParen) {
                self.expect(Tok::Comma)?;
            }
        }
        let name = identifier.text.to_ascii_lowercase();
        let sig = BUILTIN_FUNCTIONS
            .iter()
            .chain(self.options.extra_functions)
            .find(|f| f.name.eq_ignore_ascii_case(&name))
            .ok_or_else(|| self.error(ParseFail::UnrecognizedFunction, &identifier))?;
        if args.len() < sig.min_args {
            return Err(self.error(ParseFail::TooFewParameters, &identifier));
        }
        if args.len() > sig.max_args {
            return Err(self.error(ParseFail::TooManyParameters, &identifier));
        }
        if name == "case" && args.len() % 2 == 0 {
            return Err(self.error(ParseFail::EvenParameters, &identifier));
        }
        Ok((Expr::Call(name, args), true))
    }

    fn primary(&mut self) -> Result<(Expr, bool), ExprError> {
        let token = self.peek().clone();
        let literal = match token.tok {
            Tok::False => Some(Value::Bool(false)),
            Tok::True => Some(Value::Bool(true)),
            Tok::Null => Some(Value::Null),
            Tok::Number => Some(Value::Number(token.number)),
            Tok::String => Some(Value::String(token.text.clone())),
            _ => None,
        };
        if let Some(value) = literal {
            self.pos += 1;
            return Ok((Expr::Literal(value), false));
        }
        if self.eat(Tok::LeftParen) {
            let expr = self.expression()?;
            if self.at_end() {
                return Err(self.error(ParseFail::UnexpectedEnd, self.previous()));
            }
            self.expect(Tok::RightParen)?;
            return Ok((expr, true));
        }
        if self.at_end() {
            return Err(self.error(ParseFail::UnexpectedEnd, self.previous()));
        }
        Err(self.error(ParseFail::UnexpectedSymbol, &token))
    }
}

/// Parses an expression (the text between `${{` and `}}`). An empty source is `null`.
pub fn parse(source: &str, options: &ParseOptions<'_>) -> Result<Expr, ExprError> {
    let tokens = Lexer { source, chars: source.chars().collect(), offset: 0, tokens: Vec::new() }.lex()?;
    let mut parser = Parser { source, tokens, pos: 0, depth: 0, options };
    if parser.at_end() {
        return Ok(Expr::Literal(Value::Null));
    }
    let expr = parser.expression()?;
    if !parser.at_end() {
        return Err(parser.error(ParseFail::UnexpectedSymbol, parser.peek()));
    }
    Ok(expr)
}

impl Expr {
    /// Whether the expression reads the named value `name` (ignoring case).
    pub fn references(&self, name: &str) -> bool {
        match self {
            Expr::Literal(_) => false,
            Expr::NamedValue(n) => n.eq_ignore_ascii_case(name),
            Expr::Index(target, Index::Star) => target.references(name),
            Expr::Index(target, Index::Expr(index)) => target.references(name) || index.references(name),
            Expr::Not(inner) => inner.references(name),
            Expr::Compare(left, _, right) => left.references(name) || right.references(name),
            Expr::Logical(_, args) | Expr::Call(_, args) => args.iter().any(|a| a.references(name)),
        }
    }

    /// Whether the expression calls one of the status functions (`success()`, `failure()`,
    /// `always()`, `cancelled()`); an `if:` without one means `success() && (…)`.
    pub fn calls_status_function(&self) -> bool {
        match self {
            Expr::Call(name, args) => {
                matches!(name.as_str(), "success" | "failure" | "always" | "cancelled")
                    || args.iter().any(Expr::calls_status_function)
            }
            Expr::Literal(_) | Expr::NamedValue(_) => false,
            Expr::Index(target, Index::Star) => target.calls_status_function(),
            Expr::Index(target, Index::Expr(index)) => target.calls_status_function() || index.calls_status_function(),
            Expr::Not(inner) => inner.calls_status_function(),
            Expr::Compare(left, _, right) => left.calls_status_function() || right.calls_status_function(),
            Expr::Logical(_, args) => args.iter().any(Expr::calls_status_function),
        }
    }
}
