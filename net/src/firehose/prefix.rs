//! Firehose's S3 prefix expressions: `!{namespace:value}` inside `Prefix` and
//! `ErrorOutputPrefix`, parsed once at create time into a [`Template`], checked against the
//! rules AWS applies ([`check_pair`]), and evaluated per object ([`Template::render`]).
//!
//! Namespaces: `timestamp` (a Java `DateTimeFormatter` pattern, evaluated at the arrival time
//! of the oldest record in the object, UTC), `firehose` (`random-string`, 11 characters, new
//! for each occurrence; `error-output-type`, error prefixes only), `partitionKeyFromQuery` and
//! `partitionKeyFromLambda` (dynamic partitioning). A prefix with no expression at all gets
//! `yyyy/MM/dd/HH/` appended by plain concatenation, as AWS does (`net/FIREHOSE-NOTES.md` §1.5).
//!
//! Pure: text in, a template out; a template, an instant and the values out. Display writes a
//! template back in a canonical form that parses to the same template (the fuzz target and the
//! property test hold it to that).

use std::fmt::{self, Write as _};

/// Longest prefix AWS accepts in a request, and longest after evaluation.
pub const MAX_REQUEST_CHARS: usize = 1024;
pub const MAX_EVALUATED_CHARS: usize = 512;
/// `!{firehose:random-string}` yields this many characters.
pub const RANDOM_STRING_CHARS: usize = 11;

/// Why a prefix is refused. The service answers each with `InvalidArgumentException`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("prefix is {chars} characters long; at most {MAX_REQUEST_CHARS} are allowed")]
    TooLong { chars: usize },
    #[error("'!{{' at character {at} does not start a !{{namespace:value}} expression")]
    Unterminated { at: usize },
    #[error("unknown namespace {namespace:?} at character {at}; expected timestamp, firehose, partitionKeyFromQuery or partitionKeyFromLambda")]
    UnknownNamespace { namespace: String, at: usize },
    #[error("unknown firehose expression {value:?}; expected random-string or error-output-type")]
    UnknownFirehoseValue { value: String },
    #[error("empty {namespace} expression at character {at}")]
    Empty { namespace: &'static str, at: usize },
    #[error("timestamp pattern {pattern:?}: {reason}")]
    Pattern { pattern: String, reason: String },
    #[error("Ths supplied prefix(es) do not satisfy the following constraint: {0}")]
    Constraint(&'static str),
}

/// One piece of a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    Timestamp(DatePattern),
    RandomString,
    ErrorOutputType,
    QueryKey(String),
    LambdaKey(String),
}

/// A parsed prefix.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template {
    parts: Vec<Part>,
}

/// What a template needs beyond the instant.
pub struct Values<'a> {
    /// Milliseconds since the epoch, UTC: arrival of the oldest record in the object.
    pub arrival_ms: i64,
    pub error_output_type: Option<&'a str>,
    pub query_key: &'a dyn Fn(&str) -> Option<String>,
    pub lambda_key: &'a dyn Fn(&str) -> Option<String>,
    /// A fresh random string of [`RANDOM_STRING_CHARS`] characters per call.
    pub random: &'a mut dyn FnMut() -> String,
}

/// Why a template could not be evaluated for an object (its records go to the error prefix).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("partition key {0:?} has no value")]
    MissingKey(String),
    #[error("the prefix evaluates to {chars} characters; at most {MAX_EVALUATED_CHARS} are allowed")]
    TooLong { chars: usize },
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, PrefixError> {
        let chars = text.chars().count();
        if chars > MAX_REQUEST_CHARS {
            return Err(PrefixError::TooLong { chars });
        }
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("!{") {
            literal.push_str(&rest[..start]);
            let at = text.len() - rest.len() + start;
            let body_start = start + 2;
            let Some(len) = rest[body_start..].find('}') else {
                return Err(PrefixError::Unterminated { at: char_index(text, at) });
            };
            let body = &rest[body_start..body_start + len];
            let Some((namespace, value)) = body.split_once(':') else {
                return Err(PrefixError::Unterminated { at: char_index(text, at) });
            };
            let part = match namespace {
                "timestamp" => Part::Timestamp(DatePattern::parse(value)?),
                "firehose" => match value {
                    "random-string" => Part::RandomString,
                    "error-output-type" => Part::ErrorOutputType,
                    _ => return Err(PrefixError::UnknownFirehoseValue { value: value.to_owned() }),
                },
                "partitionKeyFromQuery" | "partitionKeyFromLambda" => {
                    let query = namespace == "partitionKeyFromQuery";
                    if value.is_empty() {
                        let namespace =
                            if query { "partitionKeyFromQuery" } else { "partitionKeyFromLambda" };
                        return Err(PrefixError::Empty { namespace, at: char_index(text, at) });
                    }
                    if query {
                        Part::QueryKey(value.to_owned())
                    } else {
                        Part::LambdaKey(value.to_owned())
                    }
                }
                _ => {
                    return Err(PrefixError::UnknownNamespace {
                        namespace: namespace.to_owned(),
                        at: char_index(text, at),
                    });
                }
            };
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(part);
            rest = &rest[body_start + len + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template { parts })
    }

    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    pub fn has_expressions(&self) -> bool {
        self.parts.iter().any(|part| !matches!(part, Part::Literal(_)))
    }

    fn has(&self, wanted: impl Fn(&Part) -> bool) -> bool {
        self.parts.iter().any(wanted)
    }

    /// Keys this prefix takes from the metadata-extraction query, in order of appearance.
    pub fn query_keys(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            Part::QueryKey(key) => Some(key.as_str()),
            _ => None,
        })
    }

    pub fn uses_lambda_keys(&self) -> bool {
        self.has(|part| matches!(part, Part::LambdaKey(_)))
    }

    /// The prefix for successful objects: with no expression, the default hour folders are
    /// appended to the literal text.
    pub fn for_objects(mut self) -> Template {
        if !self.has_expressions() {
            self.parts.push(Part::Timestamp(DatePattern::default_hours()));
        }
        self
    }

    /// The error prefix to use when none was given (allowed only when `Prefix` has no
    /// expression): `<Prefix><error-output-type>/yyyy/MM/dd/HH/`.
    pub fn default_errors(prefix: &Template) -> Template {
        let mut parts: Vec<Part> = prefix.parts.clone();
        parts.push(Part::ErrorOutputType);
        parts.push(Part::Literal("/".to_owned()));
        parts.push(Part::Timestamp(DatePattern::default_hours()));
        Template { parts }
    }

    pub fn render(&self, values: &mut Values<'_>) -> Result<String, RenderError> {
        let time = Civil::from_ms(values.arrival_ms);
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Timestamp(pattern) => pattern.format(&time, &mut out),
                Part::RandomString => out.push_str(&(values.random)()),
                Part::ErrorOutputType => out.push_str(values.error_output_type.unwrap_or("")),
                Part::QueryKey(key) => out
                    .push_str(&(values.query_key)(key).ok_or_else(|| RenderError::MissingKey(key.clone()))?),
                Part::LambdaKey(key) => out
                    .push_str(&(values.lambda_key)(key).ok_or_else(|| RenderError::MissingKey(key.clone()))?),
            }
        }
        let chars = out.chars().count();
        if chars > MAX_EVALUATED_CHARS {
            return Err(RenderError::TooLong { chars });
        }
        Ok(out)
    }
}

fn char_index(text: &str, byte: usize) -> usize {
    text[..byte].chars().count()
}

impl fmt::Display for Template {
    /// The canonical text: parses back to the same template.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                Part::Literal(text) => f.write_str(text)?,
                Part::Timestamp(pattern) => write!(f, "!{{timestamp:{pattern}}}")?,
                Part::RandomString => f.write_str("!{firehose:random-string}")?,
                Part::ErrorOutputType => f.write_str("!{firehose:error-output-type}")?,
                Part::QueryKey(key) => write!(f, "!{{partitionKeyFromQuery:{key}}}")?,
                Part::LambdaKey(key) => write!(f, "!{{partitionKeyFromLambda:{key}}}")?,
            }
        }
        Ok(())
    }
}

/// The create-time rules for a destination's pair of prefixes (AWS's "semantic rules").
/// Returns the object template (default hour folders applied) and the error template
/// (defaulted when absent).
pub fn check_pair(
    prefix: Option<&str>,
    error_prefix: Option<&str>,
) -> Result<(Template, Template), PrefixError> {
    let prefix = Template::parse(prefix.unwrap_or(""))?;
    let errors = match error_prefix.filter(|text| !text.is_empty()) {
        Some(text) => Some(Template::parse(text)?),
        None => None,
    };
    if prefix.has(|part| matches!(part, Part::ErrorOutputType)) {
        return Err(PrefixError::Constraint(
            "Prefix cannot contain the firehose:error-output-type expression",
        ));
    }
    let errors = match errors {
        None if prefix.has_expressions() => {
            return Err(PrefixError::Constraint(
                "ErrorOutputPrefix cannot be null or empty when Prefix contains expressions",
            ));
        }
        None => Template::default_errors(&prefix),
        Some(errors) => {
            if errors.has(|part| matches!(part, Part::QueryKey(_) | Part::LambdaKey(_))) {
                return Err(PrefixError::Constraint(
                    "ErrorOutputPrefix cannot contain partitionKeyFromQuery or partitionKeyFromLambda expressions",
                ));
            }
            if errors.has_expressions() && !errors.has(|part| matches!(part, Part::ErrorOutputType)) {
                return Err(PrefixError::Constraint(
                    "ErrorOutputPrefix must contain the firehose:error-output-type expression when it contains expressions",
                ));
            }
            errors
        }
    };
    Ok((prefix.for_objects(), errors))
}

/// A Java `DateTimeFormatter` pattern, the subset that makes sense in an object key: years
/// (`y`, `u`), months (`M`, `L`: numbers or English names), days (`d`, `D`), hours (`H`,
/// `k`, `h`, `K`), `a`, minutes, seconds, fractions (`S`), day names (`E`), quoted text
/// and any non-letter as itself. Other letters are refused, as Java refuses reserved ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatePattern {
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Text(String),
    Field(char, usize),
}

impl DatePattern {
    fn default_hours() -> DatePattern {
        DatePattern::parse("yyyy/MM/dd/HH/").expect("a valid pattern")
    }

    pub fn parse(pattern: &str) -> Result<DatePattern, PrefixError> {
        let fail = |reason: String| PrefixError::Pattern { pattern: pattern.to_owned(), reason };
        if pattern.is_empty() {
            return Err(PrefixError::Empty { namespace: "timestamp", at: 0 });
        }
        let mut tokens: Vec<Token> = Vec::new();
        let push_text = |tokens: &mut Vec<Token>, text: &str| match tokens.last_mut() {
            Some(Token::Text(last)) => last.push_str(text),
            _ => tokens.push(Token::Text(text.to_owned())),
        };
        let chars: Vec<char> = pattern.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c == '\'' {
                if chars.get(i + 1) == Some(&'\'') {
                    push_text(&mut tokens, "'");
                    i += 2;
                    continue;
                }
                let mut text = String::new();
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None => return Err(fail("unclosed quote".to_owned())),
                        Some('\'') if chars.get(j + 1) == Some(&'\'') => {
                            text.push('\'');
                            j += 2;
                        }
                        Some('\'') => break,
                        Some(&other) => {
                            text.push(other);
                            j += 1;
                        }
                    }
                }
                push_text(&mut tokens, &text);
                i = j + 1;
            } else if c.is_ascii_alphabetic() {
                let mut count = 1;
                while chars.get(i + count) == Some(&c) {
                    count += 1;
                }
                let max = match c {
                    'y' | 'u' | 'S' => 9,
                    'M' | 'L' | 'E' => 5,
                    'D' => 3,
                    'd' | 'H' | 'k' | 'h' | 'K' | 'm' | 's' => 2,
                    'a' => 1,
                    _ => return Err(fail(format!("pattern letter '{c}' is not supported"))),
                };
                if count > max {
                    return Err(fail(format!("too many pattern letters: {}", c.to_string().repeat(count))));
                }
                tokens.push(Token::Field(c, count));
                i += count;
            } else if matches!(c, '[' | ']' | '{' | '}' | '#') {
                return Err(fail(format!("'{c}' is reserved in patterns")));
            } else {
                push_text(&mut tokens, c.encode_utf8(&mut [0; 4]));
                i += 1;
            }
        }
        Ok(DatePattern { tokens })
    }

    /// The pattern evaluated at an instant (milliseconds since the epoch, UTC).
    pub fn render(&self, instant_ms: i64) -> String {
        let mut out = String::new();
        self.format(&Civil::from_ms(instant_ms), &mut out);
        out
    }

    fn format(&self, time: &Civil, out: &mut String) {
        for token in &self.tokens {
            match *token {
                Token::Text(ref text) => out.push_str(text),
                Token::Field(c, count) => time.field(c, count, out),
            }
        }
    }
}

impl fmt::Display for DatePattern {
    /// Letters as runs; text quoted where it holds letters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for token in &self.tokens {
            match token {
                Token::Field(c, count) => {
                    for _ in 0..*count {
                        f.write_char(*c)?;
                    }
                }
                Token::Text(text) => {
                    // Letters and reserved characters go inside quotes; a quote is doubled,
                    // which reads the same inside quotes and out.
                    let mut quoted = false;
                    for c in text.chars() {
                        if c == '\'' {
                            f.write_str("''")?;
                            continue;
                        }
                        if !quoted && (c.is_alphabetic() || matches!(c, '[' | ']' | '{' | '}' | '#')) {
                            f.write_char('\'')?;
                            quoted = true;
                        }
                        f.write_char(c)?;
                    }
                    if quoted {
                        f.write_char('\'')?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A UTC instant broken into calendar fields.
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    day_of_year: u32,
    weekday: u32, // 0 = Monday
    hour: u32,
    minute: u32,
    second: u32,
    millis: u32,
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

impl Civil {
    fn from_ms(ms: i64) -> Civil {
        let days = ms.div_euclid(86_400_000);
        let in_day = ms.rem_euclid(86_400_000) as u32;
        let (year, month, day) = crate::aws::sigv4::civil_from_days(days);
        let day_of_year = (days - crate::aws::sigv4::days_from_civil(year, 1, 1) + 1) as u32;
        let (month, day) = (month as u32, day as u32);
        Civil {
            year,
            month,
            day,
            day_of_year,
            weekday: (days + 3).rem_euclid(7) as u32, // 1970-01-01 was a Thursday
            hour: in_day / 3_600_000,
            minute: in_day / 60_000 % 60,
            second: in_day / 1000 % 60,
            millis: in_day % 1000,
        }
    }

    fn field(&self, c: char, count: usize, out: &mut String) {
        let number = |out: &mut String, value: i64, width: usize| {
            let _ = write!(out, "{value:0width$}");
        };
        match c {
            'y' | 'u' if count == 2 => number(out, self.year.rem_euclid(100), 2),
            'y' | 'u' => number(out, self.year, count),
            'M' | 'L' => match count {
                1 | 2 => number(out, i64::from(self.month), count),
                3 => out.push_str(&MONTHS[self.month as usize - 1][..3]),
                4 => out.push_str(MONTHS[self.month as usize - 1]),
                _ => out.push_str(&MONTHS[self.month as usize - 1][..1]),
            },
            'd' => number(out, i64::from(self.day), count),
            'D' => number(out, i64::from(self.day_of_year), count),
            'H' => number(out, i64::from(self.hour), count),
            'k' => number(out, i64::from(if self.hour == 0 { 24 } else { self.hour }), count),
            'K' => number(out, i64::from(self.hour % 12), count),
            'h' => {
                number(out, i64::from(if self.hour.is_multiple_of(12) { 12 } else { self.hour % 12 }), count)
            }
            'a' => out.push_str(if self.hour < 12 { "AM" } else { "PM" }),
            'm' => number(out, i64::from(self.minute), count),
            's' => number(out, i64::from(self.second), count),
            'S' => {
                // Fraction of the second, truncated to `count` digits (nanoseconds, ms precision).
                let nanos = format!("{:09}", self.millis * 1_000_000);
                out.push_str(&nanos[..count]);
            }
            'E' => match count {
                1..=3 => out.push_str(&DAYS[self.weekday as usize][..3]),
                4 => out.push_str(DAYS[self.weekday as usize]),
                _ => out.push_str(&DAYS[self.weekday as usize][..1]),
            },
            _ => unreachable!("refused by DatePattern::parse"),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// 2018-08-27T10:30:00.123Z, the instant of AWS's own examples.
    const AUG_27: i64 = 1_535_365_800_123;

    fn render(template: &Template, error_type: Option<&str>) -> Result<String, RenderError> {
        let mut next = 0;
        let mut random = || {
            next += 1;
            format!("{next:011}")
        };
        let query = |key: &str| (key == "customer_id").then(|| "c42".to_owned());
        let lambda = |key: &str| (key == "region").then(|| "eu".to_owned());
        template.render(&mut Values {
            arrival_ms: AUG_27,
            error_output_type: error_type,
            query_key: &query,
            lambda_key: &lambda,
            random: &mut random,
        })
    }

    #[test]
    fn aws_documented_examples() {
        let (objects, errors) =
            check_pair(None, Some("myFirehoseFailures/!{firehose:error-output-type}/")).unwrap();
        assert_eq!(render(&objects, None).unwrap(), "2018/08/27/10/");
        assert_eq!(
            render(&errors, Some("processing-failed")).unwrap(),
            "myFirehoseFailures/processing-failed/"
        );

        let refused = check_pair(Some("!{timestamp:yyyy/MM/dd}"), None).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "Ths supplied prefix(es) do not satisfy the following constraint: ErrorOutputPrefix cannot be null or empty when Prefix contains expressions"
        );

        let (objects, errors) = check_pair(
            Some("myFirehose/DeliveredYear=!{timestamp:yyyy}/anyMonth/rand=!{firehose:random-string}"),
            Some(
                "myFirehoseFailures/!{firehose:error-output-type}/!{timestamp:yyyy}/anyMonth/!{timestamp:dd}",
            ),
        )
        .unwrap();
        assert_eq!(
            render(&objects, None).unwrap(),
            "myFirehose/DeliveredYear=2018/anyMonth/rand=00000000001"
        );
        assert_eq!(
            render(&errors, Some("processing-failed")).unwrap(),
            "myFirehoseFailures/processing-failed/2018/anyMonth/27"
        );
    }

    #[test]
    fn default_folders_are_appended_only_without_expressions() {
        let (objects, errors) = check_pair(Some("legacy"), None).unwrap();
        assert_eq!(
            render(&objects, None).unwrap(),
            "legacy2018/08/27/10/",
            "joined with no slash, as AWS does"
        );
        assert_eq!(
            render(&errors, Some("processing-failed")).unwrap(),
            "legacyprocessing-failed/2018/08/27/10/"
        );
        let (objects, _) =
            check_pair(Some("r=!{firehose:random-string}/"), Some("e/!{firehose:error-output-type}/"))
                .unwrap();
        assert_eq!(render(&objects, None).unwrap(), "r=00000000001/");
        let (objects, _) = check_pair(Some(""), Some("")).unwrap();
        assert_eq!(render(&objects, None).unwrap(), "2018/08/27/10/");
    }

    #[test]
    fn the_semantic_rules_refuse() {
        let constraint = |prefix: &str, errors: &str| match check_pair(Some(prefix), Some(errors)) {
            Err(PrefixError::Constraint(text)) => text,
            other => panic!("{prefix:?} / {errors:?}: {other:?}"),
        };
        assert!(constraint("a/!{firehose:error-output-type}/", "e/!{firehose:error-output-type}")
            .contains("Prefix cannot"));
        assert!(constraint("a/!{timestamp:yyyy}/", "e/!{timestamp:yyyy}/").contains("must contain"));
        assert!(constraint(
            "k=!{partitionKeyFromQuery:k}/",
            "e/!{firehose:error-output-type}/!{partitionKeyFromQuery:k}"
        )
        .contains("cannot contain partitionKey"));
        for bad in [
            "a!{",
            "a!{timestamp}",
            "!{nope:x}",
            "!{firehose:other}",
            "!{partitionKeyFromQuery:}",
            "!{timestamp:}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(Template::parse(&"a".repeat(1025)), Err(PrefixError::TooLong { chars: 1025 }));
        assert!(Template::parse(&"é".repeat(1024)).is_ok(), "the limit counts characters");
        for pattern in ["yyyy'", "qq", "dd dd ddd", "yyyy[MM]"] {
            assert!(
                matches!(
                    DatePattern::parse(pattern),
                    Err(PrefixError::Pattern { .. } | PrefixError::Empty { .. })
                ),
                "{pattern}"
            );
        }
    }

    #[test]
    fn partition_keys_and_evaluated_length() {
        let (objects, _) = check_pair(
            Some("customer_id=!{partitionKeyFromQuery:customer_id}/region=!{partitionKeyFromLambda:region}/"),
            Some("e/!{firehose:error-output-type}/"),
        )
        .unwrap();
        assert_eq!(objects.query_keys().collect::<Vec<_>>(), ["customer_id"]);
        assert!(objects.uses_lambda_keys());
        assert_eq!(render(&objects, None).unwrap(), "customer_id=c42/region=eu/");
        let (missing, _) =
            check_pair(Some("!{partitionKeyFromQuery:other}/"), Some("e/!{firehose:error-output-type}/"))
                .unwrap();
        assert_eq!(render(&missing, None), Err(RenderError::MissingKey("other".into())));
        let long = Template::parse(&format!("{}!{{firehose:random-string}}", "a".repeat(502))).unwrap();
        assert_eq!(render(&long, None), Err(RenderError::TooLong { chars: 513 }));
    }

    #[test]
    fn java_pattern_letters() {
        let text = |pattern: &str| {
            let template = Template::parse(&format!("!{{timestamp:{pattern}}}")).unwrap();
            render(&template, None).unwrap()
        };
        assert_eq!(text("yyyy'-'MM'-'dd"), "2018-08-27");
        assert_eq!(text("'year='yyyy"), "year=2018");
        assert_eq!(text("yy/M/d/H"), "18/8/27/10");
        assert_eq!(text("MMM MMMM MMMMM"), "Aug August A");
        assert_eq!(text("E EEEE D DDD"), "Mon Monday 239 239");
        assert_eq!(text("hh:mm:ss a SSS S"), "10:30:00 AM 123 1");
        assert_eq!(text("'it''s' HH''mm"), "it's 10'30");
        assert_eq!(text("kk KK"), "10 10");
        // Leap years and the epoch's edges.
        let at = |ms: i64, pattern: &str| {
            let template = Template::parse(&format!("!{{timestamp:{pattern}}}")).unwrap();
            let mut random = String::new;
            let none = |_: &str| None;
            template
                .render(&mut Values {
                    arrival_ms: ms,
                    error_output_type: None,
                    query_key: &none,
                    lambda_key: &none,
                    random: &mut random,
                })
                .unwrap()
        };
        assert_eq!(at(0, "yyyy-MM-dd HH:mm:ss E"), "1970-01-01 00:00:00 Thu");
        assert_eq!(at(951_782_400_000, "yyyy-MM-dd D DDD"), "2000-02-29 60 060"); // 2000-02-29
        assert_eq!(at(1_735_689_599_999, "yyyy-MM-dd HH:mm:ss.SSS D"), "2024-12-31 23:59:59.999 366");
        assert_eq!(at(-1, "yyyy-MM-dd HH:mm:ss"), "1969-12-31 23:59:59");
    }

    fn part() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9_=/.-]{1,12}",
            Just("!{firehose:random-string}".to_owned()),
            Just("!{firehose:error-output-type}".to_owned()),
            "[a-z_]{1,8}".prop_map(|key| format!("!{{partitionKeyFromQuery:{key}}}")),
            "[a-z_]{1,8}".prop_map(|key| format!("!{{partitionKeyFromLambda:{key}}}")),
            "(yyyy|yy|MM|MMM|dd|HH|mm|ss|SSS|EEE|D|'[a-z=/]{0,4}'|''|[/_.=-]){1,6}"
                .prop_map(|pattern| format!("!{{timestamp:{pattern}}}")),
        ]
    }

    proptest! {
        /// A parsed template written back parses to the same template, and evaluating either
        /// gives the same key.
        #[test]
        fn display_round_trips(pieces in proptest::collection::vec(part(), 0..8), ms in 0i64..4_102_444_800_000) {
            let text: String = pieces.concat();
            // Adjacent generated runs can merge into one too long ("EEE" + "EEE").
            let Ok(template) = Template::parse(&text) else { return Err(TestCaseError::reject("merged runs")) };
            let again = Template::parse(&template.to_string()).unwrap();
            prop_assert_eq!(&again, &template);
            let eval = |template: &Template| {
                let mut random = || "r".repeat(RANDOM_STRING_CHARS);
                let key = |key: &str| Some(key.to_uppercase());
                template.render(&mut Values { arrival_ms: ms, error_output_type: Some("x"), query_key: &key, lambda_key: &key, random: &mut random })
            };
            prop_assert_eq!(eval(&again), eval(&template));
        }
    }
}
