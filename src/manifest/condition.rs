//! [`Condition`]: the small language of an AnalysisTemplate metric's `successCondition` and
//! `failureCondition`, over the figures the gateways keep for a revision.
//!
//! ```text
//! condition  := all ( "||" all )*
//! all        := comparison ( "&&" comparison )*
//! comparison := FIGURE OP NUMBER
//! FIGURE     := successRate | errorRate | p50Ms | p90Ms | p99Ms | requests | rps
//! OP         := >= | <= | > | < | == | !=
//! NUMBER     := digits, optionally with a fraction: 200, 0.99, .5
//! ```
//!
//! `&&` binds tighter than `||`; there are no parentheses, so every condition is an `||` of
//! `&&`s, and that is how [`Condition`] stores it. [`Condition`]'s `Display` prints it back
//! canonically (single spaces, numbers in their shortest form), and that text parses to an equal
//! condition.

use std::fmt;
use std::str::FromStr;

/// A figure the gateways measure for a revision over one interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Figure {
    /// Share of requests answered without a 5xx or a trap, 0 to 1.
    SuccessRate,
    /// `1 - successRate`.
    ErrorRate,
    /// Latency percentiles, in milliseconds.
    P50Ms,
    P90Ms,
    P99Ms,
    /// Requests in the interval.
    Requests,
    /// Requests per second over the interval.
    Rps,
}

impl Figure {
    /// Every figure, in the order error messages list them.
    pub const ALL: [Figure; 7] = [
        Figure::SuccessRate,
        Figure::ErrorRate,
        Figure::P50Ms,
        Figure::P90Ms,
        Figure::P99Ms,
        Figure::Requests,
        Figure::Rps,
    ];

    /// The name as written in a condition: `successRate`.
    pub fn name(self) -> &'static str {
        match self {
            Figure::SuccessRate => "successRate",
            Figure::ErrorRate => "errorRate",
            Figure::P50Ms => "p50Ms",
            Figure::P90Ms => "p90Ms",
            Figure::P99Ms => "p99Ms",
            Figure::Requests => "requests",
            Figure::Rps => "rps",
        }
    }

    /// The figure named exactly `s` (case-sensitive, as Argo's expressions are).
    pub fn parse(s: &str) -> Option<Figure> {
        Figure::ALL.into_iter().find(|f| f.name() == s)
    }
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Ge,
    Le,
    Gt,
    Lt,
    Eq,
    Ne,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Ge => ">=",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Lt => "<",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    fn parse(s: &str) -> Option<Op> {
        [Op::Ge, Op::Le, Op::Gt, Op::Lt, Op::Eq, Op::Ne].into_iter().find(|op| op.as_str() == s)
    }

    /// `left OP right`. `==` and `!=` compare exactly, as the written number is exact for the
    /// figures that are counts.
    pub fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Op::Ge => left >= right,
            Op::Le => left <= right,
            Op::Gt => left > right,
            Op::Lt => left < right,
            Op::Eq => left == right,
            Op::Ne => left != right,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `figure OP value`: one term of a condition.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Comparison {
    pub figure: Figure,
    pub op: Op,
    /// Finite and not negative.
    pub value: f64,
}

impl Comparison {
    /// `None` when the figure is missing.
    fn eval(&self, figures: &dyn Fn(&str) -> Option<f64>) -> Option<bool> {
        figures(self.figure.name()).map(|v| self.op.holds(v, self.value))
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.figure, self.op, self.value)
    }
}

/// A parsed condition: alternatives joined by `||`, each a non-empty list of comparisons joined
/// by `&&`. Never empty.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub any: Vec<Vec<Comparison>>,
}

impl Condition {
    /// Parses a condition; the error says what was expected at which character (1-based).
    pub fn parse(text: &str) -> Result<Condition, ConditionError> {
        Parser { tokens: tokenize(text), next: 0 }.condition()
    }

    /// Evaluates the condition over `figures` (by name: `"successRate"` → `Some(0.997)`).
    ///
    /// Three-valued, as SQL's `AND`/`OR`: a missing figure makes its comparison unknown, and the
    /// result is `None` only when an unknown decides it (`true || unknown` is `true`,
    /// `false && unknown` is `false`, `true && unknown` is `None`).
    pub fn eval(&self, figures: &dyn Fn(&str) -> Option<f64>) -> Option<bool> {
        let mut result = Some(false);
        for all in &self.any {
            let mut conj = Some(true);
            for c in all {
                conj = match (conj, c.eval(figures)) {
                    (Some(false), _) | (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                };
            }
            result = match (result, conj) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            };
        }
        result
    }

    /// Every figure the condition reads, once each, in order of first use.
    pub fn figures(&self) -> Vec<Figure> {
        let mut out = Vec::new();
        for c in self.any.iter().flatten() {
            if !out.contains(&c.figure) {
                out.push(c.figure);
            }
        }
        out
    }
}

impl FromStr for Condition {
    type Err = ConditionError;

    fn from_str(s: &str) -> Result<Condition, ConditionError> {
        Condition::parse(s)
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, all) in self.any.iter().enumerate() {
            if i > 0 {
                f.write_str(" || ")?;
            }
            for (j, c) in all.iter().enumerate() {
                if j > 0 {
                    f.write_str(" && ")?;
                }
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// Why a condition does not parse: what was found where something else was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionError {
    /// 1-based character (not byte) of the condition where the problem starts.
    pub at: usize,
    /// What is wrong: `unknown figure "sucessRate"`, `expected an operator, found "="`.
    pub what: String,
    /// What to write instead.
    pub hint: Option<String>,
}

impl fmt::Display for ConditionError {
    /// `unknown figure "sucessRate" at character 1: use successRate, …`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at character {}", self.what, self.at)?;
        match &self.hint {
            Some(h) => write!(f, ": {h}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for ConditionError {}

const FIGURES_HINT: &str = "use successRate, errorRate, p50Ms, p90Ms, p99Ms, requests or rps";
const OPS_HINT: &str = "use >=, <=, >, <, == or !=";
const NUMBER_HINT: &str = "write a decimal such as 0.99 or 200";

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// A name: letters, digits and `_`, not starting with a digit.
    Word(String),
    /// Digits and dots.
    Number(String),
    /// A run of `<>=!&|`.
    Symbol(String),
    /// Any other single character.
    Other(char),
    End,
}

impl Tok {
    /// How an error message shows what was found.
    fn found(&self) -> String {
        match self {
            Tok::Word(s) | Tok::Number(s) | Tok::Symbol(s) => format!("found {s:?}"),
            Tok::Other(c) => format!("found {:?}", c.to_string()),
            Tok::End => "found the end of the condition".to_owned(),
        }
    }
}

/// Tokens with their 1-based character positions; always ends with [`Tok::End`].
fn tokenize(text: &str) -> Vec<(usize, Tok)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let run = |i: usize, pred: &dyn Fn(char) -> bool| {
        let end = chars[i..].iter().position(|&c| !pred(c)).map_or(chars.len(), |n| i + n);
        (end, chars[i..end].iter().collect::<String>())
    };
    while i < chars.len() {
        let c = chars[i];
        let at = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let (end, tok) = if c.is_ascii_alphabetic() || c == '_' {
            let (end, s) = run(i, &|c| c.is_ascii_alphanumeric() || c == '_');
            (end, Tok::Word(s))
        } else if c.is_ascii_digit() || c == '.' {
            let (end, s) = run(i, &|c| c.is_ascii_digit() || c == '.');
            (end, Tok::Number(s))
        } else if "<>=!&|".contains(c) {
            let (end, s) = run(i, &|c| "<>=!&|".contains(c));
            (end, Tok::Symbol(s))
        } else {
            (i + 1, Tok::Other(c))
        };
        out.push((at, tok));
        i = end;
    }
    out.push((chars.len() + 1, Tok::End));
    out
}

struct Parser {
    tokens: Vec<(usize, Tok)>,
    next: usize,
}

impl Parser {
    fn peek(&self) -> &(usize, Tok) {
        // `tokenize` always ends with `End`, and `bump` never moves past it.
        &self.tokens[self.next.min(self.tokens.len() - 1)]
    }

    fn bump(&mut self) -> (usize, Tok) {
        let t = self.peek().clone();
        if t.1 != Tok::End {
            self.next += 1;
        }
        t
    }

    fn condition(mut self) -> Result<Condition, ConditionError> {
        let mut any = vec![vec![self.comparison()?]];
        loop {
            let (at, tok) = self.bump();
            match &tok {
                Tok::End => return Ok(Condition { any }),
                Tok::Symbol(s) if s == "&&" => {
                    let c = self.comparison()?;
                    if let Some(all) = any.last_mut() {
                        all.push(c);
                    }
                }
                Tok::Symbol(s) if s == "||" => any.push(vec![self.comparison()?]),
                _ => {
                    let hint = match &tok {
                        Tok::Symbol(s) if s == "&" || s == "|" => "write && or || (doubled)",
                        Tok::Word(w) if w.eq_ignore_ascii_case("and") || w.eq_ignore_ascii_case("or") => {
                            "write && for and, || for or"
                        }
                        Tok::Other('(' | ')') => "parentheses are not supported; && binds tighter than ||",
                        _ => "join comparisons with && or ||",
                    };
                    return Err(error(at, format!("expected && or ||, {}", tok.found()), Some(hint)));
                }
            }
        }
    }

    fn comparison(&mut self) -> Result<Comparison, ConditionError> {
        let (at, tok) = self.bump();
        let figure = match &tok {
            Tok::Word(w) => {
                Figure::parse(w).ok_or_else(|| error(at, format!("unknown figure {w:?}"), Some(FIGURES_HINT)))?
            }
            Tok::Other('(') => {
                return Err(error(
                    at,
                    format!("expected a figure, {}", tok.found()),
                    Some("parentheses are not supported; && binds tighter than ||"),
                ));
            }
            _ => return Err(error(at, format!("expected a figure, {}", tok.found()), Some(FIGURES_HINT))),
        };

        let (at, tok) = self.bump();
        let op = match &tok {
            Tok::Symbol(s) => Op::parse(s),
            _ => None,
        }
        .ok_or_else(|| error(at, format!("expected an operator after {figure}, {}", tok.found()), Some(OPS_HINT)))?;

        let (at, tok) = self.bump();
        let value = match &tok {
            Tok::Number(s) => number(s).ok_or_else(|| error(at, format!("invalid number {s:?}"), Some(NUMBER_HINT)))?,
            Tok::Other('-') => {
                return Err(error(
                    at,
                    format!("expected a number after {op}, {}", tok.found()),
                    Some("figures are never negative; write a decimal such as 0.99 or 200"),
                ));
            }
            _ => return Err(error(at, format!("expected a number after {op}, {}", tok.found()), Some(NUMBER_HINT))),
        };
        Ok(Comparison { figure, op, value })
    }
}

fn error(at: usize, what: String, hint: Option<&str>) -> ConditionError {
    ConditionError { at, what, hint: hint.map(str::to_owned) }
}

/// `200`, `0.99`, `.5`, `1.`: at most one dot, at least one digit, finite.
fn number(s: &str) -> Option<f64> {
    let digits = s.bytes().filter(u8::is_ascii_digit).count();
    let dots = s.len() - digits;
    if digits == 0 || dots > 1 {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Condition {
        Condition::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn err(s: &str) -> String {
        match Condition::parse(s) {
            Ok(c) => panic!("{s:?} parsed as {c}"),
            Err(e) => e.to_string(),
        }
    }

    /// Evaluates with the given figures; any other figure is missing.
    fn eval(s: &str, figures: &[(&str, f64)]) -> Option<bool> {
        parse(s).eval(&|name| figures.iter().find(|(n, _)| *n == name).map(|(_, v)| *v))
    }

    #[test]
    fn parses_and_prints_canonically() {
        for (text, canonical) in [
            ("successRate >= 0.99", "successRate >= 0.99"),
            ("successRate>=0.99&&p99Ms<=200", "successRate >= 0.99 && p99Ms <= 200"),
            ("  errorRate  >  .05 ", "errorRate > 0.05"),
            ("requests >= 20.000", "requests >= 20"),
            ("rps > 1. || p50Ms < 10", "rps > 1 || p50Ms < 10"),
            ("p90Ms == 0 || p99Ms != 3 && requests < 7", "p90Ms == 0 || p99Ms != 3 && requests < 7"),
        ] {
            let c = parse(text);
            assert_eq!(c.to_string(), canonical, "{text:?}");
            assert_eq!(parse(&c.to_string()), c, "{text:?} round trip");
            assert_eq!(text.parse::<Condition>().as_ref(), Ok(&c));
        }
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let c = parse("successRate >= 0.99 || errorRate < 0.1 && requests > 5 || rps > 1");
        let shape: Vec<usize> = c.any.iter().map(Vec::len).collect();
        assert_eq!(shape, [1, 2, 1]);
        assert_eq!(c.any[1][0], Comparison { figure: Figure::ErrorRate, op: Op::Lt, value: 0.1 });
        assert_eq!(c.figures(), [Figure::SuccessRate, Figure::ErrorRate, Figure::Requests, Figure::Rps]);

        // a || b && c: true when a alone holds, whatever b and c.
        let f = |a: f64, b: f64, c: f64| {
            eval("requests > 0 || errorRate > 0 && rps > 0", &[("requests", a), ("errorRate", b), ("rps", c)])
        };
        assert_eq!(f(1.0, 0.0, 0.0), Some(true));
        assert_eq!(f(0.0, 1.0, 0.0), Some(false), "(a || b) && c would be false too; b && c is what decides");
        assert_eq!(f(0.0, 1.0, 1.0), Some(true));
        // a && b || c: true when c alone holds (as (a && b) || c, not a && (b || c)).
        let g = |a: f64, b: f64, c: f64| {
            eval("requests > 0 && errorRate > 0 || rps > 0", &[("requests", a), ("errorRate", b), ("rps", c)])
        };
        assert_eq!(g(0.0, 0.0, 1.0), Some(true));
        assert_eq!(g(1.0, 1.0, 0.0), Some(true));
        assert_eq!(g(1.0, 0.0, 0.0), Some(false));
    }

    #[test]
    fn every_operator() {
        let cases = [
            (">=", [false, true, true]),
            ("<=", [true, true, false]),
            (">", [false, false, true]),
            ("<", [true, false, false]),
            ("==", [false, true, false]),
            ("!=", [true, false, true]),
        ];
        for (op, want) in cases {
            for (v, want) in [1.0, 2.0, 3.0].into_iter().zip(want) {
                assert_eq!(eval(&format!("p99Ms {op} 2"), &[("p99Ms", v)]), Some(want), "{v} {op} 2");
            }
        }
        assert_eq!(eval("successRate >= 0.99", &[("successRate", 0.99)]), Some(true));
        assert_eq!(eval("successRate >= 0.99", &[("successRate", 0.989)]), Some(false));
    }

    #[test]
    fn every_figure_is_read_by_name() {
        for f in Figure::ALL {
            let c = parse(&format!("{f} >= 1"));
            assert_eq!(c.any[0][0].figure, f);
            assert_eq!(c.eval(&|name| (name == f.name()).then_some(1.0)), Some(true));
            assert_eq!(c.eval(&|_| None), None, "{f} missing");
        }
    }

    #[test]
    fn missing_figures_are_unknown_only_when_they_decide() {
        let figs = [("successRate", 1.0)];
        assert_eq!(eval("successRate >= 0.99 && p99Ms < 200", &figs), None);
        assert_eq!(eval("successRate < 0.5 && p99Ms < 200", &figs), Some(false));
        assert_eq!(eval("successRate >= 0.99 || p99Ms < 200", &figs), Some(true));
        assert_eq!(eval("successRate < 0.5 || p99Ms < 200", &figs), None);
        assert_eq!(eval("p99Ms < 200 || successRate < 0.5 || requests > 3", &figs), None);
        assert_eq!(eval("p99Ms < 200 || successRate > 0.5", &figs), Some(true));
    }

    #[test]
    fn errors_say_what_was_expected_where() {
        assert_eq!(
            err("sucessRate >= 0.99"),
            "unknown figure \"sucessRate\" at character 1: use successRate, errorRate, p50Ms, p90Ms, p99Ms, requests or rps"
        );
        assert_eq!(
            err("successRate >= 0.99 && P99ms <= 200"),
            "unknown figure \"P99ms\" at character 24: use successRate, errorRate, p50Ms, p90Ms, p99Ms, requests or rps"
        );
        assert_eq!(
            err("successRate = 1"),
            "expected an operator after successRate, found \"=\" at character 13: use >=, <=, >, <, == or !="
        );
        assert_eq!(
            err("successRate => 1"),
            "expected an operator after successRate, found \"=>\" at character 13: use >=, <=, >, <, == or !="
        );
        assert_eq!(
            err("successRate"),
            "expected an operator after successRate, found the end of the condition at character 12: use >=, <=, >, <, == or !="
        );
        assert_eq!(
            err("p99Ms <= high"),
            "expected a number after <=, found \"high\" at character 10: write a decimal such as 0.99 or 200"
        );
        assert_eq!(
            err("p99Ms <= 1.2.3"),
            "invalid number \"1.2.3\" at character 10: write a decimal such as 0.99 or 200"
        );
        assert_eq!(err("p99Ms <= ."), "invalid number \".\" at character 10: write a decimal such as 0.99 or 200");
        assert_eq!(
            err("p99Ms > -1"),
            "expected a number after >, found \"-\" at character 9: figures are never negative; write a decimal such as 0.99 or 200"
        );
        assert_eq!(
            err("p99Ms < 200 and rps > 1"),
            "expected && or ||, found \"and\" at character 13: write && for and, || for or"
        );
        assert_eq!(
            err("p99Ms < 200 & rps > 1"),
            "expected && or ||, found \"&\" at character 13: write && or || (doubled)"
        );
        assert_eq!(
            err("p99Ms < 200ms"),
            "expected && or ||, found \"ms\" at character 12: join comparisons with && or ||"
        );
        assert_eq!(
            err("(p99Ms < 200 || rps > 1) && requests > 9"),
            "expected a figure, found \"(\" at character 1: parentheses are not supported; && binds tighter than ||"
        );
        assert_eq!(
            err("p99Ms < 200 && "),
            "expected a figure, found the end of the condition at character 16: use successRate, errorRate, p50Ms, p90Ms, p99Ms, requests or rps"
        );
        assert_eq!(
            err(""),
            "expected a figure, found the end of the condition at character 1: use successRate, errorRate, p50Ms, p90Ms, p99Ms, requests or rps"
        );
        assert_eq!(
            err("200 > p99Ms"),
            "expected a figure, found \"200\" at character 1: use successRate, errorRate, p50Ms, p90Ms, p99Ms, requests or rps"
        );
        assert!(err(&format!("rps > {}", "9".repeat(400))).starts_with("invalid number"));
        // Characters, not bytes.
        assert_eq!(err("rps > 1 && ünknown > 2").split(" at character ").nth(1).map(|s| &s[..2]), Some("12"));
    }
}
