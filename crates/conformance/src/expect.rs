//! The expected-results file: one `name OUTCOME` line per test (`#` comments), checked
//! into the repository. A test expected to PASS that does not is a regression; a test
//! that passes but is not expected to is an improvement to record by regenerating the
//! file. Other outcomes (FAIL, SKIP, TIMEOUT, NOTRUN) are written down so a reader sees
//! the whole picture, but only a lost PASS fails the check: failures may change shape
//! as the engine improves.

use std::collections::BTreeMap;

use crate::run::TestResult;

/// Expected outcome words by test name.
pub type Expected = BTreeMap<String, String>;

pub fn parse(text: &str) -> Result<Expected, String> {
    let mut out = Expected::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut w = line.split_whitespace();
        let (Some(name), Some(word), None) = (w.next(), w.next(), w.next()) else {
            return Err(format!("line {}: expected `name OUTCOME`", i + 1));
        };
        if !matches!(word, "PASS" | "FAIL" | "SKIP" | "TIMEOUT" | "NOTRUN") {
            return Err(format!("line {}: unknown outcome {word}", i + 1));
        }
        if out.insert(name.to_string(), word.to_string()).is_some() {
            return Err(format!("line {}: {name} listed twice", i + 1));
        }
    }
    Ok(out)
}

/// Renders results as an expected-results file (sorted by name) under `header`.
pub fn render(header: &str, results: &[TestResult]) -> String {
    let mut sorted: Vec<&TestResult> = results.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let width = sorted.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let mut s = String::new();
    for l in header.lines() {
        s.push_str("# ");
        s.push_str(l);
        s.push('\n');
    }
    for r in sorted {
        s.push_str(&format!(
            "{:width$} {}\n",
            r.name,
            r.outcome.word(),
            width = width
        ));
    }
    s
}

/// What comparing results with the expectation found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Expected PASS, got something else: (name, what it got).
    pub regressions: Vec<(String, String)>,
    /// Passed, but not expected to.
    pub improvements: Vec<String>,
    /// In the results but not in the file, or the other way round.
    pub unlisted: Vec<String>,
    pub missing: Vec<String>,
}

impl Comparison {
    pub fn ok(&self) -> bool {
        self.regressions.is_empty() && self.missing.is_empty()
    }
}

pub fn compare(expected: &Expected, results: &[TestResult]) -> Comparison {
    let mut c = Comparison::default();
    for r in results {
        match expected.get(&r.name) {
            None => c.unlisted.push(r.name.clone()),
            Some(w) if w == "PASS" && r.outcome.word() != "PASS" => c.regressions.push((
                r.name.clone(),
                format!("{} {}", r.outcome.word(), r.outcome.detail()),
            )),
            Some(w) if w != "PASS" && r.outcome.word() == "PASS" => {
                c.improvements.push(r.name.clone())
            }
            Some(_) => {}
        }
    }
    for name in expected.keys() {
        if !results.iter().any(|r| &r.name == name) {
            c.missing.push(name.clone());
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::Outcome;
    use std::time::Duration;

    fn result(name: &str, outcome: Outcome) -> TestResult {
        TestResult {
            name: name.into(),
            outcome,
            elapsed: Duration::ZERO,
            notes: vec![],
            log: None,
        }
    }

    #[test]
    fn a_lost_pass_is_a_regression_and_a_new_pass_an_improvement() {
        let exp = parse("# c\na PASS\nb FAIL\nc PASS # trailing\n").unwrap();
        let res = [
            result("a", Outcome::Fail("x".into())),
            result("b", Outcome::Pass),
            result("c", Outcome::Pass),
            result("d", Outcome::Timeout),
        ];
        let c = compare(&exp, &res);
        assert_eq!(c.regressions, vec![("a".into(), "FAIL x".into())]);
        assert_eq!(c.improvements, vec!["b"]);
        assert_eq!(c.unlisted, vec!["d"]);
        assert!(!c.ok());
        let c2 = compare(&exp, &res[1..3]);
        assert_eq!(c2.missing, vec!["a"]);
        assert!(!c2.ok(), "a test that did not run at all is not a pass");
    }

    #[test]
    fn render_then_parse_round_trips() {
        let res = [result("z", Outcome::Timeout), result("a", Outcome::Pass)];
        let text = render("header line", &res);
        assert!(text.starts_with("# header line\na PASS\n"), "{text}");
        let exp = parse(&text).unwrap();
        assert_eq!(exp.get("z").map(String::as_str), Some("TIMEOUT"));
    }

    #[test]
    fn bad_lines_are_errors() {
        assert!(parse("a MAYBE\n").is_err());
        assert!(parse("a PASS extra\n").is_err());
        assert!(parse("a PASS\na FAIL\n").is_err());
    }
}
