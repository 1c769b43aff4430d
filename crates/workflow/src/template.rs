//! Strings with embedded expressions: `build-${{ matrix.os }}`.

use crate::expr::{self, Context, ExprError, ParseOptions, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment<'s> {
    Literal(&'s str),
    /// The expression between `${{` and `}}`, trimmed.
    Expr(&'s str),
}

/// Splits a string into literal text and expressions. A `}}` inside a quoted string of the
/// expression does not end it (`${{ format('{0}}}', x) }}`).
pub fn split(s: &str) -> Result<Vec<Segment<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("${{") {
        if start > 0 {
            out.push(Segment::Literal(&rest[..start]));
        }
        let body = &rest[start + 3..];
        let mut in_string = false;
        let mut end = None;
        let bytes = body.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\'' => in_string = !in_string,
                b'}' if !in_string && bytes.get(i + 1) == Some(&b'}') => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        let end = end.ok_or_else(|| "an expression starting with '${{' is not closed with '}}'".to_owned())?;
        out.push(Segment::Expr(body[..end].trim()));
        rest = &body[end + 2..];
    }
    if !rest.is_empty() {
        out.push(Segment::Literal(rest));
    }
    Ok(out)
}

/// Whether the string holds any expression.
pub fn has_expression(s: &str) -> bool {
    s.contains("${{")
}

/// If the whole string (ignoring surrounding whitespace) is one expression, that expression.
pub fn single_expression(s: &str) -> Option<&str> {
    match split(s.trim()).ok()?.as_slice() {
        [Segment::Expr(e)] => Some(e),
        _ => None,
    }
}

/// Parses every expression in the string; the first error is returned.
pub fn check(s: &str, options: &ParseOptions<'_>) -> Result<(), String> {
    for segment in split(s)? {
        match segment {
            Segment::Expr("") => return Err("An expression was expected".to_owned()),
            Segment::Expr(e) => {
                expr::parse(e, options).map_err(|e| e.message)?;
            }
            Segment::Literal(_) => {}
        }
    }
    Ok(())
}

/// The expression GitHub makes of a string mixing text and expressions: `a ${{ x }} b` is
/// `format('a {0} b', x)` (quotes doubled, braces of the text escaped).
pub fn as_format_call(s: &str) -> Result<String, String> {
    let mut text = String::new();
    let mut args = Vec::new();
    for segment in split(s)? {
        match segment {
            Segment::Literal(t) => {
                text.push_str(&t.replace('\'', "''").replace('{', "{{").replace('}', "}}"));
            }
            Segment::Expr("") => return Err("An expression was expected".to_owned()),
            Segment::Expr(e) => {
                text.push_str(&format!("{{{}}}", args.len()));
                args.push(e);
            }
        }
    }
    let mut call = format!("format('{text}'");
    for arg in args {
        call.push_str(", ");
        call.push_str(arg);
    }
    call.push(')');
    Ok(call)
}

/// Evaluates a template: a string that is one expression keeps the expression's type; otherwise
/// the parts are joined as strings.
pub fn evaluate(s: &str, options: &ParseOptions<'_>, ctx: &dyn Context) -> Result<Value, ExprError> {
    let eval = |e: &str| expr::evaluate(&expr::parse(e, options)?, ctx, e);
    if let Some(e) = single_expression(s) {
        return eval(e);
    }
    let segments = split(s).map_err(|message| ExprError { kind: expr::ErrorKind::Parsing, message })?;
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Literal(text) => out.push_str(text),
            Segment::Expr(e) => out.push_str(&eval(e)?.to_coerced_string()),
        }
    }
    Ok(Value::String(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitting() {
        assert_eq!(
            split("a ${{ x }} b").expect("ok"),
            [Segment::Literal("a "), Segment::Expr("x"), Segment::Literal(" b")]
        );
        assert_eq!(split("${{ format('{0}}}', x) }}").expect("ok"), [Segment::Expr("format('{0}}}', x)")]);
        assert_eq!(split("plain").expect("ok"), [Segment::Literal("plain")]);
        assert!(split("a ${{ x").is_err());
        assert_eq!(single_expression("  ${{ true }} "), Some("true"));
        assert_eq!(single_expression("${{ a }}${{ b }}"), None);
    }

    #[test]
    fn mixed_text_becomes_a_format_call_as_on_github() {
        assert_eq!(as_format_call("false || ${{ true && true }}").expect("ok"), "format('false || {0}', true && true)");
        assert_eq!(as_format_call("it's {x} ${{ a }}${{ b }}").expect("ok"), "format('it''s {{x}} {0}{1}', a, b)");
        assert!(as_format_call("x ${{ }}").is_err());
        assert_eq!(check("echo ${{ }}", &ParseOptions::default()), Err("An expression was expected".to_owned()));
    }

    struct NoContext;
    impl Context for NoContext {
        fn named_value(&self, _: &str) -> Option<Value> {
            None
        }
    }

    #[test]
    fn evaluation_keeps_types_of_single_expressions() {
        let opts = ParseOptions::default();
        assert!(matches!(evaluate("${{ 1 == 1 }}", &opts, &NoContext), Ok(Value::Bool(true))));
        let v = evaluate("n=${{ 1 + 0 == 1 }}!", &opts, &NoContext);
        assert!(v.is_err(), "'+' is not an operator");
        let v = evaluate("n=${{ 2 > 1 }}!", &opts, &NoContext).expect("ok");
        assert_eq!(v.to_coerced_string(), "n=true!");
    }
}
