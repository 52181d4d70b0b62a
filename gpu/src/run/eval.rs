//! Expressions evaluated against a row (or a window's group): SQL's three-valued logic,
//! KDA's string and time functions, exact integer and decimal arithmetic.

use std::cmp::Ordering;
use std::collections::HashMap;

use regex_lite::Regex;

use super::value::{aligned, civil_from_days, days_from_civil, fail, parse_decimal, Value, ValueError};
use crate::sql::plan::{BinaryOp, Expr, Function, Literal, TimeUnit};

const MS_PER_DAY: i64 = 86_400_000;
/// Patterns kept compiled per pump; past this, the cache starts over (patterns built from
/// column values would otherwise grow it without bound).
const PATTERNS_MAX: usize = 256;

/// What an expression reads: the row's columns, its ROWTIME, the output time, and the values
/// a window substitutes for whole sub-expressions (its group keys and aggregates).
pub(crate) trait Env {
    fn column(&self, relation: usize, index: usize) -> Value;
    fn rowtime(&self) -> Value;
    /// CURRENT_ROW_TIMESTAMP: when the row is output.
    fn now_ms(&self) -> i64;
    fn substitute(&self, expr: &Expr) -> Option<Value>;
}

/// Evaluates expressions, keeping LIKE and SIMILAR TO patterns compiled.
#[derive(Default)]
pub(crate) struct Evaluator {
    patterns: HashMap<(bool, String), Regex>,
}

impl Evaluator {
    pub(crate) fn eval(&mut self, expr: &Expr, env: &dyn Env) -> Result<Value, ValueError> {
        if let Some(value) = env.substitute(expr) {
            return Ok(value);
        }
        Ok(match expr {
            Expr::Column { relation, index } => env.column(*relation, *index),
            Expr::Rowtime => env.rowtime(),
            Expr::CurrentRowTimestamp => Value::Timestamp(env.now_ms()),
            Expr::Literal(literal) => literal_value(literal)?,
            Expr::Interval { ms } => Value::Interval(*ms),
            Expr::Negate(inner) => negate(self.eval(inner, env)?)?,
            Expr::Not(inner) => match self.eval(inner, env)? {
                Value::Null => Value::Null,
                Value::Boolean(value) => Value::Boolean(!value),
                other => return fail(format!("NOT of {}", other.type_name())),
            },
            Expr::Binary { op: BinaryOp::And, left, right } => {
                let left = truth(self.eval(left, env)?)?;
                if left == Some(false) {
                    return Ok(Value::Boolean(false));
                }
                match (left, truth(self.eval(right, env)?)?) {
                    (_, Some(false)) => Value::Boolean(false),
                    (Some(true), Some(true)) => Value::Boolean(true),
                    _ => Value::Null,
                }
            }
            Expr::Binary { op: BinaryOp::Or, left, right } => {
                let left = truth(self.eval(left, env)?)?;
                if left == Some(true) {
                    return Ok(Value::Boolean(true));
                }
                match (left, truth(self.eval(right, env)?)?) {
                    (_, Some(true)) => Value::Boolean(true),
                    (Some(false), Some(false)) => Value::Boolean(false),
                    _ => Value::Null,
                }
            }
            Expr::Binary { op, left, right } => {
                let (left, right) = (self.eval(left, env)?, self.eval(right, env)?);
                binary(*op, left, right)?
            }
            Expr::IsNull { expr, negated } => Value::Boolean(self.eval(expr, env)?.is_null() != *negated),
            Expr::Like { expr, pattern, negated, similar } => {
                let (text, pattern) = (self.eval(expr, env)?, self.eval(pattern, env)?);
                match (text, pattern) {
                    (Value::Null, _) | (_, Value::Null) => Value::Null,
                    (Value::String(text), Value::String(pattern)) => {
                        Value::Boolean(self.matches(&text, &pattern, *similar)? != *negated)
                    }
                    (text, _) => return fail(format!("LIKE needs strings, not {}", text.type_name())),
                }
            }
            Expr::Between { expr, low, high, negated } => {
                let value = self.eval(expr, env)?;
                let above = compare(BinaryOp::GtEq, &value, &self.eval(low, env)?)?;
                let below = compare(BinaryOp::LtEq, &value, &self.eval(high, env)?)?;
                match (truth(above)?, truth(below)?) {
                    (Some(false), _) | (_, Some(false)) => Value::Boolean(*negated),
                    (Some(true), Some(true)) => Value::Boolean(!*negated),
                    _ => Value::Null,
                }
            }
            Expr::Case { operand, branches, otherwise } => {
                let operand = operand.as_ref().map(|operand| self.eval(operand, env)).transpose()?;
                for (when, then) in branches {
                    let when = self.eval(when, env)?;
                    let hit = match &operand {
                        Some(operand) => truth(compare(BinaryOp::Eq, operand, &when)?)? == Some(true),
                        None => truth(when)? == Some(true),
                    };
                    if hit {
                        return self.eval(then, env);
                    }
                }
                match otherwise {
                    Some(otherwise) => self.eval(otherwise, env)?,
                    None => Value::Null,
                }
            }
            Expr::Cast { expr, sql_type } => self.eval(expr, env)?.cast(*sql_type)?,
            Expr::Call { function, args } => {
                let args = args.iter().map(|arg| self.eval(arg, env)).collect::<Result<Vec<_>, _>>()?;
                call(*function, args)?
            }
            Expr::FloorTime { expr, unit, ceil } => floor_time(self.eval(expr, env)?, *unit, *ceil)?,
            Expr::Aggregate { .. } => return fail("an aggregate outside its window"),
        })
    }

    fn matches(&mut self, text: &str, pattern: &str, similar: bool) -> Result<bool, ValueError> {
        let key = (similar, pattern.to_string());
        if !self.patterns.contains_key(&key) {
            if self.patterns.len() >= PATTERNS_MAX {
                self.patterns.clear();
            }
            let regex = Regex::new(&regex_of(pattern, similar))
                .map_err(|error| ValueError(format!("pattern '{pattern}': {error}")))?;
            self.patterns.insert(key.clone(), regex);
        }
        Ok(self.patterns[&key].is_match(text))
    }
}

/// A LIKE or SIMILAR TO pattern as an anchored regular expression: `%` any text, `_` any
/// character; SIMILAR TO also has `|`, `*`, `+`, `?`, `{m,n}`, groups and `[…]` classes.
fn regex_of(pattern: &str, similar: bool) -> String {
    let mut out = String::from("^(?s:");
    let mut in_class = false;
    for ch in pattern.chars() {
        match ch {
            '%' if !in_class => out.push_str(".*"),
            '_' if !in_class => out.push('.'),
            '[' if similar && !in_class => {
                in_class = true;
                out.push('[');
            }
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            '|' | '*' | '+' | '?' | '(' | ')' | '{' | '}' | ',' if similar && !in_class => out.push(ch),
            _ if in_class && ch != '\\' && ch != '[' => out.push(ch),
            _ => {
                let mut buffer = [0u8; 4];
                out.push_str(&regex_lite::escape(ch.encode_utf8(&mut buffer)));
            }
        }
    }
    out.push_str(")$");
    out
}

fn literal_value(literal: &Literal) -> Result<Value, ValueError> {
    Ok(match literal {
        Literal::Null => Value::Null,
        Literal::Boolean(value) => Value::Boolean(*value),
        Literal::String(text) => Value::String(text.clone()),
        Literal::Number(text) => {
            if let Ok(value) = text.parse::<i64>() {
                Value::Integer(value)
            } else if let Some((unscaled, scale)) = parse_decimal(text) {
                Value::Decimal { unscaled, scale }
            } else {
                Value::Double(text.parse().map_err(|_| ValueError(format!("{text} is not a number")))?)
            }
        }
    })
}

/// A boolean's truth: `None` for NULL (UNKNOWN).
fn truth(value: Value) -> Result<Option<bool>, ValueError> {
    match value {
        Value::Null => Ok(None),
        Value::Boolean(value) => Ok(Some(value)),
        other => fail(format!("{} where a BOOLEAN is needed", other.type_name())),
    }
}

fn negate(value: Value) -> Result<Value, ValueError> {
    Ok(match value {
        Value::Null => Value::Null,
        Value::Integer(value) => {
            Value::Integer(value.checked_neg().ok_or_else(|| ValueError("integer overflow".into()))?)
        }
        Value::Decimal { unscaled, scale } => Value::Decimal { unscaled: -unscaled, scale },
        Value::Double(value) => Value::Double(-value),
        Value::Interval(ms) => Value::Interval(-ms),
        other => return fail(format!("-{}", other.type_name())),
    })
}

fn compare(op: BinaryOp, left: &Value, right: &Value) -> Result<Value, ValueError> {
    if left.is_null() || right.is_null() {
        return Ok(Value::Null);
    }
    let Some(ordering) = left.compare(right) else {
        // NaN against a number: unordered, so only <> holds.
        if left.as_f64().is_some() && right.as_f64().is_some() {
            return Ok(Value::Boolean(op == BinaryOp::NotEq));
        }
        return fail(format!("cannot compare {} with {}", left.type_name(), right.type_name()));
    };
    Ok(Value::Boolean(match op {
        BinaryOp::Eq => ordering == Ordering::Equal,
        BinaryOp::NotEq => ordering != Ordering::Equal,
        BinaryOp::Lt => ordering == Ordering::Less,
        BinaryOp::LtEq => ordering != Ordering::Greater,
        BinaryOp::Gt => ordering == Ordering::Greater,
        BinaryOp::GtEq => ordering != Ordering::Less,
        _ => unreachable!("not a comparison: {op:?}"),
    }))
}

fn overflow() -> ValueError {
    ValueError("numeric overflow".into())
}

fn binary(op: BinaryOp, left: Value, right: Value) -> Result<Value, ValueError> {
    use BinaryOp::*;
    if matches!(op, Eq | NotEq | Lt | LtEq | Gt | GtEq) {
        return compare(op, &left, &right);
    }
    if left.is_null() || right.is_null() {
        return Ok(Value::Null);
    }
    if op == Concat {
        return match (&left, &right) {
            (Value::Binary(a), Value::Binary(b)) => Ok(Value::Binary([a.as_slice(), b.as_slice()].concat())),
            _ => Ok(Value::String(left.text() + &right.text())),
        };
    }
    Ok(match (op, &left, &right) {
        // Time arithmetic.
        (Add, Value::Timestamp(time), Value::Interval(ms))
        | (Add, Value::Interval(ms), Value::Timestamp(time)) => {
            Value::Timestamp(time.checked_add(*ms).ok_or_else(overflow)?)
        }
        (Subtract, Value::Timestamp(time), Value::Interval(ms)) => {
            Value::Timestamp(time.checked_sub(*ms).ok_or_else(overflow)?)
        }
        (Add, Value::Date(days), Value::Interval(ms)) => Value::Timestamp(days * MS_PER_DAY + ms),
        (Subtract, Value::Date(days), Value::Interval(ms)) => Value::Timestamp(days * MS_PER_DAY - ms),
        (Subtract, Value::Timestamp(a), Value::Timestamp(b)) => {
            Value::Interval(a.checked_sub(*b).ok_or_else(overflow)?)
        }
        (Add, Value::Interval(a), Value::Interval(b)) => {
            Value::Interval(a.checked_add(*b).ok_or_else(overflow)?)
        }
        (Subtract, Value::Interval(a), Value::Interval(b)) => {
            Value::Interval(a.checked_sub(*b).ok_or_else(overflow)?)
        }
        (Multiply, Value::Interval(ms), Value::Integer(n))
        | (Multiply, Value::Integer(n), Value::Interval(ms)) => {
            Value::Interval(ms.checked_mul(*n).ok_or_else(overflow)?)
        }
        (Divide, Value::Interval(ms), Value::Integer(n)) if *n != 0 => Value::Interval(ms / n),
        // Exact integers.
        (_, Value::Integer(a), Value::Integer(b)) => {
            let (a, b) = (*a, *b);
            Value::Integer(match op {
                Add => a.checked_add(b).ok_or_else(overflow)?,
                Subtract => a.checked_sub(b).ok_or_else(overflow)?,
                Multiply => a.checked_mul(b).ok_or_else(overflow)?,
                Divide if b == 0 => return fail("division by zero"),
                Divide => a.checked_div(b).ok_or_else(overflow)?,
                Modulo if b == 0 => return fail("division by zero"),
                Modulo => a.checked_rem(b).ok_or_else(overflow)?,
                _ => unreachable!("arithmetic only"),
            })
        }
        // Exact decimals (division leaves exactness: a DOUBLE, as the quotient may not end).
        (
            Add | Subtract | Multiply | Modulo,
            Value::Decimal { .. } | Value::Integer(_),
            Value::Decimal { .. } | Value::Integer(_),
        ) => {
            let (a, b, scale) = aligned(&left, &right).ok_or_else(overflow)?;
            match op {
                Add => Value::Decimal { unscaled: a.checked_add(b).ok_or_else(overflow)?, scale },
                Subtract => Value::Decimal { unscaled: a.checked_sub(b).ok_or_else(overflow)?, scale },
                Modulo if b == 0 => return fail("division by zero"),
                Modulo => Value::Decimal { unscaled: a % b, scale },
                _ => {
                    // Multiply: the unscaled values multiplied, the scales added.
                    let parts = |value: &Value| match value {
                        Value::Decimal { unscaled, scale } => (*unscaled, *scale),
                        Value::Integer(value) => (i128::from(*value), 0),
                        _ => unreachable!("a number"),
                    };
                    let ((a, sa), (b, sb)) = (parts(&left), parts(&right));
                    let scale = sa.checked_add(sb).filter(|scale| *scale <= 38).ok_or_else(overflow)?;
                    Value::Decimal { unscaled: a.checked_mul(b).ok_or_else(overflow)?, scale }
                }
            }
        }
        _ => {
            let (Some(a), Some(b)) = (left.as_f64(), right.as_f64()) else {
                return fail(format!("{} {} {}", left.type_name(), op_name(op), right.type_name()));
            };
            Value::Double(match op {
                Add => a + b,
                Subtract => a - b,
                Multiply => a * b,
                Divide => a / b,
                Modulo => a % b,
                _ => unreachable!("arithmetic only"),
            })
        }
    })
}

fn op_name(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Add => "+",
        BinaryOp::Subtract => "-",
        BinaryOp::Multiply => "*",
        BinaryOp::Divide => "/",
        BinaryOp::Modulo => "%",
        _ => "?",
    }
}

fn call(function: Function, args: Vec<Value>) -> Result<Value, ValueError> {
    if args.iter().any(Value::is_null) {
        return Ok(Value::Null);
    }
    let text = |index: usize| -> Result<&str, ValueError> {
        match &args[index] {
            Value::String(text) => Ok(text),
            other => fail(format!("{function:?} needs a string, not {}", other.type_name())),
        }
    };
    let integer = |index: usize| -> Result<i64, ValueError> {
        match args[index].cast(crate::sql::plan::SqlType::BigInt)? {
            Value::Integer(value) => Ok(value),
            _ => unreachable!("a BIGINT cast gives an integer"),
        }
    };
    Ok(match function {
        Function::Upper => Value::String(text(0)?.to_uppercase()),
        Function::Lower => Value::String(text(0)?.to_lowercase()),
        Function::CharLength => Value::Integer(text(0)?.chars().count() as i64),
        Function::Substring => {
            // KDA: a start below 1 shortens the length by as much; past the end, empty.
            let source: Vec<char> = text(0)?.chars().collect();
            let start = integer(1)?;
            let mut length = match args.get(2) {
                Some(_) => integer(2)?,
                None => i64::MAX,
            };
            if length < 0 {
                return fail("SUBSTRING's length is negative");
            }
            let mut first = start;
            if first < 1 {
                length = length.saturating_sub(1 - first);
                first = 1;
            }
            let from = usize::try_from(first - 1).unwrap_or(usize::MAX).min(source.len());
            let to =
                from.saturating_add(usize::try_from(length.max(0)).unwrap_or(usize::MAX)).min(source.len());
            Value::String(source[from..to].iter().collect())
        }
        Function::Position => {
            let (needle, haystack) = (text(0)?, text(1)?);
            match haystack.find(needle) {
                Some(byte) => Value::Integer(haystack[..byte].chars().count() as i64 + 1),
                None => Value::Integer(0),
            }
        }
        Function::TrimBoth | Function::TrimLeading | Function::TrimTrailing => {
            let mut what = text(1)?.chars();
            let (Some(ch), None) = (what.next(), what.next()) else {
                return fail("TRIM removes exactly one character");
            };
            let source = text(0)?;
            Value::String(
                match function {
                    Function::TrimLeading => source.trim_start_matches(ch),
                    Function::TrimTrailing => source.trim_end_matches(ch),
                    _ => source.trim_matches(ch),
                }
                .to_string(),
            )
        }
        Function::Step => match (&args[0], &args[1]) {
            (Value::Timestamp(time), Value::Interval(width)) if *width > 0 => {
                Value::Timestamp(time.div_euclid(*width) * width)
            }
            (Value::Integer(value), Value::Integer(width)) if *width > 0 => {
                Value::Integer(value.div_euclid(*width) * width)
            }
            (value, width) => {
                return fail(format!(
                    "STEP({} BY {}): a time by a positive interval, or an integer by a positive integer",
                    value.type_name(),
                    width.type_name()
                ))
            }
        },
        Function::TsDiff => {
            let millis = |value: &Value| match value {
                Value::Timestamp(ms) | Value::Integer(ms) => Ok(*ms),
                other => fail(format!("TSDIFF needs timestamps, not {}", other.type_name())),
            };
            Value::Integer(millis(&args[1])?.checked_sub(millis(&args[0])?).ok_or_else(overflow)?)
        }
        Function::Abs => match &args[0] {
            Value::Integer(value) => Value::Integer(value.checked_abs().ok_or_else(overflow)?),
            Value::Decimal { unscaled, scale } => Value::Decimal { unscaled: unscaled.abs(), scale: *scale },
            Value::Double(value) => Value::Double(value.abs()),
            other => return fail(format!("ABS of {}", other.type_name())),
        },
        Function::Floor | Function::Ceil => {
            let ceil = function == Function::Ceil;
            match &args[0] {
                Value::Integer(_) => args[0].clone(),
                Value::Decimal { unscaled, scale } => {
                    let divisor = 10i128.pow(u32::from(*scale));
                    let floor = unscaled.div_euclid(divisor);
                    let value = if ceil && unscaled.rem_euclid(divisor) != 0 { floor + 1 } else { floor };
                    Value::Decimal { unscaled: value, scale: 0 }
                }
                Value::Double(value) => Value::Double(if ceil { value.ceil() } else { value.floor() }),
                other => return fail(format!("FLOOR/CEIL of {}", other.type_name())),
            }
        }
    })
}

/// FLOOR(time TO unit), CEIL(time TO unit): the calendar's units for YEAR and MONTH.
fn floor_time(value: Value, unit: TimeUnit, ceil: bool) -> Result<Value, ValueError> {
    let ms = match value {
        Value::Null => return Ok(Value::Null),
        Value::Timestamp(ms) => ms,
        Value::Date(days) => days * MS_PER_DAY,
        other => return fail(format!("FLOOR/CEIL TO {unit} of {}", other.type_name())),
    };
    let floor = match unit.fixed_ms() {
        Some(unit_ms) => ms.div_euclid(unit_ms as i64) * unit_ms as i64,
        None => {
            let (year, month, _) = civil_from_days(ms.div_euclid(MS_PER_DAY));
            let month = if unit == TimeUnit::Year { 1 } else { month };
            days_from_civil(year, month, 1) * MS_PER_DAY
        }
    };
    if !ceil || floor == ms {
        return Ok(Value::Timestamp(floor));
    }
    Ok(Value::Timestamp(match unit.fixed_ms() {
        Some(unit_ms) => floor + unit_ms as i64,
        None => {
            let (year, month, _) = civil_from_days(floor.div_euclid(MS_PER_DAY));
            let (year, month) = match (unit, month) {
                (TimeUnit::Year, _) => (year + 1, 1),
                (_, 12) => (year + 1, 1),
                (_, month) => (year, month + 1),
            };
            days_from_civil(year, month, 1) * MS_PER_DAY
        }
    }))
}
