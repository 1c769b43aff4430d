//! GitHub Actions' expression language: `${{ github.ref == 'refs/heads/main' && success() }}`.
//!
//! [`parse`] turns source into an [`Expr`] (checking named values and functions against what the
//! place in the workflow allows); [`evaluate`] computes its [`Value`] against a [`Context`].
//! Semantics, limits and messages follow GitHub's; `tests/gha_expressions.rs` runs GitHub's own
//! test vectors.

mod eval;
mod parse;
mod value;

pub use eval::{Context, DictContext, MAX_MEMORY_BYTES, evaluate};
pub use parse::{
    BUILTIN_FUNCTIONS, CompareOp, Expr, FunctionSig, Index, LogicalOp, MAX_DEPTH, MAX_LENGTH, ParseOptions, parse,
};
pub use value::{Dict, Kind, Value, js_number_to_string, loose_cmp, loose_eq, parse_js_number};

/// The condition an `if:` really means: GitHub adds `success() &&` unless the expression calls a
/// status function itself (`always()`, `failure()`, …). Without an `if:` the condition is
/// `success()`.
pub fn effective_condition(condition: Option<&str>, options: &ParseOptions<'_>) -> Result<String, ExprError> {
    match condition.map(str::trim) {
        None | Some("") => Ok("success()".to_owned()),
        Some(source) if parse(source, options)?.calls_status_function() => Ok(source.to_owned()),
        Some(source) => Ok(format!("success() && ({source})")),
    }
}

/// Where an expression failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Lexing,
    Parsing,
    Evaluation,
}

/// An error with GitHub's message, which quotes the expression (and for syntax errors, the
/// position of the offending token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ExprError {
    fn new(kind: ErrorKind, message: String) -> Self {
        ExprError { kind, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ctx;

    impl Context for Ctx {
        fn named_value(&self, name: &str) -> Option<Value> {
            name.eq_ignore_ascii_case("github").then(|| {
                let mut d = Dict::new();
                d.insert("ref", Value::from("refs/heads/main"));
                Value::object(d)
            })
        }

        fn call(&self, name: &str, _args: &[Value]) -> Result<Value, String> {
            match name {
                "success" => Ok(Value::Bool(true)),
                _ => Err(format!("no {name}")),
            }
        }
    }

    const SUCCESS: FunctionSig = FunctionSig { name: "success", min_args: 0, max_args: 0 };
    const FAILURE: FunctionSig = FunctionSig { name: "failure", min_args: 0, max_args: 0 };

    fn eval(source: &str) -> Result<Value, ExprError> {
        let options = ParseOptions { named_values: &["github"], extra_functions: &[SUCCESS] };
        evaluate(&parse(source, &options)?, &Ctx, source)
    }

    #[test]
    fn extension_functions_and_named_values() {
        let v = eval("success() && github.REF == 'refs/heads/MAIN'").expect("evaluates");
        assert!(matches!(v, Value::Bool(true)), "{v:?}");
        let err = eval("success(1)").expect_err("arity");
        assert!(err.message.starts_with("Too many parameters supplied: 'success'"), "{}", err.message);
        let err = eval("failure()").expect_err("unknown");
        assert_eq!(err.kind, ErrorKind::Parsing);
        assert!(err.message.starts_with("Unrecognized function: 'failure'"), "{}", err.message);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        for source in [
            "(".repeat(100_000) + "1" + &")".repeat(100_000),
            "!".repeat(100_000) + "true",
            "github".to_owned() + &"[0]".repeat(5000),
        ] {
            let source: String = source.chars().take(MAX_LENGTH).collect();
            let err = eval(&source).expect_err("too deep");
            assert!(
                err.message.contains("Exceeded max expression depth 50") || err.kind == ErrorKind::Parsing,
                "{}",
                err.message
            );
        }
        let long = "true".to_owned() + &" || false".repeat(2000);
        assert!(matches!(eval(&long), Ok(Value::Bool(true))));
        let err = eval(&"1".repeat(MAX_LENGTH + 1)).expect_err("too long");
        assert_eq!(err.message, "Exceeded max expression length 21000");
    }

    #[test]
    fn case_picks_the_first_true_predicate_lazily() {
        let v = eval("case(false, 'a', true, 'b', fromJSON('not json'))").expect("default never evaluated");
        assert_eq!(v.to_coerced_string(), "b");
        assert_eq!(eval("case(false, 'a', 'c')").expect("default").to_coerced_string(), "c");
    }

    #[test]
    fn conditions_imply_success_unless_they_ask_for_status() {
        let options = ParseOptions { named_values: &["github"], extra_functions: &[SUCCESS, FAILURE] };
        for (written, meant) in [
            (None, "success()"),
            (Some("github.ref == 'x'"), "success() && (github.ref == 'x')"),
            (Some("failure() || github.ref == 'x'"), "failure() || github.ref == 'x'"),
            (Some("!success()"), "!success()"),
        ] {
            assert_eq!(effective_condition(written, &options).expect("valid"), meant);
        }
    }

    #[test]
    fn hash_files_reaches_the_injected_hasher() {
        struct Hasher;
        impl Context for Hasher {
            fn named_value(&self, _: &str) -> Option<Value> {
                None
            }
            fn call(&self, name: &str, args: &[Value]) -> Result<Value, String> {
                assert_eq!(name, "hashfiles");
                let patterns: Vec<String> = args.iter().map(Value::to_coerced_string).collect();
                Ok(Value::from(format!("hash-of-{}", patterns.join("+"))))
            }
        }
        let options = ParseOptions {
            named_values: &[],
            extra_functions: &[FunctionSig { name: "hashFiles", min_args: 1, max_args: 255 }],
        };
        let source = "format('cache-{0}', hashFiles('**/Cargo.lock', 'rust-toolchain'))";
        let value = evaluate(&parse(source, &options).expect("parses"), &Hasher, source).expect("evaluates");
        assert_eq!(value.to_coerced_string(), "cache-hash-of-**/Cargo.lock+rust-toolchain");
    }

    #[test]
    fn logical_operators_return_operands() {
        assert_eq!(eval("'' || 'fallback'").expect("or").to_coerced_string(), "fallback");
        assert_eq!(eval("'x' && 0").expect("and").to_number(), 0.0);
    }
}
