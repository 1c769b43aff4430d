//! Evaluation of parsed expressions against a context.

use std::cmp::Ordering;
use std::sync::Arc;

use super::parse::{CompareOp, Expr, Index, LogicalOp};
use super::value::{Value, loose_cmp, loose_eq, upper_special};
use super::{ErrorKind, ExprError};

/// Most bytes of strings one evaluation may produce (counted as UTF-16, as GitHub's runner does).
pub const MAX_MEMORY_BYTES: usize = 1 << 20;

/// What an expression reads: named values and the functions that need the outside world
/// (`success()`, `hashFiles()`); the crate itself does no I/O.
pub trait Context {
    /// The value of a named value (`github`, `matrix`, …). Names compare ignoring case; a missing
    /// value reads as null.
    fn named_value(&self, name: &str) -> Option<Value>;

    /// Calls a function that is not built in. `name` is lower-case; the arity was checked when
    /// parsing.
    fn call(&self, name: &str, args: &[Value]) -> Result<Value, String> {
        let _ = args;
        Err(format!("function '{name}' is not available here"))
    }
}

/// Evaluates `expr`. `source` is the expression's text, quoted in error messages.
pub fn evaluate(expr: &Expr, ctx: &dyn Context, source: &str) -> Result<Value, ExprError> {
    Evaluator { ctx, memory: 0 }.eval(expr).map_err(|message| {
        ExprError::new(ErrorKind::Evaluation, format!("{message}. Located within expression: {source}"))
    })
}

struct Evaluator<'c> {
    ctx: &'c dyn Context,
    memory: usize,
}

impl Evaluator<'_> {
    fn eval(&mut self, expr: &Expr) -> Result<Value, String> {
        match expr {
            Expr::Literal(value) => Ok(value.clone()),
            Expr::NamedValue(name) => Ok(self.ctx.named_value(name).unwrap_or(Value::Null)),
            Expr::Not(inner) => Ok(Value::Bool(!self.eval(inner)?.is_truthy())),
            Expr::Compare(left, op, right) => {
                let (l, r) = (self.eval(left)?, self.eval(right)?);
                let ord = || loose_cmp(&l, &r);
                Ok(Value::Bool(match op {
                    CompareOp::Eq => loose_eq(&l, &r),
                    CompareOp::Ne => !loose_eq(&l, &r),
                    CompareOp::Gt => ord() == Some(Ordering::Greater),
                    CompareOp::Lt => ord() == Some(Ordering::Less),
                    CompareOp::Ge => loose_eq(&l, &r) || ord() == Some(Ordering::Greater),
                    CompareOp::Le => loose_eq(&l, &r) || ord() == Some(Ordering::Less),
                }))
            }
            Expr::Logical(op, args) => {
                let mut result = Value::Null;
                for arg in args {
                    result = self.eval(arg)?;
                    let stop = match op {
                        LogicalOp::And => !result.is_truthy(),
                        LogicalOp::Or => result.is_truthy(),
                    };
                    if stop {
                        break;
                    }
                }
                Ok(result)
            }
            Expr::Index(target, index) => {
                let key = match index {
                    Index::Star => None,
                    Index::Expr(e) => Some(self.eval(e)?),
                };
                let target = self.eval(target)?;
                Ok(index_value(&target, key.as_ref()))
            }
            Expr::Call(name, args) if name == "case" => self.case(args),
            Expr::Call(name, args) => {
                let args = args.iter().map(|a| self.eval(a)).collect::<Result<Vec<_>, _>>()?;
                let result = match name.as_str() {
                    "contains" => Value::Bool(contains(&args[0], &args[1])),
                    "startswith" => Value::Bool(string_test(&args[0], &args[1], |a, b| a.starts_with(b))),
                    "endswith" => Value::Bool(string_test(&args[0], &args[1], |a, b| a.ends_with(b))),
                    "format" => Value::String(format(&args)?),
                    "join" => Value::String(join(&args)),
                    "tojson" => Value::String(args[0].to_json_pretty()),
                    "fromjson" => from_json(&args[0])?,
                    other => self.ctx.call(other, &args)?,
                };
                if let Value::String(s) = &result {
                    self.charge(s)?;
                }
                Ok(result)
            }
        }
    }

    /// `case(pred1, value1, pred2, value2, …, default)`: the value of the first true predicate.
    fn case(&mut self, args: &[Expr]) -> Result<Value, String> {
        let (default, pairs) = args.split_last().expect("the parser requires at least three arguments");
        for pair in pairs.chunks(2) {
            match self.eval(&pair[0])? {
                Value::Bool(true) => return self.eval(&pair[1]),
                Value::Bool(false) => {}
                _ => return Err("case predicate must evaluate to a boolean value".to_owned()),
            }
        }
        self.eval(default)
    }

    fn charge(&mut self, s: &str) -> Result<(), String> {
        self.memory = self.memory.saturating_add(s.len().saturating_mul(2));
        if self.memory > MAX_MEMORY_BYTES {
            Err("The maximum allowed memory size was exceeded".to_owned())
        } else {
            Ok(())
        }
    }
}

/// `target[key]`, or `target.*` when `key` is `None`. Indexing what cannot be indexed is null
/// (or an empty filter for `*`), never an error.
fn index_value(target: &Value, key: Option<&Value>) -> Value {
    let as_int = |key: &Value| {
        let f = key.to_number();
        (f.is_finite() && f >= 0.0).then(|| f.floor())
    };
    let as_str = |key: &Value| key.is_primitive().then(|| key.to_coerced_string());
    let element = |items: &[Value], key: &Value| -> Option<Value> {
        let i = as_int(key)?;
        // A float index beyond usize is simply out of range.
        if i >= items.len() as f64 { None } else { items.get(i as usize).cloned() }
    };
    match (target, key) {
        (Value::Filtered(items), key) => {
            let mut out = Vec::new();
            for item in items.iter() {
                match (item, key) {
                    (Value::Object(d), None) => out.extend(d.values().cloned()),
                    (Value::Object(d), Some(k)) => out.extend(as_str(k).and_then(|k| d.get(&k).cloned())),
                    (Value::Array(a) | Value::Filtered(a), None) => out.extend(a.iter().cloned()),
                    (Value::Array(a) | Value::Filtered(a), Some(k)) => out.extend(element(a, k)),
                    _ => {}
                }
            }
            Value::Filtered(Arc::new(out))
        }
        (Value::Array(items), None) => Value::Filtered(items.clone()),
        (Value::Array(items), Some(k)) => element(items, k).unwrap_or(Value::Null),
        (Value::Object(d), None) => Value::Filtered(Arc::new(d.values().cloned().collect())),
        (Value::Object(d), Some(k)) => as_str(k).and_then(|k| d.get(&k).cloned()).unwrap_or(Value::Null),
        (_, None) => Value::Filtered(Arc::new(Vec::new())),
        (_, Some(_)) => Value::Null,
    }
}

/// `contains(search, item)`: substring (ignoring case) for primitives, element for arrays.
fn contains(search: &Value, item: &Value) -> bool {
    if search.is_primitive() {
        item.is_primitive()
            && search.to_coerced_string().to_lowercase().contains(&item.to_coerced_string().to_lowercase())
    } else if let Some(items) = search.as_array() {
        items.iter().any(|v| loose_eq(item, v))
    } else {
        false
    }
}

fn string_test(left: &Value, right: &Value, test: impl Fn(&str, &str) -> bool) -> bool {
    left.is_primitive()
        && right.is_primitive()
        && test(&upper_special(&left.to_coerced_string()), &upper_special(&right.to_coerced_string()))
}

fn join(args: &[Value]) -> String {
    if args[0].is_primitive() {
        return args[0].to_coerced_string();
    }
    let Some(items) = args[0].as_array() else { return String::new() };
    let separator = match args.get(1) {
        Some(sep) if sep.is_primitive() => sep.to_coerced_string(),
        _ => ",".to_owned(),
    };
    items.iter().map(Value::to_coerced_string).collect::<Vec<_>>().join(&separator)
}

fn from_json(input: &Value) -> Result<Value, String> {
    let text = input.to_coerced_string();
    if text.trim().is_empty() {
        return Err("empty input".to_owned());
    }
    serde_json::from_str::<serde_json::Value>(&text)
        .map(Value::from_json)
        .map_err(|e| format!("Error parsing JSON when evaluating fromJson: {e}"))
}

/// `format('{0} and {1}', a, b)`: `{N}` is the N-th argument after the format string; `{{` and
/// `}}` are literal braces.
fn format(args: &[Value]) -> Result<String, String> {
    let fs: Vec<char> = args[0].to_coerced_string().chars().collect();
    let invalid = || format!("The following format string is invalid: {}", fs.iter().collect::<String>());
    let mut out = String::new();
    let mut i = 0;
    while i < fs.len() {
        let lbrace = fs[i..].iter().position(|&c| c == '{').map(|p| p + i);
        let rbrace = fs[i..].iter().position(|&c| c == '}').map(|p| p + i);
        match (lbrace, rbrace) {
            (Some(l), r) if r.is_none_or(|r| r > l) => {
                if fs.get(l + 1) == Some(&'{') {
                    out.extend(&fs[i..=l]);
                    i = l + 2;
                    continue;
                }
                let r = r.ok_or_else(invalid)?;
                let digits: String = fs[l + 1..].iter().take_while(|c| c.is_ascii_digit()).collect();
                // Exactly `{digits}`: anything else between the braces is invalid.
                if digits.is_empty() || l + 1 + digits.len() != r {
                    return Err(invalid());
                }
                let index: usize = digits.parse().map_err(|_| invalid())?;
                let arg = args.get(index + 1).ok_or_else(|| {
                    format!(
                        "The following format string references more arguments than were supplied: {}",
                        fs.iter().collect::<String>()
                    )
                })?;
                out.extend(&fs[i..l]);
                out.push_str(&arg.to_coerced_string());
                i = r + 1;
            }
            (_, Some(r)) => {
                if fs.get(r + 1) == Some(&'}') {
                    out.extend(&fs[i..=r]);
                    i = r + 2;
                } else {
                    return Err(invalid());
                }
            }
            _ => {
                out.extend(&fs[i..]);
                break;
            }
        }
    }
    Ok(out)
}

/// A context whose named values come from a dictionary; functions beyond the built-ins fail.
#[derive(Debug, Clone, Default)]
pub struct DictContext(pub super::Dict);

impl Context for DictContext {
    fn named_value(&self, name: &str) -> Option<Value> {
        self.0.get(name).cloned()
    }
}
